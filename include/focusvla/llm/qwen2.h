#pragma once
// The Qwen2 / Qwen2.5 decoder as HF transformers' `Qwen2Model` computes it (SPEC section 7), for
// the one use the policies have: a causal forward over given input embeddings that keeps every
// hidden state. No LM head, no KV cache.
//
//   h[0]   = inputs_embeds
//   h[l+1] = layer l (h[l])                       l = 0 .. n-2
//   h[n]   = norm(layer n-1 (h[n-1]))             (the final RMSNorm, as HF's hidden_states[-1])
//
// with, per layer (pre-norm residual):
//   x = h + o_proj(attention(rope(q_proj(rms(h))), rope(k_proj(rms(h))), v_proj(rms(h))))
//   y = x + down_proj(silu(gate_proj(rms(x))) * up_proj(rms(x)))
// Grouped-query attention (num_key_value_heads divides num_attention_heads) through
// torch::scaled_dot_product_attention, causal; RoPE rotate-half over positions 0 .. L-1 with the
// config's theta; RMSNorm in fp32 and cast back before the weight, exactly as HF.
//
// Submodules carry HF's names, so the checkpoint's `language_model.model.*` keys load name for
// name: embed_tokens, layers.{i}.self_attn.{q,k,v,o}_proj, layers.{i}.mlp.{gate,up,down}_proj,
// layers.{i}.input_layernorm, layers.{i}.post_attention_layernorm, norm.
//
// Right-padded batches: pass each sample's length; keys past a sample's length are masked, so
// every real position gets the values of the unpadded single sequence (padded positions get
// finite values of no meaning).

#include <torch/torch.h>

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/nn/fused_linear.h"
#include "focusvla/nn/layers.h"

namespace focusvla::llm {

// Token embedding table (rows x hidden), registered uninitialised as "weight" like nn::Linear.
class TokenEmbeddingImpl : public torch::nn::Module {
 public:
  TokenEmbeddingImpl(int64_t rows, int64_t dim, const torch::TensorOptions& options)
      : weight(register_parameter("weight", torch::empty({rows, dim}, options), false)) {}
  // ids: integer tensor of any shape with values in [0, rows); throws Error naming a bad id
  // (checking reads the ids back: a host sync on a GPU).
  torch::Tensor forward(const torch::Tensor& ids) const;
  // forward() for int64 ids on the weight's device that the caller has already checked against
  // the table (no read-back, so it can run inside a CUDA graph).
  torch::Tensor lookup(const torch::Tensor& ids) const { return torch::embedding(weight, ids); }

  torch::Tensor weight;
};
TORCH_MODULE(TokenEmbedding);

// HF Qwen2RMSNorm: weight * (x.float() * rsqrt(mean(x.float()^2) + eps)).to(x.dtype).
class Qwen2RMSNormImpl : public torch::nn::Module {
 public:
  Qwen2RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& options)
      : weight(register_parameter("weight", torch::empty({dim}, options), false)), eps_(eps) {}
  torch::Tensor forward(const torch::Tensor& x) const;

  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(Qwen2RMSNorm);

// cos / sin tables of rotate-half RoPE for positions 0 .. L-1, (L, head_dim), in the model dtype
// (computed in fp32 and cast, as HF does).
struct RopeTables {
  torch::Tensor cos;
  torch::Tensor sin;
};

// Attention masking for one forward: causal only (`mask` undefined), or causal combined with
// per-sample key padding as a boolean (B, 1, L, L) mask (true = attend).
struct AttentionMask {
  torch::Tensor mask;
  bool causal_only() const { return !mask.defined(); }
};

// Named intermediates of one forward, called as (name, layer, tensor) in execution order:
// "attn_norm", "q", "k" (after RoPE, (B, L, heads, head_dim)), "v", "attn_out" (before o_proj),
// "attn_residual" (h + attention), "ffn_norm", "ffn_out" (down_proj output) and "layer_out".
// For diffing against Python layer by layer; costs one branch per point when unset.
using DebugHook = std::function<void(const std::string& name, int64_t layer, const torch::Tensor& value)>;

// How bf16 linear layers run on the CPU. Without native bf16 dot products (AVX512-BF16, AMX,
// Arm BF16), LibTorch's bf16 matmul is emulated and ~3x slower than fp32; the same products
// (exact bf16 operands, fp32 accumulation, one rounding of the output to bf16) then run faster
// as fp32 matmuls of the upcast operands. Results differ from the native kernel only in
// accumulation order (at most an ulp of bf16 here and there).
// The default is kNative: bit-identical to transformers' bf16 on the same machine. Over 24 layers
// two valid bf16 computations drift apart about as far as bf16 is from fp32 (~3e-2 of the
// largest value on random weights), so kFloat32 is an opt-in.
enum class CpuBf16Matmul {
  kNative,   // LibTorch's bf16 matmul
  kFloat32,  // upcast operands, fp32 matmul, round to bf16
  kAuto,     // kFloat32 on a CPU without native bf16 dot products, else kNative
};
// True when this CPU has native bf16 dot-product instructions (read once from /proc/cpuinfo;
// true when unknown).
bool cpu_has_native_bf16();

// Per-forward settings passed down the layers.
struct ForwardContext {
  const DebugHook* hook = nullptr;  // named intermediates, or none
  int64_t layer = -1;               // the layer index reported to the hook
};

// q/k/v (and gate/up in the MLP) keep their HF names and shapes as parameters but run as one
// matmul each (nn::FusedLinear; Module::to() re-fuses).
class Qwen2AttentionImpl : public nn::FusingModule {
 public:
  Qwen2AttentionImpl(const io::Qwen2Config& config, const torch::TensorOptions& options);
  // x: (B, L, hidden) -> (B, L, hidden).
  torch::Tensor forward(const torch::Tensor& x, const RopeTables& rope, const AttentionMask& mask,
                        const ForwardContext& context = {}) const;

  // Whether q/k/v_proj's weights and biases are row blocks of one tensor (one matmul).
  bool fused() const { return qkv_.fused(); }
  // Keeps (true) or drops fp32 copies of the bf16 matmul weights (CpuBf16Matmul::kFloat32): while
  // kept, bf16 matmuls on the CPU run in fp32. Made once from the current weights; to() drops
  // them (Qwen2Model::to() makes them again when its mode asks for them).
  void keep_fp32_copies(bool on);

  nn::Linear q_proj;
  nn::Linear k_proj;
  nn::Linear v_proj;
  nn::Linear o_proj;

 private:
  void after_to() override;

  int64_t num_heads_;
  int64_t num_kv_heads_;
  int64_t head_dim_;
  nn::FusedLinear qkv_;
};
TORCH_MODULE(Qwen2Attention);

class Qwen2MLPImpl : public nn::FusingModule {
 public:
  Qwen2MLPImpl(const io::Qwen2Config& config, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x) const;

  // Whether gate_proj's and up_proj's weights are row blocks of one tensor (one matmul).
  bool fused() const { return gate_up_.fused(); }
  // As Qwen2Attention::keep_fp32_copies.
  void keep_fp32_copies(bool on);

  nn::Linear gate_proj;
  nn::Linear up_proj;
  nn::Linear down_proj;

 private:
  void after_to() override;

  nn::FusedLinear gate_up_;
};
TORCH_MODULE(Qwen2MLP);

class Qwen2DecoderLayerImpl : public torch::nn::Module {
 public:
  Qwen2DecoderLayerImpl(const io::Qwen2Config& config, const torch::TensorOptions& options);
  // h: (B, L, hidden). Writes the layer output into `out` when defined (same shape, dtype and
  // device as h) and returns it; else returns a new tensor.
  torch::Tensor forward(const torch::Tensor& h, const RopeTables& rope, const AttentionMask& mask,
                        torch::Tensor out = {}, const ForwardContext& context = {}) const;

  Qwen2Attention self_attn;
  Qwen2MLP mlp;
  Qwen2RMSNorm input_layernorm;
  Qwen2RMSNorm post_attention_layernorm;
};
TORCH_MODULE(Qwen2DecoderLayer);

class Qwen2ModelImpl : public nn::FusingModule {
 public:
  // Throws Error on a config the decoder cannot run (heads that do not divide hidden_size,
  // kv heads that do not divide heads, an activation other than SiLU, ...). `embedding_rows`
  // is the row count of the embedding table (the checkpoint's, padded); <= 0 means
  // config.vocab_size.
  Qwen2ModelImpl(const io::Qwen2Config& config, const torch::TensorOptions& options = {},
                 int64_t embedding_rows = 0);

  // All hidden states (SPEC 7): inputs_embeds (B, L, hidden) -> (num_hidden_layers + 1, B, L,
  // hidden), dtype and device of the model. `lengths`: empty (every sample is L long) or one
  // length per sample in [1, L] for a right-padded batch.
  // Throws Error on a wrong rank, hidden size, dtype or device, L = 0, L larger than
  // max_position_embeddings, or bad lengths.
  torch::Tensor forward(const torch::Tensor& inputs_embeds, const std::vector<int64_t>& lengths = {}) const;

  // forward() writing into a caller buffer `out` of exactly that shape, dtype and device
  // (contiguous). Returns `out`.
  torch::Tensor forward_into(torch::Tensor& out, const torch::Tensor& inputs_embeds,
                             const std::vector<int64_t>& lengths = {}) const;

  // forward_into with the mask computed ahead (attention_mask() of this batch's lengths): no
  // host work at all, so a caller can run it inside a CUDA graph capture.
  torch::Tensor forward_into(torch::Tensor& out, const torch::Tensor& inputs_embeds, const AttentionMask& mask) const;
  // The mask forward() uses for a batch of this length with these sample lengths (empty: all L),
  // on the model's device; causal-only (no tensor) when no sample is padded.
  AttentionMask attention_mask(int64_t batch, int64_t length, const std::vector<int64_t>& lengths) const;
  // Token embeddings: ids (any shape, integer) -> (..., hidden). Throws Error on an id outside
  // the table.
  torch::Tensor embed(const torch::Tensor& ids) const { return embed_tokens->forward(ids); }

  // RoPE tables for positions 0 .. length-1 on `device` in `dtype`, cached: computed once for
  // the longest length asked so far per (device, dtype) and sliced.
  RopeTables rope_tables(int64_t length, const torch::Device& device, torch::ScalarType dtype) const;

  // Called with named intermediates during forward (see DebugHook); pass {} to remove.
  void set_debug_hook(DebugHook hook) { debug_hook_ = std::move(hook); }

  // bf16 linear layers on the CPU (see CpuBf16Matmul); default kNative. When the result is fp32
  // matmuls, fp32 copies of the layer weights are made here, once (call it after loading; to()
  // makes them again; nothing weight-sized is allocated per forward), and dropped otherwise.
  void set_cpu_bf16_matmul(CpuBf16Matmul mode);
  CpuBf16Matmul cpu_bf16_matmul() const { return cpu_bf16_matmul_; }
  // Whether forward currently computes bf16 linears as fp32 matmuls (bf16 model on the CPU and
  // kFloat32, or kAuto without native bf16).
  bool bf16_matmul_in_fp32() const;

  const io::Qwen2Config& config() const { return config_; }
  int64_t num_layers() const { return static_cast<int64_t>(layer_list_.size()); }
  const Qwen2DecoderLayer& layer(int64_t i) const { return layer_list_.at(static_cast<size_t>(i)); }
  // dtype and device of the parameters.
  torch::ScalarType dtype() const { return norm->weight.scalar_type(); }
  torch::Device device() const { return norm->weight.device(); }

  TokenEmbedding embed_tokens;
  torch::nn::ModuleList layers;
  Qwen2RMSNorm norm;

 private:
  void check_input(const torch::Tensor& inputs_embeds, const std::vector<int64_t>& lengths) const;
  torch::Tensor run(torch::Tensor& out, const torch::Tensor& inputs_embeds, const AttentionMask& mask) const;
  void after_to() override;  // the fp32 copies again, for the new dtype / device

  io::Qwen2Config config_;
  std::vector<Qwen2DecoderLayer> layer_list_;
  DebugHook debug_hook_;
  CpuBf16Matmul cpu_bf16_matmul_ = CpuBf16Matmul::kNative;

  struct RopeCacheEntry {
    torch::Device device;
    torch::ScalarType dtype;
    RopeTables tables;
  };
  mutable std::mutex rope_mutex_;
  mutable std::vector<RopeCacheEntry> rope_cache_;
};
TORCH_MODULE(Qwen2Model);

// Builds a Qwen2Model in `options` (dtype, device) sized from `state` (the embedding table's row
// count is read from `prefix + ".embed_tokens.weight"`) and loads every tensor under `prefix`
// name for name (io::load_module: missing, unexpected and mis-shaped keys are reported together,
// by name). Weights are converted to the options' dtype.
Qwen2Model load_qwen2(const io::StateDict& state, const io::Qwen2Config& config,
                      const torch::TensorOptions& options = {}, const std::string& prefix = "language_model.model");

}  // namespace focusvla::llm
