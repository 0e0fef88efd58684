#pragma once
// The visual half of the policy (SPEC sections 1, 4, 5): per camera image, each encoder of the
// backbone on its own channels (VisionTowerConfig::encoders, in order), their features
// concatenated on channels, images concatenated along the tokens, then the projector.
// The released models: DINOv2 on channels 0-2 and SigLIP on channels 3-5 (256 x 2176), projector
// 2176 -> 8704 -> 896 -> 896.
//
//   pixels (B, N, 6, 224, 224) -> vision_backbone.featurizer        -> (B*N, 256, 1024) -+
//                              -> vision_backbone.fused_featurizer  -> (B*N, 256, 1152) -+-> cat
//   -> features (B, N*256, 2176) -> projector -> visual embeddings (B, N*256, 896)
//
// Module names equal the checkpoint's (Prismatic / VLA-Adapter `OpenVLAForActionPrediction`):
// `vision_backbone.featurizer.*`, `vision_backbone.fused_featurizer.*`, `projector.fc{1,2,3}.*`.
// The encoders come from config.json's `timm_model_ids` (one or two) through the encoder registry
// (image_encoder.h); nothing here assumes how many there are or what kind they are.

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "focusvla/core/tap.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/nn/layers.h"
#include "focusvla/vision/image_encoder.h"
#include "focusvla/vision/vit.h"

namespace focusvla::vision {

struct ProjectorConfig {
  int64_t vision_dim = 2176;  // fused feature width (the encoders' widths summed; DINOv2 + SigLIP)
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

// Prismatic's vision backbone (`DinoSigLIPViTBackbone` / HF `PrismaticVisionBackbone`, or the
// single-encoder one): a list of encoders, each registered under its checkpoint name, each reading
// its own `in_channels()` of the pixels in list order:
// pixels (M, C1 + ... + Ck, S, S) -> (M, P, D1 + ... + Dk).
class VisionBackboneImpl : public torch::nn::Module {
 public:
  VisionBackboneImpl(const std::vector<EncoderConfig>& encoders, const torch::TensorOptions& options);

  torch::Tensor forward(const torch::Tensor& pixels) const;

  // When true, CPU pixels and the calling thread has exactly as many threads as there are encoders
  // (at::get_num_threads(): 2 for DINOv2 + SigLIP): the encoders run side by side, one thread each
  // (at::parallel_for over the encoders; LibTorch's and oneDNN's own loops inside then run on that
  // one thread), instead of one after the other on all threads. Measured on 2 cores: one int8
  // encoder runs 1.4x (DINOv2) / 1.6x (SigLIP) faster on 2 threads than on 1, so side by side the
  // pair takes ~14% less (docs/QUANTIZATION.md). When the first encoder starts its last step
  // (ImageEncoder::step: a ViT block), the others stop at their next step and run the rest on all
  // threads (SigLIP's last 3 - 4 blocks here: ~2.5% of an int8 act). Never with a tap set (taps
  // come in run order). Bit for bit the sequential result for int8 encoders; bf16 GEMMs block
  // their sums differently on one thread, so off by default; vision::use_fast_kernels turns it on
  // for bf16 encoders on a CPU with native bf16 (quantized policies; with AVX2, emulated, side by
  // side measured no gain).
  bool side_by_side = false;
  // Whether forward(pixels) would run the encoders side by side now (see above).
  bool runs_side_by_side(const torch::Tensor& pixels) const;

  size_t size() const { return encoders_.size(); }
  const std::shared_ptr<ImageEncoder>& encoder(size_t index) const { return encoders_.at(index); }
  const std::vector<std::shared_ptr<ImageEncoder>>& encoders() const { return encoders_; }
  // encoder(index) as its implementation (e.g. VisionTransformerImpl); throws Error otherwise.
  template <typename T>
  std::shared_ptr<T> encoder_as(size_t index) const {
    auto out = std::dynamic_pointer_cast<T>(encoder(index));
    check(out != nullptr, "vision backbone",
          "encoder '" + encoder(index)->checkpoint_name() + "' is not of the requested kind");
    return out;
  }
  int64_t in_channels() const;  // the channels of all encoders together

 private:
  // The encoders' features from their inputs, side by side (see side_by_side).
  std::vector<torch::Tensor> side_by_side_run(const std::vector<torch::Tensor>& inputs) const;

  std::vector<std::shared_ptr<ImageEncoder>> encoders_;
};
TORCH_MODULE(VisionBackbone);

struct VisionTowerConfig {
  // In channel and feature order; names are the checkpoint's module names below
  // `vision_backbone` (encoder_name). Default: the released DINOv2 + SigLIP at 224.
  std::vector<EncoderConfig> encoders = default_encoders();
  ProjectorConfig projector;

  size_t num_encoders() const { return encoders.size(); }
  int64_t image_size() const { return encoders.at(0).image_size(); }
  int64_t tokens_per_image() const { return encoders.at(0).tokens(); }
  int64_t in_channels() const;  // the channels of all encoders together (6 for the released models)
  int64_t vision_dim() const;   // the encoders' widths summed

  // The checkpoint module name of encoder `index`: Prismatic's "featurizer" and
  // "fused_featurizer" for the first two, "featurizer_{index}" after them.
  static std::string encoder_name(size_t index);
  // DINOv2-L/14-reg4 + SigLIP-SO400M/14 at `image_size`.
  static std::vector<EncoderConfig> default_encoders(int64_t image_size = 224);

  // From config.json: one encoder per `timm_model_ids` entry (two for a fused backbone), with its
  // `image_sizes` entry, through the encoder registry; the projector gets the default widths.
  static VisionTowerConfig from_vla_config(const io::VlaConfig& config);
  // This configuration with the sizes shown by a checkpoint's tensors (prefixes
  // `vision_backbone.<name>` per encoder, EncoderParams::fit, and `projector`). For the ViT:
  // width, depth (stop_after_block keeps its distance from the last block), MLP width, patch
  // size, registers, image size. The head count is not visible in shapes and is kept: a
  // test-sized checkpoint with other head counts needs them set here (the table's 16 heads
  // otherwise).
  VisionTowerConfig fitted_to(const io::StateDict& state) const;
  // Throws Error when the parts do not fit together (token counts, image sizes, widths).
  const VisionTowerConfig& validate() const;
};

class VisionTower;

class VisionTowerImpl : public torch::nn::Module {
 public:
  VisionTowerImpl(const VisionTowerConfig& config, const torch::TensorOptions& options);

  // Raw fused features. pixels (N, C, H, W) for one sample of N cameras, or (B, N, C, H, W), C =
  // config.in_channels() (6: DINOv2 + SigLIP normalized): -> (B, N * tokens_per_image,
  // vision_dim) in the module's dtype, cameras in input order.
  torch::Tensor features(const torch::Tensor& pixels) const;
  // Visual embeddings of fused features: projector(features) -> (B, N * tokens_per_image,
  // llm_dim), tapped as "output".
  torch::Tensor project(const torch::Tensor& features) const;
  // project(features(pixels)).
  torch::Tensor forward(const torch::Tensor& pixels) const;

  size_t num_encoders() const { return config.num_encoders(); }

  // Named intermediates (core/tap.h), relative to the tower: each encoder's under its checkpoint
  // name ("featurizer.blocks.22", "fused_featurizer.output"), then "features" and "output".
  void set_tap(Tap tap);

  // Builds the tower a checkpoint holds: VisionTowerConfig::from_vla_config(config).fitted_to(state).
  static VisionTower load(const io::StateDict& state, const io::VlaConfig& config,
                          const torch::TensorOptions& options = {}, const io::StageHook& after_stage = {});
  // Builds `config` and loads it name for name. Every missing, unexpected (outside the
  // unused parts of the encoders) or mis-shaped key of every part is reported in one Error.
  // `after_stage` runs on each encoder block as soon as it is loaded, with its path under the
  // backbone ("featurizer.blocks.3"; io::LoadOptions::after_stage).
  static VisionTower load(const io::StateDict& state, const VisionTowerConfig& config,
                          const torch::TensorOptions& options = {}, const io::StageHook& after_stage = {});
  // What `load` would report, without writing anything.
  io::LoadReport check(const io::StateDict& state) const;

  const VisionTowerConfig config;
  VisionBackbone vision_backbone;
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
                          const torch::TensorOptions& options = {}, const io::StageHook& after_stage = {}) {
    return VisionTowerImpl::load(state, config, options, after_stage);
  }
  static VisionTower load(const io::StateDict& state, const VisionTowerConfig& config,
                          const torch::TensorOptions& options = {}, const io::StageHook& after_stage = {}) {
    return VisionTowerImpl::load(state, config, options, after_stage);
  }
};

}  // namespace focusvla::vision
