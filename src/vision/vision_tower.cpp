#include "focusvla/vision/vision_tower.h"

#include <cmath>

#include "focusvla/core/error.h"

namespace focusvla::vision {
namespace {

const char* const kFeaturizer = "vision_backbone.featurizer";
const char* const kFusedFeaturizer = "vision_backbone.fused_featurizer";
const char* const kProjector = "projector";

// The tensor `prefix.name` when present with `dims` dimensions, else an undefined tensor.
torch::Tensor find(const io::StateDict& state, const std::string& prefix, const std::string& name, int64_t dims) {
  const std::string key = prefix + "." + name;
  if (!state.contains(key)) return {};
  const torch::Tensor& t = state.at(key);
  return t.dim() == dims ? t : torch::Tensor();
}

VitConfig fit_encoder(VitConfig c, const io::StateDict& state, const std::string& prefix) {
  const int64_t blocks_after_stop = c.depth - c.stop_after_block;
  if (auto w = find(state, prefix, "patch_embed.proj.weight", 4); w.defined()) {
    c.dim = w.size(0);
    c.in_channels = w.size(1);
    c.patch_size = w.size(2);
  }
  if (auto w = find(state, prefix, "blocks.0.mlp.fc1.weight", 2); w.defined()) c.mlp_hidden = w.size(0);
  if (auto r = find(state, prefix, "reg_token", 3); r.defined()) c.reg_tokens = r.size(1);
  int64_t depth = 0;
  while (state.has_prefix(prefix + ".blocks." + std::to_string(depth))) ++depth;
  if (depth > 0) {
    c.depth = depth;
    c.stop_after_block = std::max<int64_t>(0, depth - blocks_after_stop);
  }
  if (auto p = find(state, prefix, "pos_embed", 3); p.defined()) {
    const int64_t patches = p.size(1) - (c.no_embed_class ? 0 : c.num_prefix_tokens());
    const auto grid = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(std::max<int64_t>(patches, 0)))));
    if (grid > 0 && grid * grid == patches) c.image_size = grid * c.patch_size;
  }
  return c;
}

void append(std::vector<std::string>& into, const std::vector<std::string>& items) {
  into.insert(into.end(), items.begin(), items.end());
}

std::string shape_of(const torch::Tensor& t) { return io::shape_string(t.sizes()); }

}  // namespace

io::LoadOptions encoder_load_options(const VitConfig& config) {
  io::LoadOptions options;
  options.ignored_prefixes = config.unused_prefixes();
  return options;
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

VisionTowerConfig VisionTowerConfig::from_vla_config(const io::VlaConfig& config) {
  check(config.use_fused_vision_backbone, "config.json",
        "use_fused_vision_backbone is false: only the fused DINOv2 + SigLIP backbone is supported");
  check(config.timm_model_ids.size() == 2, "config.json",
        "timm_model_ids must name the two encoders of the fused backbone, found " +
            std::to_string(config.timm_model_ids.size()));
  auto size = [&](size_t i) {
    if (config.image_sizes.empty()) return int64_t{224};
    return config.image_sizes.at(std::min(i, config.image_sizes.size() - 1));
  };
  VisionTowerConfig c;
  c.featurizer = VitConfig::from_timm_id(config.timm_model_ids[0], size(0));
  c.fused_featurizer = VitConfig::from_timm_id(config.timm_model_ids[1], size(1));
  c.projector.vision_dim = c.vision_dim();
  c.projector.hidden = 4 * c.vision_dim();
  c.projector.llm_dim = config.text_config.hidden_size;
  return c;
}

VisionTowerConfig VisionTowerConfig::fitted_to(const io::StateDict& state) const {
  VisionTowerConfig c = *this;
  c.featurizer = fit_encoder(featurizer, state, kFeaturizer);
  c.fused_featurizer = fit_encoder(fused_featurizer, state, kFusedFeaturizer);
  c.projector = ProjectorImpl::config_from(state, kProjector);
  if (!state.contains(std::string(kProjector) + ".fc1.weight")) {
    c.projector.vision_dim = c.vision_dim();
    c.projector.hidden = 4 * c.vision_dim();
  }
  return c;
}

const VisionTowerConfig& VisionTowerConfig::validate() const {
  featurizer.validate(kFeaturizer);
  fused_featurizer.validate(kFusedFeaturizer);
  check(featurizer.image_size == fused_featurizer.image_size && featurizer.num_patches() == fused_featurizer.num_patches(),
        "vision tower",
        "the two encoders must see the same image size and patch grid: " + std::to_string(featurizer.image_size) +
            "px / " + std::to_string(featurizer.num_patches()) + " patches vs " +
            std::to_string(fused_featurizer.image_size) + "px / " + std::to_string(fused_featurizer.num_patches()) +
            " patches");
  check(projector.vision_dim == vision_dim(), "vision tower",
        "projector input width " + std::to_string(projector.vision_dim) + " differs from the fused feature width " +
            std::to_string(featurizer.dim) + " + " + std::to_string(fused_featurizer.dim));
  check(projector.hidden > 0 && projector.llm_dim > 0, "vision tower", "projector widths must be positive");
  return *this;
}

VisionTowerImpl::VisionTowerImpl(const VisionTowerConfig& config_, const torch::TensorOptions& options)
    : config(config_.validate()),
      vision_backbone(register_module("vision_backbone",
                                      FusedBackbone(config.featurizer, config.fused_featurizer, options))),
      projector(register_module("projector", Projector(config.projector, options))) {}

torch::Tensor VisionTowerImpl::features(const torch::Tensor& pixels) const {
  const c10::InferenceMode inference;
  const std::string what = "VisionTower";
  focusvla::check(pixels.defined(), what, "pixels tensor is undefined");
  focusvla::check(pixels.dim() == 4 || pixels.dim() == 5, what,
        "expected pixels of shape [N, 6, H, W] (one sample of N cameras) or [B, N, 6, H, W], got " + shape_of(pixels));
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
  const int64_t want_channels = config.featurizer.in_channels + config.fused_featurizer.in_channels;
  focusvla::check(channels == want_channels, what,
        "expected " + std::to_string(want_channels) + " channels per image (DINOv2 + SigLIP normalized), got " +
            std::to_string(channels) + " in " + shape_of(pixels));
  focusvla::check(pixels.size(-2) == size && pixels.size(-1) == size, what,
        "expected " + std::to_string(size) + "x" + std::to_string(size) + " images, got " + shape_of(pixels));

  const torch::Tensor images = pixels.reshape({batch * cameras, channels, size, size});
  const torch::Tensor fused = vision_backbone->forward(images);  // (B*N, P, D1 + D2)
  torch::Tensor out = fused.reshape({batch, cameras * fused.size(1), fused.size(2)});
  tap("features", out);
  return out;
}

torch::Tensor VisionTowerImpl::forward(const torch::Tensor& pixels) const {
  const torch::Tensor fused = features(pixels);
  const c10::InferenceMode inference;
  torch::Tensor out = projector->forward(fused);
  tap("output", out);
  return out;
}

void VisionTowerImpl::set_tap(Tap tap) {
  tap_ = tap;
  auto forward_to = [tap](const std::string& prefix) -> Tap {
    if (!tap) return nullptr;
    return [tap, prefix](const std::string& name, const torch::Tensor& value) { tap(prefix + "." + name, value); };
  };
  vision_backbone->featurizer->set_tap(forward_to(kFeaturizer));
  vision_backbone->fused_featurizer->set_tap(forward_to(kFusedFeaturizer));
}

io::LoadReport VisionTowerImpl::check(const io::StateDict& state) const {
  io::LoadReport report;
  auto add = [&report](const io::LoadReport& part) {
    append(report.missing, part.missing);
    append(report.unexpected, part.unexpected);
    append(report.mismatched, part.mismatched);
    append(report.ignored, part.ignored);
  };
  add(io::check_module(*vision_backbone->featurizer, state, kFeaturizer, encoder_load_options(config.featurizer)));
  add(io::check_module(*vision_backbone->fused_featurizer, state, kFusedFeaturizer,
                       encoder_load_options(config.fused_featurizer)));
  add(io::check_module(*projector, state, kProjector));
  return report;
}

VisionTower VisionTowerImpl::load(const io::StateDict& state, const io::VlaConfig& config,
                                  const torch::TensorOptions& options) {
  return load(state, VisionTowerConfig::from_vla_config(config).fitted_to(state), options);
}

VisionTower VisionTowerImpl::load(const io::StateDict& state, const VisionTowerConfig& config,
                                  const torch::TensorOptions& options) {
  VisionTower tower(config, options);
  const io::LoadReport report = tower->check(state);
  if (!report.ok()) {
    std::string source = "the state dict";
    for (const char* prefix : {kFeaturizer, kFusedFeaturizer, kProjector}) {
      const io::StateDict part = state.subset(prefix);
      if (!part.empty()) {
        source = part.source(part.keys().front());
        break;
      }
    }
    std::string hint;
    if (!state.has_prefix(kFeaturizer) && !state.has_prefix(kFusedFeaturizer))
      hint = " (no 'vision_backbone.*' tensors at all: is this a VLA-Adapter / Prismatic checkpoint?)";
    throw Error("loading the vision tower from " + source + hint + ":" + report.describe());
  }
  io::load_module(*tower->vision_backbone->featurizer, state, kFeaturizer, encoder_load_options(config.featurizer));
  io::load_module(*tower->vision_backbone->fused_featurizer, state, kFusedFeaturizer,
                  encoder_load_options(config.fused_featurizer));
  io::load_module(*tower->projector, state, kProjector);
  return tower;
}

}  // namespace focusvla::vision
