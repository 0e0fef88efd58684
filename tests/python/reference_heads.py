"""PyTorch transcription of the policy heads (SPEC sections 9 and 10), the oracle of the C++
`focusvla::policy::ActionHead` and `ProprioProjector`.

Written from VLA-Adapter's `prismatic/models/action_heads.py` (`L1RegressionActionHead`,
`MLPResNet`, `MLPResNetBlock`, `MLPResNetBlock_Pro`, `RotaryPositionEmbedding`, `apply_rope`) and
`prismatic/models/projectors.py` (`ProprioProjector`), plus the FocusVLA block of SPEC 9.2, for
which no public code exists (the choices made where SPEC 9.2 leaves room are listed at
`FocusBlock`; the C++ makes the same ones).

API (used by the tests and by the end-to-end reference pipeline):

    head = build_head(kind, hidden, blocks, focus=None)   # kind: "base" | "pro" | "focus"
    head.load_state_dict(torch.load("action_head--...pt"))  # keys `model.*` (strip `module.`)
    actions = head_forward(head, visual, queries, proprio)  # (B, chunk, action_dim)

    visual:  (B, L, Nv, D)  visual states of every LLM layer (L >= blocks + 1, block i reads i+1;
                            layer 0 = shallow features, the values when value_source "embeddings")
    queries: (B, L, Nq, D)  action-query states of every layer (Nq = 64 in the released models)
    proprio: (B, 1, D) projected proprio token, or None (then the adapter source is the queries)

    projector = ProprioProjector(hidden); projector(proprio (B, 8)) -> (B, D)

Precision follows the module: `head.to(torch.bfloat16)` gives the reference's bf16 inference,
including its RoPE quirk (the frequency buffer becomes bf16 too, so positions and tables are
computed in bf16, as VLA-Adapter's `action_head.to(torch.bfloat16)` does).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

NUM_HEADS = 8        # MLPResNetBlock(_Pro).num_heads
CHUNK = 8            # NUM_ACTIONS_CHUNK (LIBERO)
ACTION_DIM = 7       # ACTION_DIM (LIBERO)
PROPRIO_DIM = 8      # PROPRIO_DIM (LIBERO)
ROPE_BASE = 10000
FOCUS_DEFAULT = {"attention": "cascaded", "top_k": 256, "gate": "element", "value_source": "embeddings"}


# --------------------------------------------------------------------------------------------
# Helpers

def split_heads(t, heads):
    """(B, L, D) -> (B, heads, L, D / heads)."""
    b, n, d = t.shape
    return t.view(b, n, heads, d // heads).transpose(1, 2)


def merge_heads(t):
    """(B, heads, L, head_dim) -> (B, L, heads * head_dim)."""
    b, h, n, hd = t.shape
    return t.transpose(1, 2).reshape(b, n, h * hd)


def ffn(dim):
    """`ffn` of every block: LayerNorm -> Linear -> ReLU (keys ffn.0.*, ffn.1.*)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())


class Rope(nn.Module):
    """VLA-Adapter's rotary tables. The frequencies are a non-persistent buffer, so they follow
    `module.to(dtype)`: a bf16 head computes positions, angles and tables in bf16 (positions above
    256 are rounded), exactly as the released bf16 heads do."""

    def __init__(self, head_dim):
        super().__init__()
        assert head_dim % 2 == 0, "RoPE needs an even head_dim"
        exponents = torch.arange(0, head_dim, 2).float() / head_dim
        self.register_buffer("inv_freq", 1.0 / (ROPE_BASE ** exponents), persistent=False)

    def forward(self, length, device, dtype):
        positions = torch.arange(length, device=device, dtype=self.inv_freq.dtype)
        angles = torch.outer(positions, self.inv_freq)          # (L, head_dim / 2)
        angles = torch.cat([angles, angles], dim=-1)            # half-split layout [f, f]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x, cos, sin):
    """x (B, H, L, hd). The quirk of SPEC 9.1: the rotation partner of channel 2i is 2i+1
    (interleaved pairs: out[2i] = -x[2i+1], out[2i+1] = x[2i]) while cos/sin are half-split."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


def record_attention(diagnostics, key, weights):
    """diagnostics[key] gets this block's softmax weights (B, H, T, columns): "attention" for one
    softmax over [self | adapter (Q, p) | visual], "visual_attention" for a cascaded FocusVLA
    block's visual branch. Only when diagnostics is a dict; the math is untouched."""
    if diagnostics is not None:
        diagnostics.setdefault(key, []).append(weights)


def adapter_source(queries, proprio):
    """concat(Q, p) along tokens; Q alone when the policy has no proprio."""
    return queries if proprio is None else torch.cat([queries, proprio], dim=1)


# --------------------------------------------------------------------------------------------
# Blocks. Each takes (x, visual, queries, proprio, shallow, diagnostics) with x (B, T, D),
# visual (B, Nv, D) = V_{i+1}, queries (B, Nq, D) = Q_{i+1}, proprio (B, 1, D) or None,
# shallow (B, Nv, D) = V_0 (FocusVLA "embeddings" values only).

class BaseBlock(nn.Module):
    """VLA-Adapter `MLPResNetBlock`: one shared k/v projection for every source, no RoPE, one
    softmax over [self, adapter (Q, p), tanh(g) * visual] / sqrt(head_dim), then
    x = ffn(o_proj(out) + x)."""

    def __init__(self, dim, heads=NUM_HEADS):
        super().__init__()
        self.heads = heads
        self.ffn = ffn(dim)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim)
        self.gating_factor = nn.Parameter(torch.zeros(1))

    def forward(self, x, visual, queries, proprio, shallow=None, diagnostics=None):
        h = self.heads
        cond = adapter_source(queries, proprio)
        q = split_heads(self.q_proj(x), h)
        sources = (x, cond, visual)
        keys = [split_heads(self.k_proj(s), h) for s in sources]
        values = [split_heads(self.v_proj(s), h) for s in sources]
        scores = [q @ keys[0].transpose(-2, -1), q @ keys[1].transpose(-2, -1),
                  (q @ keys[2].transpose(-2, -1)) * torch.tanh(self.gating_factor)]
        weights = torch.softmax(torch.cat(scores, dim=-1) / math.sqrt(q.shape[-1]), dim=-1)
        record_attention(diagnostics, "attention", weights)
        out = merge_heads(weights @ torch.cat(values, dim=2))
        return self.ffn(self.o_proj(out) + x)


class ProBlock(nn.Module):
    """VLA-Adapter `MLPResNetBlock_Pro`: separate k/v projections for self (x), adapter
    (concat(Q, p)) and task (visual); RoPE on q and self-k over T, on adapter-k and task-k over
    their own lengths; one softmax over [self, adapter, tanh(g) * task] / sqrt(head_dim);
    x = ffn(o_proj(out) + x). `film_gen` is in the checkpoints but never used."""

    def __init__(self, dim, heads=NUM_HEADS):
        super().__init__()
        self.heads = heads
        self.ffn = ffn(dim)
        for name in ("q_proj", "k_self", "v_self", "k_adapter", "v_adapter", "k_task", "v_task", "o_proj"):
            setattr(self, name, nn.Linear(dim, dim))
        self.gating_factor = nn.Parameter(torch.zeros(1))
        self.rope = Rope(dim // heads)
        self.film_gen = nn.Sequential(nn.Linear(dim, 2 * dim))

    def roped(self, t, x):
        cos, sin = self.rope(t.shape[2], x.device, x.dtype)
        return apply_rope(t, cos, sin)

    def project(self, x, visual, value_source, cond):
        """q, k and v of the three sources, heads split, RoPE applied."""
        h = self.heads
        q = self.roped(split_heads(self.q_proj(x), h), x)
        k_self = self.roped(split_heads(self.k_self(x), h), x)
        v_self = split_heads(self.v_self(x), h)
        k_adapter = self.roped(split_heads(self.k_adapter(cond), h), x)
        v_adapter = split_heads(self.v_adapter(cond), h)
        k_task = self.roped(split_heads(self.k_task(visual), h), x)
        v_task = split_heads(self.v_task(value_source), h)
        return q, (k_self, v_self), (k_adapter, v_adapter), (k_task, v_task)

    def forward(self, x, visual, queries, proprio, shallow=None, diagnostics=None):
        q, (ks, vs), (ka, va), (kt, vt) = self.project(x, visual, visual, adapter_source(queries, proprio))
        scores = [q @ ks.transpose(-2, -1), q @ ka.transpose(-2, -1),
                  (q @ kt.transpose(-2, -1)) * torch.tanh(self.gating_factor)]
        weights = torch.softmax(torch.cat(scores, dim=-1) / math.sqrt(q.shape[-1]), dim=-1)
        record_attention(diagnostics, "attention", weights)
        out = merge_heads(weights @ torch.cat([vs, va, vt], dim=2))
        return self.ffn(self.o_proj(out) + x)


class FocusBlock(ProBlock):
    """The FocusVLA block (SPEC 9.2): the Pro block's projections and RoPE (so its keys are a
    superset of a Pro block's: o_proj, gating_factor and film_gen are always present) plus
    `gate` and `fusion` as the variant needs them.

    Key layout per variant:
      gate "element": gate.0 Linear(D, D), gate.2 Linear(D, D)  (Sequential(Linear, GELU, Linear))
      gate "head":    gate.0 Linear(D, heads)                   (Sequential(Linear))
      gate "scalar":  the Pro block's gating_factor, no gate.*
      gate "none":    no gate.*
      attention "cascaded": fusion Linear(3D, D); "mixed": no fusion.

    Choices where SPEC 9.2 leaves room (the C++ makes the same ones):
      1. The scalar gate multiplies the raw visual scores before the 1/sqrt(head_dim) scaling
         (the Pro block's order), and top-K selects among these final visual logits, i.e. the
         very values that enter the softmax (with a negative tanh(g) this keeps the patches with
         the largest gated logits).
      2. "mixed" is the Pro block's update: one softmax over [self, adapter, visual], then
         x = ffn(o_proj(out) + x) with no outer residual; the channel gate (element / head)
         multiplies the visual part of `out` (softmax weights of the visual columns times the
         visual values) before it is added to the self + adapter part. So a mixed head with
         top_k 0, gate "scalar" and value_source "layer" is exactly a Pro head.
      3. "cascaded": A_next = A + ffn(fusion(concat[H_A, H_AQ, H_V'])) with H_* in (B, T, D)
         (heads merged); o_proj is not used.
      4. The element gate is applied on the merged heads (B, T, D) and the head gate per head
         (B, heads, T, head_dim) * sigmoid(gate(A))[..., h].
      5. top_k > Nv is an error (no clamping): a model trained with K of 512 patches is not run
         silently with fewer; top_k == Nv keeps every patch.
    """

    def __init__(self, dim, focus, heads=NUM_HEADS):
        super().__init__(dim, heads)
        self.focus = dict(FOCUS_DEFAULT, **(focus or {}))
        gate = self.focus["gate"]
        if gate == "element":
            self.gate = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        elif gate == "head":
            self.gate = nn.Sequential(nn.Linear(dim, heads))
        else:
            assert gate in ("scalar", "none"), gate
        if self.focus["attention"] == "cascaded":
            self.fusion = nn.Linear(3 * dim, dim)
        else:
            assert self.focus["attention"] == "mixed", self.focus["attention"]
        assert self.focus["value_source"] in ("embeddings", "layer"), self.focus["value_source"]

    def forward(self, x, visual, queries, proprio, shallow=None, diagnostics=None):
        f = self.focus
        values = shallow if f["value_source"] == "embeddings" else visual
        q, (ks, vs), (ka, va), (kt, vt) = self.project(x, visual, values, adapter_source(queries, proprio))
        scale = math.sqrt(q.shape[-1])
        s_self = (q @ ks.transpose(-2, -1)) / scale
        s_adapter = (q @ ka.transpose(-2, -1)) / scale
        s_visual = q @ kt.transpose(-2, -1)
        if f["gate"] == "scalar":
            s_visual = s_visual * torch.tanh(self.gating_factor)
        s_visual = s_visual / scale
        if diagnostics is not None:
            diagnostics.setdefault("visual_logits", []).append(s_visual)
        if f["top_k"] > 0:
            assert f["top_k"] <= s_visual.shape[-1], "top_k exceeds the visual tokens"
            kept = s_visual.topk(f["top_k"], dim=-1).indices            # (B, H, T, K)
            s_visual = torch.full_like(s_visual, float("-inf")).scatter(-1, kept, s_visual.gather(-1, kept))
            if diagnostics is not None:
                diagnostics.setdefault("kept_indices", []).append(kept)

        if f["attention"] == "cascaded":
            h_self = torch.softmax(s_self, dim=-1) @ vs
            h_adapter = torch.softmax(s_adapter, dim=-1) @ va
            w_visual = torch.softmax(s_visual, dim=-1)
            record_attention(diagnostics, "visual_attention", w_visual)
            h_visual = w_visual @ vt
        else:
            weights = torch.softmax(torch.cat([s_self, s_adapter, s_visual], dim=-1), dim=-1)
            record_attention(diagnostics, "attention", weights)
            n_sa = s_self.shape[-1] + s_adapter.shape[-1]
            h_self_adapter = weights[..., :n_sa] @ torch.cat([vs, va], dim=2)
            h_visual = weights[..., n_sa:] @ vt

        gate = None
        if f["gate"] == "element":
            gate = torch.sigmoid(self.gate(x))                            # (B, T, D)
            h_visual = merge_heads(h_visual) * gate
        else:
            if f["gate"] == "head":
                gate = torch.sigmoid(self.gate(x))                        # (B, T, heads)
                h_visual = h_visual * gate.transpose(1, 2).unsqueeze(-1)
            elif f["gate"] == "scalar":
                gate = torch.tanh(self.gating_factor)
            h_visual = merge_heads(h_visual)
        if diagnostics is not None and gate is not None:
            diagnostics.setdefault("gates", []).append(gate)

        if f["attention"] == "cascaded":
            fused = self.fusion(torch.cat([merge_heads(h_self), merge_heads(h_adapter), h_visual], dim=-1))
            return x + self.ffn(fused)
        out = merge_heads(h_self_adapter) + h_visual
        return self.ffn(self.o_proj(out) + x)


# --------------------------------------------------------------------------------------------
# The frame: L1RegressionActionHead -> MLPResNet

class MLPResNet(nn.Module):
    """x0 = zeros (B, chunk, action_dim * D) -> LayerNorm -> fc1 -> ReLU -> blocks ->
    LayerNorm -> fc2 (D -> action_dim). Block i reads layer i + 1."""

    def __init__(self, kind, hidden, blocks, focus=None, heads=NUM_HEADS, action_dim=ACTION_DIM):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(action_dim * hidden)
        self.fc1 = nn.Linear(action_dim * hidden, hidden)
        if kind == "base":
            make = lambda: BaseBlock(hidden, heads)
        elif kind == "pro":
            make = lambda: ProBlock(hidden, heads)
        elif kind == "focus":
            make = lambda: FocusBlock(hidden, focus, heads)
        else:
            raise ValueError(f"unknown head kind {kind!r}")
        self.mlp_resnet_blocks = nn.ModuleList([make() for _ in range(blocks)])
        self.layer_norm2 = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, action_dim)

    def forward(self, visual, queries, proprio, chunk=CHUNK, diagnostics=None):
        batch = visual.shape[0]
        x = torch.zeros(batch, chunk, self.fc1.in_features, dtype=self.fc1.weight.dtype, device=visual.device)
        x = F.relu(self.fc1(self.layer_norm1(x)))
        shallow = visual[:, 0]
        for i, block in enumerate(self.mlp_resnet_blocks):
            x = block(x, visual[:, i + 1], queries[:, i + 1], proprio, shallow, diagnostics)
        return self.fc2(self.layer_norm2(x))


class ActionHead(nn.Module):
    """`L1RegressionActionHead`: holds the MLPResNet as `model` (state-dict keys `model.*`)."""

    def __init__(self, kind, hidden, blocks, focus=None, heads=NUM_HEADS, action_dim=ACTION_DIM):
        super().__init__()
        self.kind = kind
        self.model = MLPResNet(kind, hidden, blocks, focus, heads, action_dim)


def build_head(kind, hidden=896, blocks=24, focus=None, heads=NUM_HEADS, action_dim=ACTION_DIM):
    """An action head with default-initialised weights (load a state dict into it)."""
    return ActionHead(kind, hidden, blocks, focus, heads, action_dim).eval()


@torch.no_grad()
def head_forward(head, visual, queries, proprio=None, chunk=CHUNK, diagnostics=None):
    """The same inputs as the C++ ActionHead::forward; inputs are cast to the head's dtype.
    `diagnostics`, when a dict, receives per-block lists: FocusVLA blocks "visual_logits"
    (B, H, T, Nv) before top-K, "kept_indices" (B, H, T, K) and "gates" (element (B, T, D), head
    (B, T, heads), scalar tanh(g) (1,)); every block its softmax weights, "attention" (one softmax
    over all sources: VLA-Adapter, Pro, FocusVLA mixed) or "visual_attention" (FocusVLA cascaded)."""
    weight = head.model.fc1.weight
    cast = lambda t: None if t is None else t.to(device=weight.device, dtype=weight.dtype)
    return head.model(cast(visual), cast(queries), cast(proprio), chunk, diagnostics)


def strip_module_prefix(state):
    """Keys as torch.save wrote them under DDP (`module.`) -> plain."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


class ProprioProjector(nn.Module):
    """VLA-Adapter `ProprioProjector`: fc1 (proprio_dim -> D), exact GELU, fc2 (D -> D)."""

    def __init__(self, hidden, proprio_dim=PROPRIO_DIM):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, proprio):
        return self.fc2(F.gelu(self.fc1(proprio)))
