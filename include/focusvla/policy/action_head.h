#pragma once
// The policy heads (SPEC section 9): VLA-Adapter's `L1RegressionActionHead` frame (`MLPResNet`)
// with one of three block kinds, detected from the state dict. They are one PolicyHead family
// (head.h), "mlp-resnet": MlpResNetHead below, made by load_head.
//
//   base   VLA-Adapter `MLPResNetBlock`: one shared k/v projection, no RoPE   (keys k_proj, v_proj)
//   pro    VLA-Adapter `MLPResNetBlock_Pro`: separate projections, RoPE       (keys k_self, k_adapter, k_task, ...)
//   focus  the FocusVLA block of SPEC 9.2: Pro projections + patch-level (top-K) and channel-level
//          (gate) focus, cascaded or mixed attention; switched by config.json's `focus` section
//
// The frame, for a batch of B samples (T = chunk = 8, A = action_dim = 7):
//   x0 = zeros (B, T, A * D) -> layer_norm1 -> fc1 -> ReLU -> mlp_resnet_blocks.{i} (block i reads
//   layer i + 1 of the conditioning) -> layer_norm2 -> fc2 -> (B, T, A) normalized actions.
//
// Blocks (x (B, T, D); V = visual states of the block's layer, Q = its action-query states,
// p = the projected proprio token; C = concat(Q, p), or Q alone when there is no proprio):
//   base:  scores = [q k(x), q k(C), tanh(g) q k(V)] / sqrt(hd), one softmax, values
//          [v(x), v(C), v(V)] with the shared k_proj / v_proj; x = ffn(o_proj(out) + x).
//   pro:   the same with k_self / k_adapter / k_task (and v_*), RoPE on q and k_self over T, on
//          k_adapter over len(C), on k_task over Nv. RoPE as VLA-Adapter's `apply_rope`: pairs
//          interleaved (out[2i] = -x[2i+1], out[2i+1] = x[2i]) with half-split tables
//          [f, f]; tables computed in the head's dtype from positions in that dtype (the released
//          bf16 heads round positions above 256), as `action_head.to(torch.bfloat16)` makes them.
//   focus: see FocusBlockImpl.
// `ffn` = LayerNorm (eps 1e-5) -> Linear -> ReLU everywhere.
//
// Numerics: every block runs the reference's own ops in its order (matmul, scale, one softmax per
// group, matmul; RoPE tables in the head's dtype), in the head's dtype, so fp32 and bf16 results
// equal the PyTorch reference on the same LibTorch (bitwise on CPU in the tests). SDPA is not used:
// it scales q before the product and fuses the softmax, which is not the reference's rounding.
//
// Parameter names are the checkpoint's, under `model.`: layer_norm1, fc1, layer_norm2, fc2,
// mlp_resnet_blocks.{i}.{q_proj, k_proj, v_proj, o_proj, k_self, v_self, k_adapter, v_adapter,
// k_task, v_task, gating_factor, ffn.0, ffn.1, gate.0, gate.2, fusion}. Keys in the file that a
// head does not run are skipped by name (ActionHeadConfig::unused_prefixes): `film_gen.*` of every
// Pro / FocusVLA block (in the weights, unused by the reference), and in a FocusVLA block the Pro
// parts its variant does not use (o_proj when cascaded, gating_factor unless gate "scalar").
// Anything else unexpected, missing or mis-shaped fails the load, naming every key.

#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "focusvla/core/tap.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/nn/layers.h"
#include "focusvla/policy/head.h"

namespace focusvla::policy {

enum class HeadKind { base, pro, focus };
const char* to_string(HeadKind kind);     // "base", "pro", "focus"
const char* variant_name(HeadKind kind);  // PolicyHead::name(): "vla-adapter", "vla-adapter-pro", "focusvla"

struct ActionHeadConfig {
  int64_t hidden = 896, heads = 8, blocks = 24, chunk = 8, action_dim = 7;
  HeadKind kind = HeadKind::pro;
  io::FocusConfig focus;  // used when kind == focus (its switches were validated by from_json)

  int64_t head_dim() const { return hidden / heads; }
  // Throws Error naming `what` and the field when the numbers do not make a head (sizes, an odd
  // RoPE head dimension, a negative top_k); returns *this.
  const ActionHeadConfig& validate(const std::string& what) const;
  // Keys (relative to `model.`) of a checkpoint that this head does not construct (see above).
  std::vector<std::string> unused_prefixes() const;

  // From the state dict (keys `model.*`, `module.` already stripped): hidden and action_dim from
  // fc1 / fc2, blocks from the `mlp_resnet_blocks.{i}` indices (which must be 0 .. n-1), the kind
  // from block 0 (k_proj: base; k_self: pro, or focus when `focus` is given). heads (8) and chunk
  // (8) are not in the weights and keep their defaults. Throws Error naming the key when the
  // frame is inconsistent, when FocusVLA modules (gate.*, fusion) are present without a focus
  // configuration, or a focus configuration comes with a base (non-Pro) head. The blocks'
  // own keys are checked by the load (ActionHeadImpl::load).
  static ActionHeadConfig from_state(const io::StateDict& head, const std::optional<io::FocusConfig>& focus);
};

// HeadDiagnostics (the FocusVLA blocks' kept indices and gates): head.h.
//
// Named intermediates (focusvla::Tap, set with set_tap), relative to the head:
//   "stem"                      (B, T, D) after layer_norm1 -> fc1 -> ReLU
//   "blocks.{i}.visual_logits"  (B, heads, T, Nv) FocusVLA: the visual logits before top-K (the
//                               ones that enter the softmax: scalar gate and 1/sqrt(hd) applied)
//   "blocks.{i}.kept"           (B, heads, T, K) int64 FocusVLA with top_k > 0: the kept indices
//   "blocks.{i}.gate"           FocusVLA with a gate: as HeadDiagnostics::gates; VLA-Adapter and
//                               Pro: tanh(g) (1,), the scalar visual gate
//   "blocks.{i}.attention"      (B, heads, T, T + len(C) + Nv) the softmax weights of a block with
//                               one softmax over all sources (VLA-Adapter, Pro, FocusVLA "mixed"),
//                               columns [self | adapter: Q then p | visual]
//   "blocks.{i}.visual_attention" (B, heads, T, Nv) FocusVLA "cascaded": the visual branch's own
//                               softmax weights (zero where top-K dropped a patch)
//   "blocks.{i}"                (B, T, D) block i's output (the module mlp_resnet_blocks.{i})
//   "output"                    (B, T, A) the normalized actions

// ---------------------------------------------------------------------------------------------
// Building blocks

// `ffn` = nn.Sequential(LayerNorm, Linear, ReLU): children "0" and "1".
class FfnImpl : public torch::nn::Module {
 public:
  FfnImpl(int64_t dim, const torch::TensorOptions& options)
      : norm(register_module("0", nn::LayerNorm(dim, 1e-5, options))),
        linear(register_module("1", nn::Linear(dim, dim, true, options))) {}
  torch::Tensor forward(const torch::Tensor& x) const { return torch::relu(linear->forward(norm->forward(x))); }

  nn::LayerNorm norm;
  nn::Linear linear;
};
TORCH_MODULE(Ffn);

// FocusVLA `gate`: nn.Sequential(Linear(D, D), GELU, Linear(D, D)) for the element gate
// (children "0", "2"), nn.Sequential(Linear(D, heads)) for the head gate (child "0"). forward
// returns the gate values sigmoid(...).
class GateImpl : public torch::nn::Module {
 public:
  GateImpl(int64_t dim, int64_t heads, bool element, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x) const;

  nn::Linear first;   // "0"
  nn::Linear second;  // "2", element gate only
};
TORCH_MODULE(Gate);

// cos / sin of one sequence length, (L, head_dim) in the head's dtype.
struct RopeTable {
  torch::Tensor cos;
  torch::Tensor sin;
};

// What one forward shares between its blocks.
struct BlockContext {
  RopeTable rope_self;     // over T
  RopeTable rope_adapter;  // over len(C)
  RopeTable rope_task;     // over Nv
  torch::Tensor shallow;   // (B, Nv, D) layer-0 visual states (FocusVLA value_source "embeddings")
  HeadDiagnostics* diagnostics = nullptr;
  Tap tap;                 // the block's named intermediates, names relative to the block (unset: none)
};

// One block of any kind: x (B, T, D), visual (B, Nv, D), queries (B, Nq, D), proprio (B, 1, D) or
// undefined -> (B, T, D).
class HeadBlockImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& visual, const torch::Tensor& queries,
                                const torch::Tensor& proprio, const BlockContext& context) const = 0;
};

// VLA-Adapter `MLPResNetBlock`.
class BaseBlockImpl : public HeadBlockImpl {
 public:
  BaseBlockImpl(const ActionHeadConfig& config, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& visual, const torch::Tensor& queries,
                        const torch::Tensor& proprio, const BlockContext& context) const override;

  Ffn ffn;
  nn::Linear q_proj, k_proj, v_proj, o_proj;
  torch::Tensor gating_factor;  // (1,)

 private:
  int64_t heads_;
};

// VLA-Adapter `MLPResNetBlock_Pro` (film_gen is not constructed: unused by the reference).
class ProBlockImpl : public HeadBlockImpl {
 public:
  ProBlockImpl(const ActionHeadConfig& config, const torch::TensorOptions& options, bool with_o_proj = true,
               bool with_gating_factor = true);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& visual, const torch::Tensor& queries,
                        const torch::Tensor& proprio, const BlockContext& context) const override;

  // q and the k / v of the three sources, (B, heads, L, hd), RoPE applied to q and the keys.
  struct Projected {
    torch::Tensor q, k_self, v_self, k_adapter, v_adapter, k_task, v_task;
  };
  Projected project(const torch::Tensor& x, const torch::Tensor& adapter_source, const torch::Tensor& visual,
                    const torch::Tensor& value_source, const BlockContext& context) const;

  Ffn ffn;
  nn::Linear q_proj, k_self, v_self, k_adapter, v_adapter, k_task, v_task;
  nn::Linear o_proj;            // empty holder in a cascaded FocusVLA block
  torch::Tensor gating_factor;  // (1,); undefined in a FocusVLA block without the scalar gate

 protected:
  int64_t heads_;
};

// The FocusVLA block (SPEC 9.2); its switches are the typed io::FocusConfig (no strings here).
// With q = RoPE(q_proj(A)) over T, per head:
//   H_A  = softmax(q k_self(A)^T / sqrt(hd)) v_self(A)                 (RoPE on k_self over T)
//   H_AQ = softmax(q k_adapter(C)^T / sqrt(hd)) v_adapter(C)           (RoPE over len(C))
//   s_V  = q k_task(V)^T [* tanh(g) for gate "scalar"] / sqrt(hd)       (RoPE over Nv)
//   top_k > 0: per (sample, head, row) keep the top_k largest s_V, the rest -inf
//   H_V  = softmax(s_V) v_task(S),  S = layer-0 visual states ("embeddings") or V ("layer")
//   gate "element": H_V' = H_V (heads merged, (B, T, D)) * sigmoid(gate.2(GELU(gate.0(A))))
//   gate "head":    H_V' = H_V * sigmoid(gate.0(A))[..., h] per head
//   cascaded: A_next = A + ffn(fusion(concat[H_A, H_AQ, H_V']))
//   mixed:    one softmax over [s_self, s_adapter, s_V] (all / sqrt(hd)); H_V' from the visual
//             columns; A_next = ffn(o_proj(H_self+adapter + H_V') + A), the Pro block's update.
// Choices where SPEC 9.2 leaves room (tests/python/reference_heads.py makes the same ones):
//  1. the scalar gate multiplies the raw visual scores before the 1/sqrt(hd) scaling (the Pro
//     order) and top-K selects among these final visual logits, the ones that enter the softmax;
//  2. "mixed" is the Pro update (no outer residual), so mixed + top_k 0 + gate "scalar" +
//     value_source "layer" is exactly a Pro block;
//  3. the element gate acts on the merged heads, the head gate on each head's output;
//  4. top_k > Nv is an error (no clamping); top_k == Nv keeps every patch.
// Keys: the Pro block's, plus gate "element": gate.0 Linear(D, D), gate.2 Linear(D, D);
// "head": gate.0 Linear(D, heads); "scalar": gating_factor (no gate.*); "none": no gate.*;
// cascaded: fusion Linear(3D, D). gating_factor (unless "scalar"), o_proj (when cascaded) and
// film_gen may be in the file and are skipped.
class FocusBlockImpl : public ProBlockImpl {
 public:
  FocusBlockImpl(const ActionHeadConfig& config, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& visual, const torch::Tensor& queries,
                        const torch::Tensor& proprio, const BlockContext& context) const override;

  Gate gate;          // element / head gate only
  nn::Linear fusion;  // cascaded only

 private:
  io::FocusConfig focus_;
};

// ---------------------------------------------------------------------------------------------

class ActionHeadImpl;
class ActionHead;

// The `model.` frame of L1RegressionActionHead -> MLPResNet: layer_norm1, fc1,
// mlp_resnet_blocks.{i}, layer_norm2, fc2; loaded with io::load_module(head, state, "model",
// {config.unused_prefixes()}).
class ActionHeadImpl : public torch::nn::Module {
 public:
  ActionHeadImpl(const ActionHeadConfig& config, const torch::TensorOptions& options);

  // visual:  (B, L, Nv, D)  V_l = h[l][positions 0..Nv-1] for l = 0..L-1 (L >= blocks + 1; block
  //                         i uses layer i + 1; layer 0 = the shallow features S for value_source
  //                         "embeddings")
  // queries: (B, L, Nq, D)  Q_l = h[l][q0-1 .. q0+62] (Nq = 64 in the released models)
  // proprio: (B, 1, D) projected proprio token p, or an undefined tensor when the policy has no
  //          proprio (then the adapter source is Q alone)
  // Inputs may have any floating dtype and device; they are converted to the head's.
  // Returns (B, chunk, action_dim) normalized actions in the head's dtype. Throws Error naming the
  // argument for bad shapes, and for a FocusVLA top_k larger than Nv. `diagnostics`, when given,
  // is cleared and receives the FocusVLA blocks' kept indices and gate values.
  torch::Tensor forward(const torch::Tensor& visual, const torch::Tensor& queries, const torch::Tensor& proprio,
                        HeadDiagnostics* diagnostics = nullptr) const;

  // `head` = the torch.save state dict with `module.` already stripped (keys `model.*`).
  static ActionHead load(const io::StateDict& head, const std::optional<io::FocusConfig>& focus,
                         const torch::TensorOptions& options);

  const ActionHeadConfig& config() const { return config_; }
  io::LoadOptions load_options() const;
  torch::Dtype dtype() const { return fc1->weight.scalar_type(); }
  torch::Device device() const { return fc1->weight.device(); }
  void set_tap(Tap tap) { tap_ = std::move(tap); }

  nn::LayerNorm layer_norm1;
  nn::Linear fc1;
  torch::nn::ModuleList mlp_resnet_blocks;  // children "0", "1", ...
  nn::LayerNorm layer_norm2;
  nn::Linear fc2;

 private:
  void check_inputs(const torch::Tensor& visual, const torch::Tensor& queries, const torch::Tensor& proprio) const;
  // RoPE inv_freq in the head's dtype and device, made on first use (an upload from the host)
  // and reused, so that forward launches device work only (CUDA graphs).
  torch::Tensor rope_inv_freq() const;

  ActionHeadConfig config_;
  mutable std::mutex inv_freq_mutex_;
  mutable torch::Tensor inv_freq_;
  std::vector<std::shared_ptr<HeadBlockImpl>> blocks_;  // the same modules, typed
  Tap tap_;
};
TORCH_MODULE(ActionHead);

// The "mlp-resnet" family as a PolicyHead: an ActionHead of any block kind.
class MlpResNetHead final : public PolicyHead {
 public:
  explicit MlpResNetHead(ActionHead head) : head_(std::move(head)) {}

  torch::Tensor forward(const torch::Tensor& visual_states, const torch::Tensor& query_states,
                        const torch::Tensor& proprio_token, HeadDiagnostics* diagnostics = nullptr) const override {
    return head_->forward(visual_states, query_states, proprio_token, diagnostics);
  }
  int64_t chunk() const override { return head_->config().chunk; }
  int64_t action_dim() const override { return head_->config().action_dim; }
  int64_t hidden() const override { return head_->config().hidden; }
  std::string name() const override { return variant_name(head_->config().kind); }
  torch::nn::Module& module() override { return *head_; }
  void set_tap(Tap tap) override { head_->set_tap(std::move(tap)); }

  const ActionHead& action_head() const { return head_; }

 private:
  ActionHead head_;
};

// The family: detected by any key under model.fc1, model.fc2, model.layer_norm1/2 or
// model.mlp_resnet_blocks; loaded by ActionHeadImpl::load with config.json's `focus` section.
HeadFamily mlp_resnet_family();

// RoPE tables for `length` positions as VLA-Adapter's RotaryPositionEmbedding computes them for a
// module of dtype `dtype` (positions, frequencies and angles in that dtype).
RopeTable rope_table(int64_t length, int64_t head_dim, const torch::TensorOptions& options);
// The same from the reference's inv_freq buffer (rope_inv_freq) already in the module's dtype.
torch::Tensor rope_inv_freq(int64_t head_dim, const torch::TensorOptions& options);
RopeTable rope_table(int64_t length, const torch::Tensor& inv_freq);
// x (B, H, L, hd) with a table of L rows: x * cos + rotate_pairs(x) * sin.
torch::Tensor apply_rope(const torch::Tensor& x, const RopeTable& table);

}  // namespace focusvla::policy
