#include "focusvla/vision/vision_tower.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <atomic>
#include <cmath>

#include "focusvla/core/error.h"

namespace focusvla::vision {
namespace {

const char* const kBackbone = "vision_backbone";
const char* const kProjector = "projector";

// The checkpoint prefix of an encoder: "vision_backbone.featurizer".
std::string prefix_of(const std::string& name) { return std::string(kBackbone) + "." + name; }

// The tensor `prefix.name` when present with `dims` dimensions, else an undefined tensor.
torch::Tensor find(const io::StateDict& state, const std::string& prefix, const std::string& name, int64_t dims) {
  const std::string key = prefix + "." + name;
  if (!state.contains(key)) return {};
  const torch::Tensor& t = state.at(key);
  return t.dim() == dims ? t : torch::Tensor();
}

void append(std::vector<std::string>& into, const std::vector<std::string>& items) {
  into.insert(into.end(), items.begin(), items.end());
}

std::string shape_of(const torch::Tensor& t) { return io::shape_string(t.sizes()); }

// "featurizer + fused_featurizer" for messages.
std::string names_of(const std::vector<EncoderConfig>& encoders) {
  std::string out;
  for (const auto& e : encoders) out += (out.empty() ? "" : " + ") + e.name;
  return out;
}

}  // namespace

VisionBackboneImpl::VisionBackboneImpl(const std::vector<EncoderConfig>& encoders,
                                       const torch::TensorOptions& options) {
  for (const auto& e : encoders) encoders_.push_back(register_module(e.name, e.params().build(e.name, options)));
}

int64_t VisionBackboneImpl::in_channels() const {
  int64_t out = 0;
  for (const auto& e : encoders_) out += e->in_channels();
  return out;
}

bool VisionBackboneImpl::runs_side_by_side(const torch::Tensor& pixels) const {
  if (!side_by_side || encoders_.size() < 2 || !pixels.is_cpu() || at::in_parallel_region()) return false;
  for (const auto& e : encoders_)
    if (e->has_tap()) return false;
  return at::get_num_threads() == static_cast<int>(encoders_.size());
}

torch::Tensor VisionBackboneImpl::forward(const torch::Tensor& pixels) const {
  if (encoders_.size() == 1) return encoders_.front()->forward(pixels);
  std::vector<int64_t> first_channel{0};
  for (const auto& e : encoders_) first_channel.push_back(first_channel.back() + e->in_channels());
  std::vector<torch::Tensor> inputs;
  for (size_t i = 0; i < encoders_.size(); ++i)
    inputs.push_back(pixels.slice(1, first_channel[i], first_channel[i + 1]));
  std::vector<torch::Tensor> features(encoders_.size());
  if (runs_side_by_side(pixels)) {
    features = side_by_side_run(inputs);
  } else {
    for (size_t i = 0; i < encoders_.size(); ++i) features[i] = encoders_[i]->forward(inputs[i]);
  }
  return torch::cat(features, 2);
}

// Phase 1: one thread per encoder, each running its steps (ImageEncoder::step) until one of them
// starts its last step; the others stop at their next step boundary (each runs at least its first
// step). Phase 2: the steps left, each encoder in turn on all threads. Measured on 2 cores: SigLIP
// takes ~1.25x DINOv2's time, so without phase 2 one core idled for the difference. The caller's
// thread-local state (inference mode, grad mode) goes with each thread; the first exception is
// rethrown here (and stops the others at their next boundary).
std::vector<torch::Tensor> VisionBackboneImpl::side_by_side_run(const std::vector<torch::Tensor>& inputs) const {
  const size_t n = encoders_.size();
  std::vector<torch::Tensor> x(n);
  std::vector<int64_t> next(n, 0);
  std::atomic<bool> one_at_end{false};
  const at::ThreadLocalState state;
  at::parallel_for(0, static_cast<int64_t>(n), 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard guard(state);
    for (auto i = static_cast<size_t>(begin); i < static_cast<size_t>(end); ++i) {
      const ImageEncoder& e = *encoders_[i];
      try {
        x[i] = e.start(inputs[i]);
        for (bool first = true; next[i] < e.steps() && (first || !one_at_end); first = false) {
          if (next[i] + 1 == e.steps()) one_at_end = true;
          x[i] = e.step(x[i], next[i]);
          ++next[i];
        }
      } catch (...) {
        one_at_end = true;
        throw;
      }
    }
  });
  std::vector<torch::Tensor> out(n);
  for (size_t i = 0; i < n; ++i) {
    const ImageEncoder& e = *encoders_[i];
    for (; next[i] < e.steps(); ++next[i]) x[i] = e.step(x[i], next[i]);
    out[i] = e.finish(x[i]);
  }
  return out;
}

ProjectorConfig ProjectorImpl::config_from(const io::StateDict& state, const std::string& prefix) {
  ProjectorConfig c;
  if (auto w = find(state, prefix, "fc1.weight", 2); w.defined()) {
    c.hidden = w.size(0);
    c.vision_dim = w.size(1);
  }
  if (auto w = find(state, prefix, "fc2.weight", 2); w.defined()) c.llm_dim = w.size(0);
  return c;
}

int64_t VisionTowerConfig::in_channels() const {
  int64_t out = 0;
  for (const auto& e : encoders) out += e.in_channels();
  return out;
}

int64_t VisionTowerConfig::vision_dim() const {
  int64_t out = 0;
  for (const auto& e : encoders) out += e.dim();
  return out;
}

std::string VisionTowerConfig::encoder_name(size_t index) {
  if (index == 0) return "featurizer";
  if (index == 1) return "fused_featurizer";
  return "featurizer_" + std::to_string(index);
}

std::vector<EncoderConfig> VisionTowerConfig::default_encoders(int64_t image_size) {
  return {EncoderConfig::from_timm_id("vit_large_patch14_reg4_dinov2.lvd142m", image_size, encoder_name(0)),
          EncoderConfig::from_timm_id("vit_so400m_patch14_siglip_224", image_size, encoder_name(1))};
}

VisionTowerConfig VisionTowerConfig::from_vla_config(const io::VlaConfig& config) {
  const auto& ids = config.timm_model_ids;
  check(!ids.empty(), "config.json", "timm_model_ids names no vision encoder");
  check(config.use_fused_vision_backbone == (ids.size() > 1), "config.json",
        std::to_string(ids.size()) + " timm_model_ids but use_fused_vision_backbone is " +
            (config.use_fused_vision_backbone ? "true" : "false"));
  auto size = [&](size_t i) {
    if (config.image_sizes.empty()) return int64_t{224};
    return config.image_sizes.at(std::min(i, config.image_sizes.size() - 1));
  };
  VisionTowerConfig c;
  c.encoders.clear();
  for (size_t i = 0; i < ids.size(); ++i)
    c.encoders.push_back(EncoderConfig::from_timm_id(ids[i], size(i), encoder_name(i)));
  c.projector.vision_dim = c.vision_dim();
  c.projector.hidden = 4 * c.vision_dim();
  c.projector.llm_dim = config.text_config.hidden_size;
  return c;
}

VisionTowerConfig VisionTowerConfig::fitted_to(const io::StateDict& state) const {
  VisionTowerConfig c = *this;
  for (auto& e : c.encoders) e.params().fit(state, prefix_of(e.name));
  c.projector = ProjectorImpl::config_from(state, kProjector);
  if (!state.contains(std::string(kProjector) + ".fc1.weight")) {
    c.projector.vision_dim = c.vision_dim();
    c.projector.hidden = 4 * c.vision_dim();
  }
  return c;
}

const VisionTowerConfig& VisionTowerConfig::validate() const {
  check(!encoders.empty(), "vision tower", "no encoders");
  for (size_t i = 0; i < encoders.size(); ++i) {
    const EncoderConfig& e = encoders[i];
    check(!e.name.empty() && e.name.find('.') == std::string::npos, "vision tower",
          "encoder " + std::to_string(i) + " needs a module name without dots, got '" + e.name + "'");
    for (size_t j = 0; j < i; ++j)
      check(encoders[j].name != e.name, "vision tower", "two encoders are named '" + e.name + "'");
    e.params().validate(prefix_of(e.name));
  }
  const EncoderConfig& first = encoders.front();
  for (const EncoderConfig& e : encoders)
    check(e.image_size() == first.image_size() && e.tokens() == first.tokens(), "vision tower",
          "the encoders must see the same image size and give the same token count: " + first.name + " " +
              std::to_string(first.image_size()) + "px / " + std::to_string(first.tokens()) + " tokens vs " + e.name +
              " " + std::to_string(e.image_size()) + "px / " + std::to_string(e.tokens()) + " tokens");
  std::string widths;
  for (const EncoderConfig& e : encoders) widths += (widths.empty() ? "" : " + ") + std::to_string(e.dim());
  check(projector.vision_dim == vision_dim(), "vision tower",
        "projector input width " + std::to_string(projector.vision_dim) + " differs from the fused feature width " +
            widths);
  check(projector.hidden > 0 && projector.llm_dim > 0, "vision tower", "projector widths must be positive");
  return *this;
}

VisionTowerImpl::VisionTowerImpl(const VisionTowerConfig& config_, const torch::TensorOptions& options)
    : config(config_.validate()),
      vision_backbone(register_module(kBackbone, VisionBackbone(config.encoders, options))),
      projector(register_module(kProjector, Projector(config.projector, options))) {}

torch::Tensor VisionTowerImpl::features(const torch::Tensor& pixels) const {
  const c10::InferenceMode inference;
  const std::string what = "VisionTower";
  focusvla::check(pixels.defined(), what, "pixels tensor is undefined");
  const int64_t want_channels = config.in_channels();
  const std::string c = std::to_string(want_channels);
  focusvla::check(pixels.dim() == 4 || pixels.dim() == 5, what,
        "expected pixels of shape [N, " + c + ", H, W] (one sample of N cameras) or [B, N, " + c + ", H, W], got " +
            shape_of(pixels));
  focusvla::check(pixels.is_floating_point(), what,
        std::string("pixels must be floating point (normalized images from ImagePreprocessor), got ") +
            c10::toString(pixels.scalar_type()));
  const bool batched = pixels.dim() == 5;
  const int64_t batch = batched ? pixels.size(0) : 1;
  const int64_t cameras = batched ? pixels.size(1) : pixels.size(0);
  const int64_t channels = pixels.size(-3);
  const int64_t size = config.image_size();
  focusvla::check(batch > 0, what, "empty batch (B = 0)");
  focusvla::check(cameras > 0, what, "no camera images (N = 0)");
  focusvla::check(channels == want_channels, what,
        "expected " + c + " channels per image (" + names_of(config.encoders) + " normalized), got " +
            std::to_string(channels) + " in " + shape_of(pixels));
  focusvla::check(pixels.size(-2) == size && pixels.size(-1) == size, what,
        "expected " + std::to_string(size) + "x" + std::to_string(size) + " images, got " + shape_of(pixels));

  const torch::Tensor images = pixels.reshape({batch * cameras, channels, size, size});
  const torch::Tensor fused = vision_backbone->forward(images);  // (B*N, P, D1 + ... + Dk)
  torch::Tensor out = fused.reshape({batch, cameras * fused.size(1), fused.size(2)});
  tap("features", out);
  return out;
}

torch::Tensor VisionTowerImpl::project(const torch::Tensor& features) const {
  const c10::InferenceMode inference;
  torch::Tensor out = projector->forward(features);
  tap("output", out);
  return out;
}

torch::Tensor VisionTowerImpl::forward(const torch::Tensor& pixels) const { return project(features(pixels)); }

void VisionTowerImpl::set_tap(Tap tap) {
  for (const auto& e : vision_backbone->encoders()) e->set_tap(prefixed(e->checkpoint_name(), tap));
  tap_ = std::move(tap);
}

io::LoadReport VisionTowerImpl::check(const io::StateDict& state) const {
  io::LoadReport report;
  auto add = [&report](const io::LoadReport& part) {
    append(report.missing, part.missing);
    append(report.unexpected, part.unexpected);
    append(report.mismatched, part.mismatched);
    append(report.ignored, part.ignored);
  };
  for (size_t i = 0; i < config.encoders.size(); ++i) {
    const EncoderConfig& e = config.encoders[i];
    add(io::check_module(*vision_backbone->encoder(i), state, prefix_of(e.name), e.load_options()));
  }
  add(io::check_module(*projector, state, kProjector));
  return report;
}

VisionTower VisionTowerImpl::load(const io::StateDict& state, const io::VlaConfig& config,
                                  const torch::TensorOptions& options, const io::StageHook& after_stage) {
  return load(state, VisionTowerConfig::from_vla_config(config).fitted_to(state), options, after_stage);
}

VisionTower VisionTowerImpl::load(const io::StateDict& state, const VisionTowerConfig& config,
                                  const torch::TensorOptions& options, const io::StageHook& after_stage) {
  VisionTower tower(config, options);
  const io::LoadReport report = tower->check(state);
  if (!report.ok()) {
    std::string source = "the state dict";
    std::vector<std::string> prefixes;
    for (const auto& e : config.encoders) prefixes.push_back(prefix_of(e.name));
    prefixes.emplace_back(kProjector);
    for (const auto& prefix : prefixes) {
      const io::StateDict part = state.subset(prefix);
      if (!part.empty()) {
        source = part.source(part.keys().front());
        break;
      }
    }
    std::string hint;
    if (!state.has_prefix(kBackbone))
      hint = " (no 'vision_backbone.*' tensors at all: is this a VLA-Adapter / Prismatic checkpoint?)";
    throw Error("loading the vision tower from " + source + hint + ":" + report.describe());
  }
  for (size_t i = 0; i < config.encoders.size(); ++i) {
    const EncoderConfig& e = config.encoders[i];
    io::LoadOptions load_options = e.load_options();
    if (after_stage)
      load_options.after_stage = [&](const std::string& path, torch::nn::Module& stage) {
        after_stage(e.name + "." + path, stage);
      };
    io::load_module(*tower->vision_backbone->encoder(i), state, prefix_of(e.name), load_options);
  }
  io::load_module(*tower->projector, state, kProjector);
  return tower;
}

}  // namespace focusvla::vision
