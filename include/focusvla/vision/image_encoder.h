#pragma once
// One image encoder of the vision backbone behind one interface, its configuration, and the
// registry that turns config.json's `timm_model_ids` into encoders.
//
//   ImageEncoder    the module: pixels (M, C, S, S) -> (M, tokens, dim); the backbone runs a list
//                   of them, each on its own channels, and concatenates their features
//   EncoderParams   what one kind of encoder knows before it is built: sizes, normalization, how a
//                   checkpoint's shapes refine them, the keys it does not use, how to build it
//   EncoderConfig   one entry of VisionTowerConfig::encoders: checkpoint module name, timm model id
//                   and the kind's EncoderParams (copied deeply with the config)
//   registry        EncoderRegistration per kind, chosen by the longest matching timm-id prefix
//
// The timm ViT (vit.h: DINOv2 reg4, SigLIP) is the built-in kind. A new kind of encoder is one
// new file (an EncoderParams subclass, an ImageEncoder subclass and a function returning its
// EncoderRegistration) plus one line in src/vision/image_encoder.cpp's list of built-in kinds,
// or a register_encoder() call by the application.

#include <torch/torch.h>

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/core/tap.h"
#include "focusvla/io/state_dict.h"

namespace focusvla::vision {

// Per-channel (x - mean) / std on x = u8 / 255, RGB.
struct Normalization {
  std::array<float, 3> mean{0.0f, 0.0f, 0.0f};
  std::array<float, 3> std{1.0f, 1.0f, 1.0f};
};

class ImageEncoder : public torch::nn::Module {
 public:
  // `name`: the encoder's module name in the checkpoint, below `vision_backbone`
  // ("featurizer", "fused_featurizer"); empty for an encoder built on its own.
  explicit ImageEncoder(std::string name = "") : checkpoint_name_(std::move(name)) {}

  // pixels (M, in_channels(), image_size(), image_size()), any floating dtype -> features
  // (M, tokens(), dim()) in the module's dtype.
  virtual torch::Tensor forward(const torch::Tensor& pixels) const = 0;

  // forward() in steps, so that VisionBackboneImpl can move the rest of a slower encoder onto all
  // threads once a faster one is done: forward(pixels) == finish(step(... step(start(pixels), 0)
  // ..., steps() - 1)). The ViT's steps are its blocks; the default is one step, forward itself.
  virtual int64_t steps() const { return 1; }
  virtual torch::Tensor start(const torch::Tensor& pixels) const { return pixels; }
  virtual torch::Tensor step(const torch::Tensor& x, int64_t index) const { return (void)index, forward(x); }
  virtual torch::Tensor finish(const torch::Tensor& x) const { return x; }

  virtual int64_t dim() const = 0;         // feature width
  virtual int64_t tokens() const = 0;      // tokens per image
  virtual int64_t image_size() const = 0;  // square input side
  virtual int64_t in_channels() const { return 3; }
  // The normalization the encoder was trained with (the reference pipeline uses the checkpoint's
  // preprocessor_config.json, which may round these).
  virtual Normalization normalization() const = 0;

  const std::string& checkpoint_name() const { return checkpoint_name_; }

  // Named intermediates (core/tap.h), names relative to the encoder ("blocks.22", "output").
  void set_tap(Tap tap) { tap_ = std::move(tap); }
  bool has_tap() const { return static_cast<bool>(tap_); }

 protected:
  void tap(const std::string& name, const torch::Tensor& value) const {
    if (tap_) tap_(name, value);
  }

 private:
  std::string checkpoint_name_;
  Tap tap_;
};

class EncoderParams {
 public:
  virtual ~EncoderParams() = default;
  virtual std::unique_ptr<EncoderParams> clone() const = 0;
  virtual std::string kind() const = 0;  // for messages, e.g. "timm ViT"

  virtual int64_t dim() const = 0;
  virtual int64_t tokens() const = 0;
  virtual int64_t image_size() const = 0;
  virtual int64_t in_channels() const { return 3; }
  virtual Normalization normalization() const = 0;

  // Throws Error naming `what` and the field when the numbers do not make an encoder.
  virtual void validate(const std::string& what) const = 0;
  // Refines the sizes from a checkpoint's tensors under `prefix` (e.g.
  // "vision_backbone.featurizer"); parts whose tensors are absent keep their values.
  virtual void fit(const io::StateDict& state, const std::string& prefix) { (void)state, (void)prefix; }
  // Keys (relative to the encoder's prefix) a checkpoint may hold that the encoder does not
  // construct (heads never run, later blocks): ignored when loading.
  virtual std::vector<std::string> unused_prefixes() const { return {}; }
  // The module, parameters registered empty (loading fills them), named `name`.
  virtual std::shared_ptr<ImageEncoder> build(const std::string& name, const torch::TensorOptions& options) const = 0;
};

struct EncoderConfig {
  EncoderConfig(std::string name, std::string timm_model_id, std::unique_ptr<EncoderParams> params);
  EncoderConfig(const EncoderConfig& other);
  EncoderConfig& operator=(const EncoderConfig& other);
  EncoderConfig(EncoderConfig&&) noexcept = default;
  EncoderConfig& operator=(EncoderConfig&&) noexcept = default;
  ~EncoderConfig() = default;

  // Through the registry: the kind whose prefix matches `timm_model_id` (the longest), configured
  // for `image_size`. Throws Error listing the registered prefixes when none matches.
  static EncoderConfig from_timm_id(const std::string& timm_model_id, int64_t image_size, std::string name);

  std::string name;           // module name below `vision_backbone`
  std::string timm_model_id;  // as config.json names it (empty for hand-made configurations)

  const EncoderParams& params() const { return *params_; }
  EncoderParams& params() { return *params_; }
  // The kind's own parameters; throws Error naming the encoder when they are not a `T`.
  template <typename T>
  T& params_as() {
    return const_cast<T&>(static_cast<const EncoderConfig&>(*this).params_as<T>());
  }
  template <typename T>
  const T& params_as() const;

  int64_t dim() const { return params_->dim(); }
  int64_t tokens() const { return params_->tokens(); }
  int64_t image_size() const { return params_->image_size(); }
  int64_t in_channels() const { return params_->in_channels(); }
  Normalization normalization() const { return params_->normalization(); }
  // The io::LoadOptions the encoder loads with: its unused parts are ignored.
  io::LoadOptions load_options() const;

 private:
  std::unique_ptr<EncoderParams> params_;
};

// One kind of encoder: the timm model ids it builds (by prefix) and how it configures one.
struct EncoderRegistration {
  std::string kind;                           // e.g. "timm ViT"
  std::vector<std::string> timm_id_prefixes;  // e.g. {"vit_"}
  // timm model id (as config.json names it) and image size -> parameters; throws Error for an id
  // of its prefix that it does not know.
  std::function<std::unique_ptr<EncoderParams>(const std::string& timm_model_id, int64_t image_size)> configure;
};

// Adds a kind (replacing a registration of the same `kind`); thread-safe. The built-in kinds are
// registered from the start.
void register_encoder(EncoderRegistration registration);
// The registered kinds, built-in first.
std::vector<std::string> registered_encoder_kinds();

// ---------------------------------------------------------------------------------------------

template <typename T>
const T& EncoderConfig::params_as() const {
  const auto* p = dynamic_cast<const T*>(params_.get());
  if (p == nullptr)
    throw Error("vision encoder '" + name + "' (" + timm_model_id + "): its parameters are " + params_->kind() +
                ", not the requested kind");
  return *p;
}

}  // namespace focusvla::vision
