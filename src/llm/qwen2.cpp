#include "focusvla/llm/qwen2.h"

#include <algorithm>

#include "focusvla/core/error.h"
#include "focusvla/nn/rms_norm.h"
#include "focusvla/nn/rotary.h"

namespace focusvla::llm {
namespace {

std::string dtype_name(torch::ScalarType dtype) { return c10::toString(dtype); }

// Tap `value` as "layers.<layer>.<name>" ("layers.<layer>" for an empty name).
void emit(const ForwardContext& context, const char* name, const torch::Tensor& value) {
  if (context.tap == nullptr) return;
  const std::string layer = indexed("layers", context.layer);
  (*context.tap)(*name != '\0' ? layer + "." + name : layer, value);
}

// HF apply_rotary_pos_emb on x (B, L, heads, head_dim): x * cos + rotate_half(x) * sin, with
// rotate_half(x) = cat(-x2, x1) over the two halves of head_dim; in one pass that rounds where
// HF's three ops round (nn::rotary: bit for bit).
torch::Tensor apply_rope(const torch::Tensor& x, const RopeTables& rope) {
  return nn::rotary(x, rope.cos, rope.sin, /*position_dim=*/1, nn::RotaryPairs::kHalves);
}

// A table that lookups can convert per element (not the float8 types, which embedding refuses).
bool mappable_dtype(torch::ScalarType t) {
  return t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16 || t == torch::kFloat64;
}

// The fused blocks of a layer are built before its weights are loaded: allocated, not copied.
constexpr auto kUnloaded = nn::FusedLinearImpl::Init::kUninitialised;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Small modules

torch::Tensor TokenEmbeddingImpl::forward(const torch::Tensor& ids) const {
  check(ids.defined(), "embed", "ids are undefined");
  check(!at::isFloatingType(ids.scalar_type()) && !at::isComplexType(ids.scalar_type()) &&
            ids.scalar_type() != torch::kBool,
        "embed", "ids must be an integer tensor, got " + dtype_name(ids.scalar_type()));
  const int64_t rows = weight.size(0);
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>();
    const int64_t hi = ids.max().item<int64_t>();
    check(lo >= 0 && hi < rows, "embed",
          "token id " + std::to_string(lo < 0 ? lo : hi) + " outside the embedding table [0, " + std::to_string(rows) + ")");
  }
  return lookup(ids.to(weight.device(), torch::kLong));
}

torch::Tensor TokenEmbeddingImpl::lookup(const torch::Tensor& ids) const {
  if (file_) check_file();
  const torch::Tensor rows = torch::embedding(weight, ids);
  return rows.scalar_type() == dtype_ ? rows : rows.to(dtype_);
}

void TokenEmbeddingImpl::check_file() const {
  const std::string change = file_->changed_on_disk();
  check(change.empty(), file_->path(),
        "changed on disk since the policy was loaded (" + change +
            "); the token embeddings are read from it: load the policy again (write new checkpoints to a new "
            "file or directory while a policy runs)");
}

void TokenEmbeddingImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  dtype_ = dtype;
  if (file_ && device.is_cpu()) return;
  if (file_) check_file();
  file_.reset();
  Module::to(device, dtype, non_blocking);
}

void TokenEmbeddingImpl::to(torch::Dtype dtype, bool non_blocking) {
  dtype_ = dtype;
  if (!file_) Module::to(dtype, non_blocking);
}

// The table keeps (or, leaving a mapping, takes) the lookups' dtype: one path, the one above.
void TokenEmbeddingImpl::to(torch::Device device, bool non_blocking) { to(device, dtype_, non_blocking); }

void TokenEmbeddingImpl::use_mapped_table(const torch::Tensor& table, std::shared_ptr<const io::MappedFile> file) {
  check(file != nullptr, "embed_tokens", "use_mapped_table needs the mapped file");
  check(table.defined() && table.sizes() == weight.sizes() && table.is_cpu() && weight.is_cpu() &&
            mappable_dtype(table.scalar_type()) && table.is_contiguous(),
        "embed_tokens", "a mapped table must be a contiguous float CPU tensor of shape " +
                            io::shape_string(weight.sizes()) + ", got " +
                            (table.defined() ? io::shape_string(table.sizes()) : std::string("none")));
  torch::NoGradGuard no_grad;
  weight.set_data(table);
  file_ = std::move(file);
}

torch::Tensor Qwen2RMSNormImpl::forward(const torch::Tensor& x) const { return nn::rms_norm(x, weight, eps_); }

Qwen2AttentionImpl::Qwen2AttentionImpl(const io::Qwen2Config& c, const torch::TensorOptions& options)
    : q_proj(register_module("q_proj", nn::Linear(c.hidden_size, c.num_attention_heads * c.head_dim(), true, options))),
      k_proj(register_module("k_proj", nn::Linear(c.hidden_size, c.num_key_value_heads * c.head_dim(), true, options))),
      v_proj(register_module("v_proj", nn::Linear(c.hidden_size, c.num_key_value_heads * c.head_dim(), true, options))),
      o_proj(register_module("o_proj", nn::Linear(c.num_attention_heads * c.head_dim(), c.hidden_size, false, options))),
      num_heads_(c.num_attention_heads),
      num_kv_heads_(c.num_key_value_heads),
      head_dim_(c.head_dim()),
      // Registered after its parts, so that Module::to() moves them before it re-fuses.
      qkv_(register_module("qkv_proj", nn::FusedLinear(std::vector<nn::Linear>{q_proj, k_proj, v_proj}, kUnloaded))) {}

torch::Tensor Qwen2AttentionImpl::forward(const torch::Tensor& x, const RopeTables& rope, const AttentionMask& mask,
                                          const ForwardContext& context) const {
  const int64_t batch = x.size(0);
  const int64_t length = x.size(1);
  const auto qkv = qkv_->forward(x);
  const auto q = apply_rope(qkv[0].view({batch, length, num_heads_, head_dim_}), rope);
  const auto k = apply_rope(qkv[1].view({batch, length, num_kv_heads_, head_dim_}), rope);
  const auto v = qkv[2].view({batch, length, num_kv_heads_, head_dim_});
  emit(context, "q", q);
  emit(context, "k", k);
  emit(context, "v", v);
  // (B, heads, L, head_dim) views; SDPA repeats the kv heads itself (enable_gqa).
  auto o = torch::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               mask.causal_only() ? c10::optional<torch::Tensor>() : mask.mask,
                                               /*dropout_p=*/0.0, /*is_causal=*/mask.causal_only(),
                                               /*scale=*/c10::nullopt, /*enable_gqa=*/num_kv_heads_ != num_heads_);
  o = o.transpose(1, 2).reshape({batch, length, num_heads_ * head_dim_});
  emit(context, "attn_out", o);
  return o_proj->forward(o);
}

Qwen2MLPImpl::Qwen2MLPImpl(const io::Qwen2Config& c, const torch::TensorOptions& options)
    : gate_proj(register_module("gate_proj", nn::Linear(c.hidden_size, c.intermediate_size, false, options))),
      up_proj(register_module("up_proj", nn::Linear(c.hidden_size, c.intermediate_size, false, options))),
      down_proj(register_module("down_proj", nn::Linear(c.intermediate_size, c.hidden_size, false, options))),
      gate_up_(register_module("gate_up_proj", nn::FusedLinear(std::vector<nn::Linear>{gate_proj, up_proj}, kUnloaded))) {}

torch::Tensor Qwen2MLPImpl::forward(const torch::Tensor& x) const {
  const auto gate_up = gate_up_->forward(x);
  torch::Tensor h = torch::silu(gate_up[0]);
  h.mul_(gate_up[1]);
  return down_proj->forward(h);
}

Qwen2DecoderLayerImpl::Qwen2DecoderLayerImpl(const io::Qwen2Config& c, const torch::TensorOptions& options)
    : self_attn(register_module("self_attn", Qwen2Attention(c, options))),
      mlp(register_module("mlp", Qwen2MLP(c, options))),
      input_layernorm(register_module("input_layernorm", Qwen2RMSNorm(c.hidden_size, c.rms_norm_eps, options))),
      post_attention_layernorm(register_module("post_attention_layernorm", Qwen2RMSNorm(c.hidden_size, c.rms_norm_eps, options))) {}

torch::Tensor Qwen2DecoderLayerImpl::forward(const torch::Tensor& h, const RopeTables& rope, const AttentionMask& mask,
                                             torch::Tensor out, const ForwardContext& context) const {
  const auto attn_in = input_layernorm->forward(h);
  emit(context, "attn_norm", attn_in);
  auto x = h + self_attn->forward(attn_in, rope, mask, context);
  emit(context, "attn_residual", x);
  const auto ffn_in = post_attention_layernorm->forward(x);
  emit(context, "ffn_norm", ffn_in);
  const auto y = mlp->forward(ffn_in);
  emit(context, "ffn_out", y);
  if (out.defined()) {
    torch::add_out(out, x, y);
  } else {
    out = x.add_(y);
  }
  emit(context, "", out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The model

Qwen2ModelImpl::Qwen2ModelImpl(const io::Qwen2Config& config, const torch::TensorOptions& options,
                               int64_t embedding_rows)
    : embed_tokens(nullptr), layers(nullptr), norm(nullptr), config_(config) {
  config_.validate("Qwen2Config");
  const int64_t rows = embedding_rows > 0 ? embedding_rows : config_.vocab_size;
  embed_tokens = register_module("embed_tokens", TokenEmbedding(rows, config_.hidden_size, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i) {
    layer_list_.emplace_back(config_, options);
    layers->push_back(layer_list_.back());
  }
  norm = register_module("norm", Qwen2RMSNorm(config_.hidden_size, config_.rms_norm_eps, options));
}

RopeTables Qwen2ModelImpl::rope_tables(int64_t length, const torch::Device& device, torch::ScalarType dtype) const {
  std::lock_guard<std::mutex> lock(rope_mutex_);
  auto it = std::find_if(rope_cache_.begin(), rope_cache_.end(),
                         [&](const RopeCacheEntry& e) { return e.device == device && e.dtype == dtype; });
  if (it == rope_cache_.end() || it->tables.cos.size(0) < length) {
    // Row p depends on p only, so a longer table serves every shorter length. Round up to limit
    // recomputation when lengths grow a little at a time.
    const int64_t cached = it == rope_cache_.end() ? 0 : it->tables.cos.size(0);
    const int64_t rows = std::min(config_.max_position_embeddings, std::max({length, cached, (length + 255) / 256 * 256}));
    // As HF's default RoPE: inv_freq = 1 / theta^(arange(0, d, 2) / d), freqs = p * inv_freq,
    // emb = cat(freqs, freqs), all in fp32 on the CPU, then cos / sin cast to the model dtype.
    torch::NoGradGuard no_grad;
    const int64_t head_dim = config_.head_dim();
    const auto exponent = torch::arange(0, head_dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(head_dim);
    const auto inv_freq = torch::reciprocal(torch::pow(config_.rope_theta, exponent));
    const auto positions = torch::arange(rows, torch::kInt64).to(torch::kFloat32);
    const auto freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
    const auto emb = torch::cat({freqs, freqs}, 1);
    RopeTables tables{emb.cos().to(device, dtype).contiguous(), emb.sin().to(device, dtype).contiguous()};
    if (it == rope_cache_.end()) {
      rope_cache_.push_back(RopeCacheEntry{device, dtype, std::move(tables)});
      it = std::prev(rope_cache_.end());
    } else {
      it->tables = std::move(tables);
    }
  }
  return RopeTables{it->tables.cos.narrow(0, 0, length), it->tables.sin.narrow(0, 0, length)};
}

void Qwen2ModelImpl::check_input(const torch::Tensor& x, const std::vector<int64_t>& lengths) const {
  const std::string what = "Qwen2Model: inputs_embeds";
  check(x.defined(), what, "undefined tensor");
  check(x.dim() == 3, what,
        "expected rank 3 (batch, length, hidden), got rank " + std::to_string(x.dim()) + " with shape " +
            io::shape_string(x.sizes()));
  check(x.size(2) == config_.hidden_size, what,
        "expected hidden size " + std::to_string(config_.hidden_size) + ", got " + std::to_string(x.size(2)) +
            " (shape " + io::shape_string(x.sizes()) + ")");
  check(x.size(0) >= 1 && x.size(1) >= 1, what, "empty batch or sequence, shape " + io::shape_string(x.sizes()));
  check(x.size(1) <= config_.max_position_embeddings, what,
        "sequence length " + std::to_string(x.size(1)) + " exceeds max_position_embeddings " +
            std::to_string(config_.max_position_embeddings));
  check(x.scalar_type() == dtype(), what,
        "dtype " + dtype_name(x.scalar_type()) + " differs from the model's " + dtype_name(dtype()));
  check(x.device() == device(), what, "device " + x.device().str() + " differs from the model's " + device().str());
  if (lengths.empty()) return;
  check(static_cast<int64_t>(lengths.size()) == x.size(0), "Qwen2Model: lengths",
        std::to_string(lengths.size()) + " lengths for a batch of " + std::to_string(x.size(0)));
  for (size_t b = 0; b < lengths.size(); ++b)
    check(lengths[b] >= 1 && lengths[b] <= x.size(1), "Qwen2Model: lengths",
          "lengths[" + std::to_string(b) + "] = " + std::to_string(lengths[b]) + " is outside [1, " +
              std::to_string(x.size(1)) + "] (the padded sequence length)");
}

AttentionMask Qwen2ModelImpl::attention_mask(int64_t batch, int64_t length, const std::vector<int64_t>& lengths) const {
  if (std::all_of(lengths.begin(), lengths.end(), [&](int64_t n) { return n == length; })) return {};
  const auto index = torch::arange(length, torch::TensorOptions().dtype(torch::kLong));
  const auto causal = index.unsqueeze(1) >= index.unsqueeze(0);                       // (L_q, L_k)
  const auto valid = index.unsqueeze(0) < torch::tensor(lengths).view({batch, 1});  // (B, L_k)
  // Query rows past a sample's length still see key 0, so no row is fully masked.
  return AttentionMask{(causal.unsqueeze(0) & valid.unsqueeze(1)).unsqueeze(1).to(device())};
}

torch::Tensor Qwen2ModelImpl::forward(const torch::Tensor& inputs_embeds, const std::vector<int64_t>& lengths) const {
  check_input(inputs_embeds, lengths);
  auto out = torch::empty({config_.num_hidden_layers + 1, inputs_embeds.size(0), inputs_embeds.size(1), config_.hidden_size},
                          inputs_embeds.options());
  return forward_into(out, inputs_embeds, lengths);
}

torch::Tensor Qwen2ModelImpl::forward_into(torch::Tensor& out, const torch::Tensor& inputs_embeds,
                                           const std::vector<int64_t>& lengths) const {
  check_input(inputs_embeds, lengths);
  const int64_t n = config_.num_hidden_layers;
  const int64_t batch = inputs_embeds.size(0);
  const int64_t length = inputs_embeds.size(1);
  const std::vector<int64_t> expected{n + 1, batch, length, config_.hidden_size};
  check(out.defined() && out.sizes() == c10::IntArrayRef(expected), "Qwen2Model: out",
        "expected shape " + io::shape_string(expected) + ", got " +
            (out.defined() ? io::shape_string(out.sizes()) : std::string("an undefined tensor")));
  check(out.scalar_type() == dtype() && out.device() == device(), "Qwen2Model: out",
        "expected " + dtype_name(dtype()) + " on " + device().str() + ", got " + dtype_name(out.scalar_type()) + " on " +
            out.device().str());
  check(out.is_contiguous(), "Qwen2Model: out", "must be contiguous");
  return run(out, inputs_embeds, attention_mask(batch, length, lengths));
}

torch::Tensor Qwen2ModelImpl::forward_into(torch::Tensor& out, const torch::Tensor& inputs_embeds,
                                           const AttentionMask& mask) const {
  check_input(inputs_embeds, {});
  const int64_t batch = inputs_embeds.size(0), length = inputs_embeds.size(1);
  check(out.defined() && out.dim() == 4 && out.size(0) == config_.num_hidden_layers + 1 && out.size(1) == batch &&
            out.size(2) == length && out.size(3) == config_.hidden_size && out.is_contiguous() &&
            out.scalar_type() == dtype() && out.device() == device(),
        "Qwen2Model: out", "must be a contiguous (layers + 1, B, L, hidden) tensor in the model's dtype and device");
  check(mask.causal_only() || (mask.mask.dim() == 4 && mask.mask.size(0) == batch && mask.mask.size(2) == length &&
                               mask.mask.size(3) == length && mask.mask.device() == device()),
        "Qwen2Model: mask", "must come from attention_mask() for this batch and length");
  return run(out, inputs_embeds, mask);
}

torch::Tensor Qwen2ModelImpl::run(torch::Tensor& out, const torch::Tensor& inputs_embeds,
                                  const AttentionMask& mask) const {
  const int64_t n = config_.num_hidden_layers;
  const int64_t length = inputs_embeds.size(1);

  torch::NoGradGuard no_grad;
  ForwardContext context;
  context.tap = tap_ ? &tap_ : nullptr;
  const auto rope = rope_tables(length, device(), dtype());
  torch::Tensor h = out.select(0, 0);
  // The caller may have written the embeddings into out[0] already.
  if (!(inputs_embeds.data_ptr() == h.data_ptr() && inputs_embeds.strides() == h.strides())) h.copy_(inputs_embeds);
  for (int64_t l = 0; l < n; ++l) {
    // Every layer but the last writes straight into its slot; the last one's raw output is not
    // kept (h[n] is its normed value).
    context.layer = l;
    h = layer_list_[static_cast<size_t>(l)]->forward(h, rope, mask, l + 1 < n ? out.select(0, l + 1) : torch::Tensor(),
                                                     context);
  }
  out.select(0, n).copy_(norm->forward(h));
  if (tap_) tap_("norm", out.select(0, n));
  return out;
}

Qwen2Model Qwen2ModelImpl::load(const io::StateDict& state, const io::Qwen2Config& config,
                                 const torch::TensorOptions& options, const std::string& prefix,
                                 const io::StageHook& after_stage) {
  int64_t rows = 0;
  const std::string key = prefix + ".embed_tokens.weight";
  if (state.contains(key) && state.at(key).dim() == 2) rows = state.at(key).size(0);
  Qwen2Model model(config, options, rows);
  // Read in place, not copied (see TokenEmbeddingImpl). load_module below then copies the view
  // onto itself, which ATen skips.
  const bool on_cpu = !options.has_device() || options.device().is_cpu();
  if (on_cpu && state.contains(key) && state.is_mapped(key) && mappable_dtype(state.at(key).scalar_type()) &&
      state.at(key).sizes() == model->embed_tokens->weight.sizes())
    model->embed_tokens->use_mapped_table(state.at(key), state.mapping(key));
  io::LoadOptions load_options;
  load_options.after_stage = after_stage;
  io::load_module(*model, state, prefix, load_options);
  model->eval();
  return model;
}

}  // namespace focusvla::llm
