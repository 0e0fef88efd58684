#pragma once
// The visual half of the policy (SPEC sections 1, 4, 5): per camera image, DINOv2 on channels 0-2
// and SigLIP on channels 3-5, concatenated on channels (256 x 2176), images concatenated along
// the tokens, then the projector (2176 -> 8704 -> 896 -> 896).
//
//   pixels (B, N, 6, 224, 224) -> vision_backbone.featurizer        -> (B*N, 256, 1024) -+
//                              -> vision_backbone.fused_featurizer  -> (B*N, 256, 1152) -+-> cat
//   -> features (B, N*256, 2176) -> projector -> visual embeddings (B, N*256, 896)
//
// Module names equal the checkpoint's (Prismatic / VLA-Adapter `OpenVLAForActionPrediction`):
// `vision_backbone.featurizer.*`, `vision_backbone.fused_featurizer.*`, `projector.fc{1,2,3}.*`.

#include <torch/torch.h>

#include <string>

#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/nn/layers.h"
#include "focusvla/vision/vit.h"

namespace focusvla::vision {

struct ProjectorConfig {
  int64_t vision_dim = 2176;  // fused feature width (DINOv2 + SigLIP)
  int64_t hidden = 8704;      // 4 * vision_dim
  int64_t llm_dim = 896;      // the language model's hidden size
};

// Prismatic `FusedMLPProjector` ("fused-gelu-mlp"): fc1 -> GELU -> fc2 -> GELU -> fc3, exact GELU.
class ProjectorImpl : public torch::nn::Module {
 public:
  ProjectorImpl(const ProjectorConfig& config, const torch::TensorOptions& options)
      : fc1(register_module("fc1", nn::Linear(config.vision_dim, config.hidden, true, options))),
        fc2(register_module("fc2", nn::Linear(config.hidden, config.llm_dim, true, options))),
        fc3(register_module("fc3", nn::Linear(config.llm_dim, config.llm_dim, true, options))) {}

  torch::Tensor forward(const torch::Tensor& features) const {
    return fc3->forward(torch::gelu(fc2->forward(torch::gelu(fc1->forward(features)))));
  }

  // The widths a checkpoint's `projector.fc{1,2,3}.weight` shapes show; fields whose tensor is
  // absent keep their defaults (loading then reports the key as missing).
  static ProjectorConfig config_from(const io::StateDict& state, const std::string& prefix = "projector");

  nn::Linear fc1;
  nn::Linear fc2;
  nn::Linear fc3;
};
TORCH_MODULE(Projector);

// Prismatic's fused DINOv2 + SigLIP backbone (`DinoSigLIPViTBackbone`, HF
// `PrismaticVisionBackbone`): pixels (M, 6, H, W) -> (M, P, D1 + D2).
class FusedBackboneImpl : public torch::nn::Module {
 public:
  FusedBackboneImpl(const VitConfig& featurizer_config, const VitConfig& fused_config,
                    const torch::TensorOptions& options)
      : featurizer(register_module("featurizer", VisionTransformer(featurizer_config, options))),
        fused_featurizer(register_module("fused_featurizer", VisionTransformer(fused_config, options))) {}

  torch::Tensor forward(const torch::Tensor& pixels) const {
    const int64_t split = featurizer->config.in_channels;
    return torch::cat({featurizer->forward(pixels.slice(1, 0, split)), fused_featurizer->forward(pixels.slice(1, split))},
                      2);
  }

  VisionTransformer featurizer;        // DINOv2, normalized with the DINOv2 statistics
  VisionTransformer fused_featurizer;  // SigLIP, normalized with 0.5 / 0.5
};
TORCH_MODULE(FusedBackbone);

struct VisionTowerConfig {
  VitConfig featurizer = VitConfig::dinov2_vit_large_reg4();
  VitConfig fused_featurizer = VitConfig::siglip_so400m();
  ProjectorConfig projector;

  int64_t image_size() const { return featurizer.image_size; }
  int64_t tokens_per_image() const { return featurizer.num_patches(); }
  int64_t vision_dim() const { return featurizer.dim + fused_featurizer.dim; }

  // From config.json: the two `timm_model_ids` (a fused backbone) and `image_sizes`, through
  // VitConfig::from_timm_id; the projector gets the default widths.
  static VisionTowerConfig from_vla_config(const io::VlaConfig& config);
  // This configuration with the sizes shown by a checkpoint's tensors (prefixes
  // `vision_backbone.featurizer`, `vision_backbone.fused_featurizer`, `projector`): width, depth
  // (stop_after_block keeps its distance from the last block), MLP width, patch size, registers,
  // image size. The head count is not visible in shapes and is kept: a test-sized checkpoint with
  // other head counts needs them set here (the table's 16 heads otherwise).
  VisionTowerConfig fitted_to(const io::StateDict& state) const;
  // Throws Error when the three parts do not fit together (token counts, widths).
  const VisionTowerConfig& validate() const;
};

class VisionTower;

class VisionTowerImpl : public torch::nn::Module {
 public:
  VisionTowerImpl(const VisionTowerConfig& config, const torch::TensorOptions& options);

  // Raw fused features. pixels (N, 6, H, W) for one sample of N cameras, or (B, N, 6, H, W):
  // -> (B, N * tokens_per_image, vision_dim) in the module's dtype, cameras in input order.
  torch::Tensor features(const torch::Tensor& pixels) const;
  // Visual embeddings: projector(features(pixels)) -> (B, N * tokens_per_image, llm_dim).
  torch::Tensor forward(const torch::Tensor& pixels) const;

  // Named intermediates (see Tap): the encoders' under "vision_backbone.featurizer." and
  // "vision_backbone.fused_featurizer.", then "features" and "output".
  void set_tap(Tap tap);
  // bf16 linear layers on the CPU as fp32 matmuls of fp32 weight copies (nn::keep_fp32_copies,
  // made now: call after loading): ~3x faster on CPUs without native bf16 dot products; off by
  // default.
  void set_bf16_matmul_in_fp32(bool on) { nn::keep_fp32_copies(*this, on); }

  // Builds the tower a checkpoint holds: VisionTowerConfig::from_vla_config(config).fitted_to(state).
  static VisionTower load(const io::StateDict& state, const io::VlaConfig& config,
                          const torch::TensorOptions& options = {});
  // Builds `config` and loads it name for name. Every missing, unexpected (outside the
  // unused parts of the encoders) or mis-shaped key of the three parts is reported in one Error.
  static VisionTower load(const io::StateDict& state, const VisionTowerConfig& config,
                          const torch::TensorOptions& options = {});
  // What `load` would report, without writing anything.
  io::LoadReport check(const io::StateDict& state) const;

  const VisionTowerConfig config;
  FusedBackbone vision_backbone;
  Projector projector;

 private:
  void tap(const std::string& name, const torch::Tensor& value) const {
    if (tap_) tap_(name, value);
  }
  Tap tap_;
};

class VisionTower : public torch::nn::ModuleHolder<VisionTowerImpl> {
 public:
  using torch::nn::ModuleHolder<VisionTowerImpl>::ModuleHolder;
  using Impl = VisionTowerImpl;

  static VisionTower load(const io::StateDict& state, const io::VlaConfig& config,
                          const torch::TensorOptions& options = {}) {
    return VisionTowerImpl::load(state, config, options);
  }
  static VisionTower load(const io::StateDict& state, const VisionTowerConfig& config,
                          const torch::TensorOptions& options = {}) {
    return VisionTowerImpl::load(state, config, options);
  }
};

// The io::LoadOptions one encoder loads with: its unused parts are ignored.
io::LoadOptions encoder_load_options(const VitConfig& config);

}  // namespace focusvla::vision
