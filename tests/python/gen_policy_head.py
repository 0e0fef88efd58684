#!/usr/bin/env python3
"""Oracle for the policy heads (SPEC 9, 10): actions, top-K indices and gate values of the
PyTorch transcription in reference_heads.py, for the C++ ActionHead and ProprioProjector.

Usage: python gen_policy_head.py OUT_DIR

For each case below, writes OUT_DIR/<case>/:
  head.pt           the head's state dict as torch.save writes it (keys `model.*`; `module.model.*`
                    for the cases marked module_prefix, as DDP checkpoints have); fp32 weights,
                    bf16 for the full-size case (released heads are bf16)
  case.json         {kind, hidden, heads, blocks, layers, nv, nq, focus (or null), runs: [{tag,
                    batch, proprio}], weights}
  data.safetensors  per run tag r:
                      r.visual (B, L, Nv, D), r.queries (B, L, Nq, D), r.proprio (B, 1, D) if any:
                        fp32 inputs (the bf16 runs round them to bf16 on both sides)
                      r.actions (B, 8, 7)        fp32 head on fp32 inputs
                      r.actions_bf16 (B, 8, 7)   bf16 head (`head.to(torch.bfloat16)`) on bf16 inputs
                      r.kept.{i} (B, H, T, K)    i64 top-K indices of block i (fp32 run; FocusVLA)
                      r.margin.{i} (B, H, T)     gap between the K-th and (K+1)-th visual logit
                      r.gate.{i}, r.gate_bf16.{i}  gate values of block i (FocusVLA, gate != none)
                    and for the runs in case.json's tap_runs (the TAP_CASES, run TAP_RUN), every named
                    intermediate of the C++ head's Tap (names relative to the head), fp32 and bf16:
                      r.tap.<name>, r.tap_bf16.<name> for <name> = stem, blocks.{i} (forward hooks on
                        model.fc1 (then ReLU) and model.mlp_resnet_blocks.{i}), blocks.{i}.visual_logits,
                        blocks.{i}.kept, blocks.{i}.gate (the diagnostics; FocusVLA; tanh(g) of
                        VLA-Adapter / Pro blocks), blocks.{i}.attention / visual_attention (the
                        softmax weights), output (hook on model.fc2)
and OUT_DIR/proprio_<D>/proprio.pt (`module.fc1.*`, `module.fc2.*`) with data.safetensors:
input (3, 8), output (3, D), output_bf16.

Weights are random with scales that keep the attention away from uniform (q / k weights std
sqrt(3/D): visual logits of std ~2) and make the gates vary; the top-K margins (gap between the
K-th and the (K+1)-th visual logit, fp32 run) are checked to be far above fp32 rounding, so the
kept sets are well defined. Everything is seeded.
"""
import copy
import json
import math
import os
import sys
import time

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_heads as R  # noqa: E402

SEED = 5150
NQ = 64
MARGIN = 1e-5  # top-K gaps below this may flip with fp32 rounding

F = lambda attention, top_k, gate, value_source: dict(attention=attention, top_k=top_k, gate=gate,
                                                      value_source=value_source)
RUNS_SMALL = [("b1", 1, True), ("b3", 3, True), ("b3_noproprio", 3, False)]
# Cases whose run TAP_RUN also stores the named intermediates (one per block kind / gate / attention).
TAP_CASES = ("pro", "focus_cascaded_k16_element_emb", "focus_mixed_k12_head_layer", "focus_cascaded_k10_scalar_layer")
TAP_RUN = "b3"

# name, kind, hidden, blocks, extra layers, Nv, focus, module_prefix, runs, weights dtype
CASES = [
    ("base", "base", 64, 3, 0, 24, None, True, RUNS_SMALL, torch.float32),
    ("pro", "pro", 64, 3, 1, 48, None, False, RUNS_SMALL, torch.float32),
    ("focus_cascaded_k16_element_emb", "focus", 64, 3, 0, 48, F("cascaded", 16, "element", "embeddings"), True,
     RUNS_SMALL, torch.float32),
    ("focus_cascaded_k0_head_layer", "focus", 64, 2, 0, 24, F("cascaded", 0, "head", "layer"), False,
     RUNS_SMALL, torch.float32),
    ("focus_cascaded_k10_scalar_layer", "focus", 64, 2, 1, 24, F("cascaded", 10, "scalar", "layer"), False,
     RUNS_SMALL, torch.float32),
    ("focus_cascaded_k20_none_emb", "focus", 64, 3, 0, 48, F("cascaded", 20, "none", "embeddings"), False,
     RUNS_SMALL, torch.float32),
    ("focus_mixed_k16_element_emb", "focus", 64, 3, 0, 48, F("mixed", 16, "element", "embeddings"), False,
     RUNS_SMALL, torch.float32),
    ("focus_mixed_k12_head_layer", "focus", 64, 2, 0, 24, F("mixed", 12, "head", "layer"), True,
     RUNS_SMALL, torch.float32),
    # Equal to a Pro head by construction (FocusBlock choice 2): the C++ test also loads it as Pro.
    ("focus_mixed_k0_scalar_layer", "focus", 64, 2, 0, 24, F("mixed", 0, "scalar", "layer"), False,
     RUNS_SMALL, torch.float32),
    # top_k == Nv keeps every patch.
    ("focus_mixed_k24_none_emb", "focus", 64, 2, 0, 24, F("mixed", 24, "none", "embeddings"), False,
     RUNS_SMALL, torch.float32),
    # The released size: D 896, 8 heads of 112, 24 blocks, 2 cameras (Nv 512), top 256, bf16 weights.
    ("full_focus", "focus", 896, 24, 0, 512, dict(R.FOCUS_DEFAULT), False, [("b1", 1, True)], torch.bfloat16),
]
PROPRIO_SIZES = [64, 896]


def random_state(head, hidden, gen):
    state = {}
    for name, t in head.state_dict().items():
        leaf = name.rsplit(".", 2)
        module, param = (leaf[-2], leaf[-1]) if len(leaf) >= 2 else ("", leaf[-1])
        is_norm = "layer_norm" in name or name.endswith(("ffn.0.weight", "ffn.0.bias"))
        if name.endswith("gating_factor"):
            v = 0.3 + torch.randn(t.shape, generator=gen)      # tanh(g) well away from 0
        elif is_norm and param == "weight":
            v = 1 + 0.1 * torch.randn(t.shape, generator=gen)
        elif is_norm:
            v = 0.1 * torch.randn(t.shape, generator=gen)
        elif param == "bias":
            v = (1.0 if name == "model.fc1.bias" else 0.1) * torch.randn(t.shape, generator=gen)
        elif module in ("q_proj", "k_proj", "k_self", "k_adapter", "k_task"):
            v = math.sqrt(3.0 / hidden) * torch.randn(t.shape, generator=gen)
        elif name.endswith("gate.2.weight") or name.endswith("gate.0.weight"):
            v = math.sqrt(4.0 / t.shape[1]) * torch.randn(t.shape, generator=gen)
        else:
            v = torch.randn(t.shape, generator=gen) / math.sqrt(t.shape[1])
        state[name] = v
    return state


def topk_margins(diag, top_k):
    """Per block, the gap between the K-th and the (K+1)-th visual logit of every row (B, H, T)."""
    out = []
    for logits in diag.get("visual_logits", []):
        if 0 < top_k < logits.shape[-1]:
            values = logits.topk(top_k + 1, dim=-1).values
            out.append(values[..., -2] - values[..., -1])
    return out


def run(head, visual, queries, proprio, dtype):
    """head_forward on a copy of `head` cast to dtype (the fp32 head keeps its weights)."""
    h = copy.deepcopy(head).to(dtype)
    diag = {}
    cast = lambda t: None if t is None else t.to(dtype)
    actions = R.head_forward(h, cast(visual), cast(queries), cast(proprio), diagnostics=diag)
    return actions, diag


def run_with_taps(head, visual, queries, proprio, dtype):
    """The named intermediates the C++ head taps, by name (relative to the head): forward hooks on
    the reference modules of those names (`stem` = ReLU of model.fc1's output, as MLPResNet
    computes it) and the blocks' diagnostics. The reference's math is untouched."""
    h = copy.deepcopy(head).to(dtype)
    taps = {}

    def hook(name, after=lambda t: t):
        return lambda module, inputs, output: taps.__setitem__(name, after(output))

    h.model.fc1.register_forward_hook(hook("stem", torch.relu))
    for i, block in enumerate(h.model.mlp_resnet_blocks):
        block.register_forward_hook(hook(f"blocks.{i}"))
    h.model.fc2.register_forward_hook(hook("output"))
    diag = {}
    cast = lambda t: None if t is None else t.to(dtype)
    actions = R.head_forward(h, cast(visual), cast(queries), cast(proprio), diagnostics=diag)
    for key, name in (("visual_logits", "visual_logits"), ("kept_indices", "kept"), ("gates", "gate"),
                      ("attention", "attention"), ("visual_attention", "visual_attention")):
        for i, t in enumerate(diag.get(key, [])):
            taps[f"blocks.{i}.{name}"] = t
    for i, block in enumerate(h.model.mlp_resnet_blocks):
        if not hasattr(block, "focus"):  # VLA-Adapter / Pro: the scalar visual gate tanh(g)
            taps[f"blocks.{i}.gate"] = torch.tanh(block.gating_factor)
    assert torch.equal(taps["output"], actions)
    return taps


def generate(out_dir, name, kind, hidden, blocks, extra_layers, nv, focus, module_prefix, runs, weights, gen):
    start = time.time()
    print(f"{name}: {kind} D={hidden} blocks={blocks} Nv={nv} focus={focus}", flush=True)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    head = R.build_head(kind, hidden, blocks, focus)
    state = {k: v.to(weights) for k, v in random_state(head, hidden, gen).items()}
    prefix = "module." if module_prefix else ""
    # The full-size file leaves out the unused film_gen (77 M values): the C++ loader skips it
    # whether present (the small cases) or not.
    saved = {k: v for k, v in state.items() if not (hidden >= 896 and ".film_gen." in k)}
    torch.save({prefix + k: v.contiguous() for k, v in saved.items()}, os.path.join(d, "head.pt"))
    head.load_state_dict({k: v.float() for k, v in state.items()})

    layers = blocks + 1 + extra_layers
    data = {}
    top_k = focus["top_k"] if focus else 0
    for tag, batch, with_proprio in runs:
        # Small cases redraw their inputs until every kept set is far from a tie (the C++ test
        # then requires equal sets); the full case keeps its draw and stores the margins, and
        # the test accepts a different set only in a row whose margin is below MARGIN.
        for attempt in range(1 if nv >= 512 else 100):
            visual = torch.randn(batch, layers, nv, hidden, generator=gen)
            queries = torch.randn(batch, layers, NQ, hidden, generator=gen)
            proprio = torch.randn(batch, 1, hidden, generator=gen) if with_proprio else None
            actions, diag = run(head, visual, queries, proprio, torch.float32)
            margins = topk_margins(diag, top_k)
            if all(float(m.min()) > MARGIN for m in margins):
                break
        else:
            if nv < 512:
                raise RuntimeError(f"{name}/{tag}: no draw without a near tie in top-K")
        small = sum(int((m <= MARGIN).sum()) for m in margins)
        data[f"{tag}.visual"], data[f"{tag}.queries"] = visual, queries
        if proprio is not None:
            data[f"{tag}.proprio"] = proprio
        for i, m in enumerate(margins):
            data[f"{tag}.margin.{i}"] = m
        if margins:
            print(f"  {tag}: smallest top-K margin {min(float(m.min()) for m in margins):.2e}, "
                  f"{small} rows below {MARGIN:g} (draw {attempt + 1})", flush=True)
        data[f"{tag}.actions"] = actions
        for i, kept in enumerate(diag.get("kept_indices", [])):
            data[f"{tag}.kept.{i}"] = kept
        for i, g in enumerate(diag.get("gates", [])):
            data[f"{tag}.gate.{i}"] = g.float()
        actions_bf16, diag_bf16 = run(head, visual, queries, proprio, torch.bfloat16)
        data[f"{tag}.actions_bf16"] = actions_bf16.float()
        for i, g in enumerate(diag_bf16.get("gates", [])):
            data[f"{tag}.gate_bf16.{i}"] = g.float()
        if kind == "focus" and focus["top_k"] > 0:
            assert len(diag["kept_indices"]) == blocks
        if name in TAP_CASES and tag == TAP_RUN:
            for dtype, group in ((torch.float32, "tap"), (torch.bfloat16, "tap_bf16")):
                taps = run_with_taps(head, visual, queries, proprio, dtype)
                expected = actions if dtype == torch.float32 else actions_bf16
                assert torch.equal(taps["output"].float(), expected.float()), f"{name}: hooks changed the run"
                for tap_name, t in taps.items():
                    data[f"{tag}.{group}.{tap_name}"] = t if t.dtype == torch.int64 else t.float()
    save_file({k: v.contiguous() for k, v in data.items()}, os.path.join(d, "data.safetensors"))
    case = dict(kind=kind, hidden=hidden, heads=R.NUM_HEADS, blocks=blocks, layers=layers, nv=nv, nq=NQ,
                focus=focus, module_prefix=module_prefix, weights=str(weights).replace("torch.", ""),
                runs=[dict(tag=t, batch=b, proprio=p) for t, b, p in runs],
                tap_runs=[t for t, _, _ in runs if name in TAP_CASES and t == TAP_RUN])
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case, f, indent=2)
    print(f"  done in {time.time() - start:.1f} s", flush=True)


def generate_proprio(out_dir, hidden, gen):
    d = os.path.join(out_dir, f"proprio_{hidden}")
    os.makedirs(d, exist_ok=True)
    proj = R.ProprioProjector(hidden).eval()
    state = {k: torch.randn(v.shape, generator=gen) / (math.sqrt(v.shape[1]) if v.dim() == 2 else 10)
             for k, v in proj.state_dict().items()}
    proj.load_state_dict(state)
    torch.save({"module." + k: v for k, v in state.items()}, os.path.join(d, "proprio.pt"))
    x = torch.rand(3, R.PROPRIO_DIM, generator=gen) * 2 - 1
    with torch.no_grad():
        out = proj(x)
        out_bf16 = proj.to(torch.bfloat16)(x.to(torch.bfloat16)).float()
    save_file({"input": x, "output": out, "output_bf16": out_bf16}, os.path.join(d, "data.safetensors"))
    print(f"proprio_{hidden}", flush=True)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)
    for case in CASES:
        gen = torch.Generator().manual_seed(SEED + sum(map(ord, case[0])))
        generate(out_dir, *case, gen)
    for hidden in PROPRIO_SIZES:
        generate_proprio(out_dir, hidden, torch.Generator().manual_seed(SEED + hidden))


if __name__ == "__main__":
    main()
