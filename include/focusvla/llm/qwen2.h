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

#include "focusvla/core/tap.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/nn/fused_linear.h"
#include "focusvla/nn/linear.h"

namespace focusvla::llm {

// Token embedding table (rows x hidden), registered uninitialised as "weight" like nn::Linear.
// On a CPU the table can instead be read in place from the checkpoint file (use_mapped_table):
// an act reads ~20 of its 151,936 rows, so only those pages become resident, where a copy holds
// the whole table (0.27 GB in bf16, 0.54 GB in fp32) in memory for good. docs/SPEED.md, Memory.
class TokenEmbeddingImpl : public torch::nn::Module {
 public:
  TokenEmbeddingImpl(int64_t rows, int64_t dim, const torch::TensorOptions& options)
      : weight(register_parameter("weight", torch::empty({rows, dim}, options), false)),
        dtype_(options.dtype().toScalarType()) {}
  // ids: integer tensor of any shape with values in [0, rows); throws Error naming a bad id
  // (checking reads the ids back: a host sync on a GPU).
  torch::Tensor forward(const torch::Tensor& ids) const;
  // forward() for int64 ids on the weight's device that the caller has already checked against
  // the table (no read-back, so it can run inside a CUDA graph). Rows of a mapped table are
  // converted to the module's dtype after the lookup (the same values as converting the table:
  // the conversion is per element).
  torch::Tensor lookup(const torch::Tensor& ids) const;

  // Makes `table` (rows x dim, any float dtype, on the CPU: a zero-copy view into `file`) the
  // weight, replacing the module's own storage. Every lookup first checks that the file is
  // unchanged on disk (io::MappedFile::changed_on_disk) and throws Error naming it otherwise.
  void use_mapped_table(const torch::Tensor& table, std::shared_ptr<const io::MappedFile> file);
  // The file the table is read from; null when the table is the module's own.
  const std::shared_ptr<const io::MappedFile>& mapped_file() const { return file_; }

  // Module::to. A mapped table stays mapped for a dtype change on the CPU (the lookups convert
  // the file's values, so bf16 -> fp32 gives the file's fp32 rows, not bf16-rounded ones); moved
  // to another device it becomes the module's own copy.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  torch::Tensor weight;

 private:
  void check_file() const;
  torch::ScalarType dtype_;  // the dtype of the lookups' output
  std::shared_ptr<const io::MappedFile> file_;
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

// Per-forward settings passed down the layers.
struct ForwardContext {
  const Tap* tap = nullptr;  // named intermediates (see Qwen2ModelImpl::set_tap), or none
  int64_t layer = -1;        // the layer being run
};

// q/k/v (and gate/up in the MLP) keep their HF names and shapes as parameters but run as one
// matmul each (nn::FusedLinear, registered as "qkv_proj" / "gate_up_proj" without parameters of
// its own; Module::to() re-fuses). How the linear layers multiply is theirs (nn::Linear's mode:
// nn::set_cpu_bf16_matmul on the model).
class Qwen2AttentionImpl : public torch::nn::Module {
 public:
  Qwen2AttentionImpl(const io::Qwen2Config& config, const torch::TensorOptions& options);
  // x: (B, L, hidden) -> (B, L, hidden).
  torch::Tensor forward(const torch::Tensor& x, const RopeTables& rope, const AttentionMask& mask,
                        const ForwardContext& context = {}) const;

  // Whether q/k/v_proj run as one matmul (see nn::FusedLinearImpl::fused).
  bool fused() const { return qkv_->fused(); }

  nn::Linear q_proj;
  nn::Linear k_proj;
  nn::Linear v_proj;
  nn::Linear o_proj;

 private:
  int64_t num_heads_;
  int64_t num_kv_heads_;
  int64_t head_dim_;
  nn::FusedLinear qkv_;
};
TORCH_MODULE(Qwen2Attention);

class Qwen2MLPImpl : public torch::nn::Module {
 public:
  Qwen2MLPImpl(const io::Qwen2Config& config, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x) const;

  // Whether gate_proj and up_proj run as one matmul (see nn::FusedLinearImpl::fused).
  bool fused() const { return gate_up_->fused(); }

  nn::Linear gate_proj;
  nn::Linear up_proj;
  nn::Linear down_proj;

 private:
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

class Qwen2Model;
class Qwen2ModelImpl : public torch::nn::Module {
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

  // Named intermediates of every forward (core/tap.h), in execution order, with the module paths
  // of HF's Qwen2Model: per layer i "layers.<i>.attn_norm", ".q", ".k" (after RoPE,
  // (B, L, heads, head_dim)), ".v", ".attn_out" (before o_proj), ".attn_residual" (h +
  // attention), ".ffn_norm", ".ffn_out" (down_proj output), then "layers.<i>" (the layer's
  // output), and "norm" (the final norm's). Costs one branch per point when unset; {} removes it.
  void set_tap(Tap tap) { tap_ = std::move(tap); }

  // Builds a model in `options` (dtype, device) sized from `state` (the embedding table's row
  // count is read from `prefix + ".embed_tokens.weight"`) and loads every tensor under `prefix`
  // name for name (io::load_module: missing, unexpected and mis-shaped keys are reported
  // together, by name). Weights are converted to the options' dtype. `after_stage` runs on each
  // decoder layer as soon as it is loaded (io::LoadOptions::after_stage). On a CPU the embedding
  // table is read in place from the file when `state` maps it (TokenEmbedding::use_mapped_table).
  static Qwen2Model load(const io::StateDict& state, const io::Qwen2Config& config,
                         const torch::TensorOptions& options = {}, const std::string& prefix = kCheckpointPrefix,
                         const io::StageHook& after_stage = {});
  // Where a VLA-Adapter checkpoint keeps the decoder.
  static constexpr const char* kCheckpointPrefix = "language_model.model";

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

  io::Qwen2Config config_;
  std::vector<Qwen2DecoderLayer> layer_list_;
  Tap tap_;

  struct RopeCacheEntry {
    torch::Device device;
    torch::ScalarType dtype;
    RopeTables tables;
  };
  mutable std::mutex rope_mutex_;
  mutable std::vector<RopeCacheEntry> rope_cache_;
};
TORCH_MODULE(Qwen2Model);

}  // namespace focusvla::llm
