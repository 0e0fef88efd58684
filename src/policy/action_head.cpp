#include "focusvla/policy/action_head.h"

#include <cmath>
#include <limits>
#include <set>

#include "focusvla/core/error.h"
#include "focusvla/nn/rotary.h"

namespace focusvla::policy {

using io::FocusAttention;
using io::FocusGate;
using io::FocusValueSource;

namespace {

constexpr double kRopeBase = 10000.0;
const std::string kBlockPrefix = "model.mlp_resnet_blocks.";

std::string shape_of(const torch::Tensor& t) { return io::shape_string(t.sizes()); }
std::string str(int64_t v) { return std::to_string(v); }

// (B, L, D) -> (B, heads, L, D / heads)
torch::Tensor split_heads(const torch::Tensor& t, int64_t heads) {
  return t.view({t.size(0), t.size(1), heads, t.size(2) / heads}).transpose(1, 2);
}

// (B, heads, L, hd) -> (B, L, heads * hd)
torch::Tensor merge_heads(const torch::Tensor& t) {
  return t.transpose(1, 2).reshape({t.size(0), t.size(2), t.size(1) * t.size(3)});
}

// concat(Q, p) along tokens, or Q alone without proprio.
torch::Tensor adapter_source(const torch::Tensor& queries, const torch::Tensor& proprio) {
  return proprio.defined() ? torch::cat({queries, proprio}, 1) : queries;
}

torch::Tensor scores(const torch::Tensor& q, const torch::Tensor& k) { return torch::matmul(q, k.transpose(-2, -1)); }

// The named intermediates of a block with one softmax over all sources (VLA-Adapter, Pro): the
// attention weights (B, heads, T, T + len(C) + Nv) and the scalar gate tanh(g) (1,).
void tap_mixed_attention(const BlockContext& context, const torch::Tensor& weights, const torch::Tensor& gating_factor) {
  if (!context.tap) return;
  context.tap("attention", weights);
  context.tap("gate", torch::tanh(gating_factor));
}

}  // namespace

const char* to_string(HeadKind kind) {
  switch (kind) {
    case HeadKind::base: return "base";
    case HeadKind::pro: return "pro";
    case HeadKind::focus: return "focus";
  }
  return "?";
}

const char* variant_name(HeadKind kind) {
  switch (kind) {
    case HeadKind::base: return "vla-adapter";
    case HeadKind::pro: return "vla-adapter-pro";
    case HeadKind::focus: return "focusvla";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// Configuration

const ActionHeadConfig& ActionHeadConfig::validate(const std::string& what) const {
  auto positive = [&](int64_t v, const char* field) {
    check(v > 0, what, std::string(field) + " must be positive, got " + str(v));
  };
  positive(hidden, "hidden");
  positive(heads, "heads");
  positive(blocks, "blocks");
  positive(chunk, "chunk");
  positive(action_dim, "action_dim");
  check(hidden % heads == 0, what, "hidden " + str(hidden) + " is not divisible by heads " + str(heads));
  if (kind != HeadKind::base)
    check(head_dim() % 2 == 0, what, "RoPE needs an even head dimension, got " + str(head_dim()));
  if (kind == HeadKind::focus)
    check(focus.top_k >= 0, what, "focus.top_k must be 0 (off) or positive, got " + str(focus.top_k));
  return *this;
}

std::vector<std::string> ActionHeadConfig::unused_prefixes() const {
  std::vector<std::string> out;
  if (kind == HeadKind::base) return out;
  for (int64_t i = 0; i < blocks; ++i) {
    const std::string block = "mlp_resnet_blocks." + str(i) + ".";
    out.push_back(block + "film_gen.");
    if (kind != HeadKind::focus) continue;
    if (focus.attention == FocusAttention::cascaded) out.push_back(block + "o_proj.");
    if (focus.gate != FocusGate::scalar) out.push_back(block + "gating_factor");
  }
  return out;
}

ActionHeadConfig ActionHeadConfig::from_state(const io::StateDict& head, const std::optional<io::FocusConfig>& focus) {
  const std::string what = "action head";
  ActionHeadConfig c;
  auto matrix = [&](const std::string& name) -> const torch::Tensor& {
    const auto& t = head.at(name);
    check(t.dim() == 2, what, "'" + name + "': expected a matrix, found shape " + shape_of(t));
    return t;
  };
  const auto& fc1 = matrix("model.fc1.weight");
  const auto& fc2 = matrix("model.fc2.weight");
  c.hidden = fc1.size(0);
  c.action_dim = fc2.size(0);
  check(fc2.size(1) == c.hidden, what,
        "'model.fc2.weight': expected [" + str(c.action_dim) + ", " + str(c.hidden) + "] (hidden " + str(c.hidden) +
            " from model.fc1.weight), found " + shape_of(fc2));
  check(fc1.size(1) == c.action_dim * c.hidden, what,
        "'model.fc1.weight': expected [" + str(c.hidden) + ", " + str(c.action_dim * c.hidden) + "] (action_dim " +
            str(c.action_dim) + " x hidden " + str(c.hidden) + "), found " + shape_of(fc1));

  // Block indices: must be 0 .. n-1.
  std::set<int64_t> indices;
  for (const auto& key : head.keys()) {
    if (key.compare(0, kBlockPrefix.size(), kBlockPrefix) != 0) continue;
    const auto dot = key.find('.', kBlockPrefix.size());
    const std::string index = key.substr(kBlockPrefix.size(), dot == std::string::npos ? dot : dot - kBlockPrefix.size());
    check(!index.empty() && index.size() < 9 && index.find_first_not_of("0123456789") == std::string::npos, what,
          "'" + key + "': block index '" + index + "' is not a number");
    indices.insert(std::stoll(index));
  }
  check(!indices.empty(), what, "no '" + kBlockPrefix + "{i}.*' keys");
  c.blocks = *indices.rbegin() + 1;
  for (int64_t i = 0; i < c.blocks; ++i)
    check(indices.count(i) != 0, what,
          "'" + kBlockPrefix + str(i) + ".*' missing (blocks found up to " + str(c.blocks - 1) + ")");

  const std::string b0 = kBlockPrefix + "0.";
  const bool has_k_proj = head.contains(b0 + "k_proj.weight");
  const bool has_k_self = head.contains(b0 + "k_self.weight");
  check(has_k_proj || has_k_self, what,
        "cannot tell the block kind: '" + b0 + "k_proj.weight' (VLA-Adapter) and '" + b0 +
            "k_self.weight' (Pro / FocusVLA) are both missing");
  check(!(has_k_proj && has_k_self), what,
        "'" + b0 + "k_proj.weight' (VLA-Adapter) and '" + b0 + "k_self.weight' (Pro / FocusVLA) are both present");
  std::string focus_key;
  for (int64_t i = 0; i < c.blocks && focus_key.empty(); ++i)
    for (const char* module : {"gate", "fusion"})
      if (head.has_prefix(kBlockPrefix + str(i) + "." + module)) {
        focus_key = kBlockPrefix + str(i) + "." + module + ".*";
        break;
      }
  if (has_k_proj) {
    check(!focus, what,
          "a FocusVLA configuration was given, but the head has VLA-Adapter's original blocks ('" + b0 +
              "k_proj.weight'); FocusVLA heads carry the Pro projections (k_self, k_adapter, k_task)");
    check(focus_key.empty(), what, "'" + focus_key + "' (a FocusVLA module) in a VLA-Adapter base head");
    c.kind = HeadKind::base;
  } else if (focus) {
    c.kind = HeadKind::focus;
    c.focus = *focus;
  } else {
    check(focus_key.empty(), what,
          "'" + focus_key + "' is a FocusVLA module, but no focus configuration was given (config.json 'focus')");
    c.kind = HeadKind::pro;
  }
  c.validate(what);
  return c;
}

// ---------------------------------------------------------------------------------------------
// RoPE

torch::Tensor rope_inv_freq(int64_t head_dim, const torch::TensorOptions& options) {
  // inv_freq as the reference's buffer: fp32 on the CPU, then cast with the module.
  const auto exponents = torch::arange(0, head_dim, 2, torch::kInt64).to(torch::kFloat32) / head_dim;
  return torch::pow(kRopeBase, exponents).reciprocal().to(options.device(), options.dtype());
}

RopeTable rope_table(int64_t length, int64_t head_dim, const torch::TensorOptions& options) {
  return rope_table(length, rope_inv_freq(head_dim, options));
}

RopeTable rope_table(int64_t length, const torch::Tensor& inv_freq) {
  const auto positions = torch::arange(length, inv_freq.options());
  auto angles = torch::outer(positions, inv_freq);  // (L, hd / 2)
  angles = torch::cat({angles, angles}, -1);         // half-split [f, f]
  return {angles.cos(), angles.sin()};
}

torch::Tensor apply_rope(const torch::Tensor& x, const RopeTable& table) {
  // Interleaved pairs: rotated[2i] = -x[2i+1], rotated[2i+1] = x[2i]; x * cos + rotated * sin in
  // one pass (nn::rotary: bit for bit the three ops). x (B, heads, T, hd), positions on dim 2.
  return nn::rotary(x, table.cos, table.sin, /*position_dim=*/2, nn::RotaryPairs::kInterleaved);
}

// ---------------------------------------------------------------------------------------------
// Blocks

GateImpl::GateImpl(int64_t dim, int64_t heads, bool element, const torch::TensorOptions& options)
    : first(register_module("0", nn::Linear(dim, element ? dim : heads, true, options))),
      second(element ? register_module("2", nn::Linear(dim, dim, true, options)) : nn::Linear(nullptr)) {}

torch::Tensor GateImpl::forward(const torch::Tensor& x) const {
  const auto h = first->forward(x);
  return torch::sigmoid(second ? second->forward(torch::gelu(h)) : h);
}

BaseBlockImpl::BaseBlockImpl(const ActionHeadConfig& config, const torch::TensorOptions& options)
    : ffn(register_module("ffn", Ffn(config.hidden, options))),
      q_proj(register_module("q_proj", nn::Linear(config.hidden, config.hidden, true, options))),
      k_proj(register_module("k_proj", nn::Linear(config.hidden, config.hidden, true, options))),
      v_proj(register_module("v_proj", nn::Linear(config.hidden, config.hidden, true, options))),
      o_proj(register_module("o_proj", nn::Linear(config.hidden, config.hidden, true, options))),
      gating_factor(register_parameter("gating_factor", torch::empty({1}, options), false)),
      heads_(config.heads) {}

torch::Tensor BaseBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& visual, const torch::Tensor& queries,
                                     const torch::Tensor& proprio, const BlockContext& context) const {
  const auto cond = adapter_source(queries, proprio);
  const auto q = split_heads(q_proj->forward(x), heads_);
  const auto split_k = [&](const torch::Tensor& s) { return split_heads(k_proj->forward(s), heads_); };
  const auto split_v = [&](const torch::Tensor& s) { return split_heads(v_proj->forward(s), heads_); };
  const auto s = torch::cat({scores(q, split_k(x)), scores(q, split_k(cond)),
                             scores(q, split_k(visual)) * torch::tanh(gating_factor)},
                            -1) /
                 std::sqrt(static_cast<double>(q.size(-1)));
  const auto weights = torch::softmax(s, -1);
  tap_mixed_attention(context, weights, gating_factor);
  const auto out = torch::matmul(weights, torch::cat({split_v(x), split_v(cond), split_v(visual)}, 2));
  return ffn->forward(o_proj->forward(merge_heads(out)) + x);
}

ProBlockImpl::ProBlockImpl(const ActionHeadConfig& config, const torch::TensorOptions& options, bool with_o_proj,
                           bool with_gating_factor)
    : ffn(register_module("ffn", Ffn(config.hidden, options))),
      q_proj(register_module("q_proj", nn::Linear(config.hidden, config.hidden, true, options))),
      k_self(register_module("k_self", nn::Linear(config.hidden, config.hidden, true, options))),
      v_self(register_module("v_self", nn::Linear(config.hidden, config.hidden, true, options))),
      k_adapter(register_module("k_adapter", nn::Linear(config.hidden, config.hidden, true, options))),
      v_adapter(register_module("v_adapter", nn::Linear(config.hidden, config.hidden, true, options))),
      k_task(register_module("k_task", nn::Linear(config.hidden, config.hidden, true, options))),
      v_task(register_module("v_task", nn::Linear(config.hidden, config.hidden, true, options))),
      o_proj(with_o_proj ? register_module("o_proj", nn::Linear(config.hidden, config.hidden, true, options))
                         : nn::Linear(nullptr)),
      gating_factor(with_gating_factor ? register_parameter("gating_factor", torch::empty({1}, options), false)
                                       : torch::Tensor()),
      heads_(config.heads) {}

ProBlockImpl::Projected ProBlockImpl::project(const torch::Tensor& x, const torch::Tensor& adapter_source,
                                              const torch::Tensor& visual, const torch::Tensor& value_source,
                                              const BlockContext& context) const {
  const auto heads = [&](const nn::Linear& proj, const torch::Tensor& s) {
    return split_heads(proj->forward(s), heads_);
  };
  Projected p;
  p.q = apply_rope(heads(q_proj, x), context.rope_self);
  p.k_self = apply_rope(heads(k_self, x), context.rope_self);
  p.v_self = heads(v_self, x);
  p.k_adapter = apply_rope(heads(k_adapter, adapter_source), context.rope_adapter);
  p.v_adapter = heads(v_adapter, adapter_source);
  p.k_task = apply_rope(heads(k_task, visual), context.rope_task);
  p.v_task = heads(v_task, value_source);
  return p;
}

torch::Tensor ProBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& visual, const torch::Tensor& queries,
                                    const torch::Tensor& proprio, const BlockContext& context) const {
  const auto p = project(x, adapter_source(queries, proprio), visual, visual, context);
  const auto s = torch::cat({scores(p.q, p.k_self), scores(p.q, p.k_adapter),
                             scores(p.q, p.k_task) * torch::tanh(gating_factor)},
                            -1) /
                 std::sqrt(static_cast<double>(p.q.size(-1)));
  const auto weights = torch::softmax(s, -1);
  tap_mixed_attention(context, weights, gating_factor);
  const auto out = torch::matmul(weights, torch::cat({p.v_self, p.v_adapter, p.v_task}, 2));
  return ffn->forward(o_proj->forward(merge_heads(out)) + x);
}

FocusBlockImpl::FocusBlockImpl(const ActionHeadConfig& config, const torch::TensorOptions& options)
    : ProBlockImpl(config, options, config.focus.attention == FocusAttention::mixed,
                   config.focus.gate == FocusGate::scalar),
      gate(config.focus.gate == FocusGate::element || config.focus.gate == FocusGate::head
               ? register_module("gate", Gate(config.hidden, config.heads, config.focus.gate == FocusGate::element,
                                              options))
               : Gate(nullptr)),
      fusion(config.focus.attention == FocusAttention::cascaded
                 ? register_module("fusion", nn::Linear(3 * config.hidden, config.hidden, true, options))
                 : nn::Linear(nullptr)),
      focus_(config.focus) {}

torch::Tensor FocusBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& visual, const torch::Tensor& queries,
                                      const torch::Tensor& proprio, const BlockContext& context) const {
  const auto& f = focus_;
  const auto& values = f.value_source == FocusValueSource::embeddings ? context.shallow : visual;
  const auto p = project(x, adapter_source(queries, proprio), visual, values, context);
  const double scale = std::sqrt(static_cast<double>(p.q.size(-1)));
  const auto s_self = scores(p.q, p.k_self) / scale;
  const auto s_adapter = scores(p.q, p.k_adapter) / scale;
  auto s_visual = scores(p.q, p.k_task);
  if (f.gate == FocusGate::scalar) s_visual = s_visual * torch::tanh(gating_factor);
  s_visual = s_visual / scale;
  if (context.tap) context.tap("visual_logits", s_visual);
  if (f.top_k > 0) {  // patch-level focus: the rest of each row -> -inf
    // The scores depend on the kept set only; its order matters to whoever reads the indices (the
    // reference's are sorted). LibTorch's CPU topk picks the set by nth_element whether or not it
    // sorts it after (k * 64 > n here), so unsorted is the reference's set, bf16 ties included,
    // and ~2.5x faster (tested: ActionHeadFocus.UnsortedTopKKeepsTheReferenceSet).
    const bool sorted = context.diagnostics != nullptr || static_cast<bool>(context.tap) || !s_visual.is_cpu();
    const auto kept = std::get<1>(torch::topk(s_visual, f.top_k, -1, /*largest=*/true, sorted));
    s_visual = torch::full_like(s_visual, -std::numeric_limits<double>::infinity())
                   .scatter(-1, kept, s_visual.gather(-1, kept));
    if (context.diagnostics) context.diagnostics->kept_indices.push_back(kept);
    if (context.tap) context.tap("kept", kept);
  }

  torch::Tensor h_self, h_adapter, h_self_adapter, h_visual;
  if (f.attention == FocusAttention::cascaded) {  // three softmaxes, no competition between the sources
    h_self = torch::matmul(torch::softmax(s_self, -1), p.v_self);
    h_adapter = torch::matmul(torch::softmax(s_adapter, -1), p.v_adapter);
    const auto w_visual = torch::softmax(s_visual, -1);
    if (context.tap) context.tap("visual_attention", w_visual);
    h_visual = torch::matmul(w_visual, p.v_task);
  } else {  // one softmax over all, as the Pro block
    const auto weights = torch::softmax(torch::cat({s_self, s_adapter, s_visual}, -1), -1);
    if (context.tap) context.tap("attention", weights);
    const int64_t n_sa = s_self.size(-1) + s_adapter.size(-1);
    h_self_adapter = torch::matmul(weights.slice(-1, 0, n_sa), torch::cat({p.v_self, p.v_adapter}, 2));
    h_visual = torch::matmul(weights.slice(-1, n_sa), p.v_task);
  }

  // Channel-level focus.
  torch::Tensor gate_values;
  switch (f.gate) {
    case FocusGate::element:
      gate_values = gate->forward(x);  // (B, T, D)
      h_visual = merge_heads(h_visual) * gate_values;
      break;
    case FocusGate::head:
      gate_values = gate->forward(x);  // (B, T, heads)
      h_visual = merge_heads(h_visual * gate_values.transpose(1, 2).unsqueeze(-1));
      break;
    case FocusGate::scalar:
      gate_values = torch::tanh(gating_factor);
      h_visual = merge_heads(h_visual);
      break;
    case FocusGate::none: h_visual = merge_heads(h_visual); break;
  }
  if (gate_values.defined()) {
    if (context.diagnostics) context.diagnostics->gates.push_back(gate_values);
    if (context.tap) context.tap("gate", gate_values);
  }

  if (f.attention == FocusAttention::cascaded) {
    const auto fused = fusion->forward(torch::cat({merge_heads(h_self), merge_heads(h_adapter), h_visual}, -1));
    return x + ffn->forward(fused);
  }
  return ffn->forward(o_proj->forward(merge_heads(h_self_adapter) + h_visual) + x);
}

// ---------------------------------------------------------------------------------------------
// The head

ActionHeadImpl::ActionHeadImpl(const ActionHeadConfig& config, const torch::TensorOptions& options)
    : layer_norm1(register_module("layer_norm1",
                                  nn::LayerNorm(config.action_dim * config.validate("ActionHead").hidden, 1e-5, options))),
      fc1(register_module("fc1", nn::Linear(config.action_dim * config.hidden, config.hidden, true, options))),
      mlp_resnet_blocks(register_module("mlp_resnet_blocks", torch::nn::ModuleList())),
      layer_norm2(register_module("layer_norm2", nn::LayerNorm(config.hidden, 1e-5, options))),
      fc2(register_module("fc2", nn::Linear(config.hidden, config.action_dim, true, options))),
      config_(config) {
  for (int64_t i = 0; i < config.blocks; ++i) {
    std::shared_ptr<HeadBlockImpl> block;
    switch (config.kind) {
      case HeadKind::base: block = std::make_shared<BaseBlockImpl>(config, options); break;
      case HeadKind::pro: block = std::make_shared<ProBlockImpl>(config, options); break;
      case HeadKind::focus: block = std::make_shared<FocusBlockImpl>(config, options); break;
    }
    mlp_resnet_blocks->push_back(block);
    blocks_.push_back(block);
  }
}

torch::Tensor ActionHeadImpl::rope_inv_freq() const {
  const std::lock_guard<std::mutex> lock(inv_freq_mutex_);
  const auto options = fc1->weight.options();
  if (!inv_freq_.defined() || inv_freq_.device() != options.device() || inv_freq_.scalar_type() != dtype())
    inv_freq_ = policy::rope_inv_freq(config_.head_dim(), options);
  return inv_freq_;
}

io::LoadOptions ActionHeadImpl::load_options() const {
  io::LoadOptions options;
  options.ignored_prefixes = config_.unused_prefixes();
  return options;
}

ActionHead ActionHeadImpl::load(const io::StateDict& head, const std::optional<io::FocusConfig>& focus,
                                const torch::TensorOptions& options) {
  const auto config = ActionHeadConfig::from_state(head, focus);
  ActionHead module(config, options);
  io::load_module(*module, head, "model", module->load_options());
  return module;
}

void ActionHeadImpl::check_inputs(const torch::Tensor& visual, const torch::Tensor& queries,
                                  const torch::Tensor& proprio) const {
  const std::string what = "ActionHead";
  const auto& c = config_;
  const int64_t layers_needed = c.blocks + 1;
  auto states = [&](const torch::Tensor& t, const char* name, const char* tokens) {
    check(t.defined(), what, std::string(name) + ": undefined tensor");
    check(t.dim() == 4, what,
          std::string(name) + ": expected rank 4 (B, L, " + tokens + ", D), got shape " + shape_of(t));
    check(t.is_floating_point(), what, std::string(name) + ": expected a floating-point tensor, got " +
                                           std::string(c10::toString(t.scalar_type())));
    check(t.size(3) == c.hidden, what,
          std::string(name) + ": hidden size " + str(t.size(3)) + " does not match the head's " + str(c.hidden) +
              " (shape " + shape_of(t) + ")");
    check(t.size(1) >= layers_needed, what,
          std::string(name) + ": " + str(t.size(1)) + " layers, but the head's " + str(c.blocks) + " blocks need " +
              str(layers_needed) + " (block i reads layer i + 1)");
    check(t.size(0) > 0 && t.size(2) > 0, what, std::string(name) + ": empty batch or no tokens, shape " + shape_of(t));
  };
  states(visual, "visual", "Nv");
  states(queries, "queries", "Nq");
  const int64_t batch = visual.size(0);
  check(queries.size(0) == batch, what,
        "batch mismatch: visual has " + str(batch) + " samples, queries " + str(queries.size(0)));
  if (proprio.defined()) {
    check(proprio.dim() == 3 && proprio.size(0) == batch && proprio.size(1) == 1 && proprio.size(2) == c.hidden, what,
          "proprio: expected shape [" + str(batch) + ", 1, " + str(c.hidden) + "] (B, 1, D), got " + shape_of(proprio));
    check(proprio.is_floating_point(), what, "proprio: expected a floating-point tensor");
  }
  if (c.kind == HeadKind::focus)
    check(c.focus.top_k <= visual.size(2), what,
          "focus top_k " + str(c.focus.top_k) + " exceeds the " + str(visual.size(2)) +
              " visual tokens (no clamping: the head was trained to keep top_k of more patches)");
}

torch::Tensor ActionHeadImpl::forward(const torch::Tensor& visual, const torch::Tensor& queries,
                                      const torch::Tensor& proprio, HeadDiagnostics* diagnostics) const {
  check_inputs(visual, queries, proprio);
  const c10::InferenceMode inference;
  const auto& c = config_;
  const auto options = fc1->weight.options();
  const auto v = visual.to(options);
  const auto q = queries.to(options);
  const auto p = proprio.defined() ? proprio.to(options) : torch::Tensor();

  if (diagnostics) {
    diagnostics->kept_indices.clear();
    diagnostics->gates.clear();
  }
  BlockContext context;
  context.diagnostics = diagnostics;
  if (c.kind != HeadKind::base) {
    const torch::Tensor inv_freq = rope_inv_freq();
    context.rope_self = rope_table(c.chunk, inv_freq);
    context.rope_adapter = rope_table(q.size(2) + (p.defined() ? 1 : 0), inv_freq);
    context.rope_task = rope_table(v.size(2), inv_freq);
  }
  if (c.kind == HeadKind::focus && c.focus.value_source == FocusValueSource::embeddings) context.shallow = v.select(1, 0);

  auto x = torch::zeros({v.size(0), c.chunk, c.action_dim * c.hidden}, options);
  x = torch::relu(fc1->forward(layer_norm1->forward(x)));
  if (tap_) tap_("stem", x);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const auto layer = static_cast<int64_t>(i) + 1;
    const std::string name = tap_ ? indexed("blocks", layer - 1) : std::string();
    context.tap = prefixed(name, tap_);  // unset when tap_ is
    x = blocks_[i]->forward(x, v.select(1, layer), q.select(1, layer), p, context);
    if (tap_) tap_(name, x);
  }
  x = fc2->forward(layer_norm2->forward(x));
  if (tap_) tap_("output", x);
  return x;
}


// ---------------------------------------------------------------------------------------------
// The "mlp-resnet" PolicyHead family

HeadFamily mlp_resnet_family() {
  HeadFamily family;
  family.name = "mlp-resnet";
  family.description =
      "VLA-Adapter / VLA-Adapter-Pro / FocusVLA L1RegressionActionHead: keys model.fc1.*, model.fc2.*, "
      "model.mlp_resnet_blocks.{i}.* (FocusVLA with config.json 'focus')";
  family.detect = [](const io::StateDict& state, const io::VlaConfig&) {
    for (const char* prefix : {"model.fc1", "model.fc2", "model.layer_norm1", "model.layer_norm2",
                               "model.mlp_resnet_blocks"})
      if (state.has_prefix(prefix)) return true;
    return false;
  };
  family.load = [](const io::StateDict& state, const io::VlaConfig& config,
                   const torch::TensorOptions& options) -> std::shared_ptr<PolicyHead> {
    return std::make_shared<MlpResNetHead>(ActionHeadImpl::load(state, config.focus, options));
  };
  return family;
}

}  // namespace focusvla::policy
