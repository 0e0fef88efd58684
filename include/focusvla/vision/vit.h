#pragma once
// Vision Transformer with timm's semantics and parameter names (timm `VisionTransformer`,
// timm/models/vision_transformer.py), run the way Prismatic / VLA-Adapter runs its encoders:
// `featurizer.forward = get_intermediate_layers(n={len(blocks) - 2})`, i.e. the patch tokens of
// the second-to-last block, no final norm (SPEC section 4).
//
//   pixels (B, 3, H, W) -> patch_embed (conv p x p, stride p) -> (B, P, D)
//   -> + pos_embed (patches only when no_embed_class), prefix [cls, registers] -> (B, T, D)
//   -> blocks 0 .. stop_after_block:  x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x)))
//   -> drop the prefix tokens -> (B, P, D)
//
// It is the vision tower's built-in ImageEncoder kind (image_encoder.h): VitEncoderParams and
// vit_encoder_registration() take the timm ids "vit_*" that VitConfig::from_timm_id knows.
//
// Only the blocks that run are constructed. Parameter names equal timm's (`cls_token`,
// `reg_token`, `pos_embed`, `patch_embed.proj.weight`, `blocks.{i}.attn.qkv.weight`,
// `blocks.{i}.ls1.scale_factor`, ...), so `named_parameters()` is the checkpoint map; the keys of
// the parts never run (later blocks, `norm.*`, `attn_pool.*`, ...) are listed by
// `unused_prefixes()` for io::LoadOptions::ignored_prefixes. Prismatic stores LayerScale's
// `gamma` as `scale_factor`.

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/core/tap.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/nn/layers.h"
#include "focusvla/vision/image_encoder.h"

namespace focusvla::vision {

struct VitConfig {
  int64_t image_size = 224;
  int64_t patch_size = 14;
  int64_t in_channels = 3;
  int64_t dim = 1024;               // embed_dim
  int64_t depth = 24;               // blocks in the checkpoint
  int64_t num_heads = 16;
  int64_t mlp_hidden = 4096;        // int(dim * mlp_ratio)
  bool class_token = true;
  int64_t reg_tokens = 0;
  bool layer_scale = false;         // init_values set in timm: ls1 / ls2 exist
  bool no_embed_class = false;      // pos_embed covers the patch tokens only
  bool qkv_bias = true;
  double norm_eps = 1e-6;
  int64_t stop_after_block = 22;    // run blocks 0 .. stop_after_block (Prismatic: depth - 2)
  Normalization normalization;      // timm's pretrained mean / std of the model

  int64_t grid() const { return image_size / patch_size; }
  int64_t num_patches() const { return grid() * grid(); }
  int64_t num_prefix_tokens() const { return (class_token ? 1 : 0) + reg_tokens; }
  int64_t num_pos_tokens() const { return no_embed_class ? num_patches() : num_patches() + num_prefix_tokens(); }
  int64_t num_tokens() const { return num_patches() + num_prefix_tokens(); }
  int64_t head_dim() const { return dim / num_heads; }
  int64_t blocks_run() const { return stop_after_block + 1; }

  // Throws Error naming `what` and the field when the numbers do not make a ViT; returns *this.
  const VitConfig& validate(const std::string& what) const;
  // Keys (relative to the encoder's prefix) of a full timm checkpoint that this configuration
  // does not construct: blocks after stop_after_block, `norm.`, `fc_norm.`, `attn_pool.`, `head.`.
  std::vector<std::string> unused_prefixes() const;
  // This configuration with the sizes shown by a checkpoint's tensors under `prefix`: width,
  // depth (stop_after_block keeps its distance from the last block), MLP width, patch size,
  // registers, image size. The head count is not visible in shapes and is kept.
  VitConfig fitted_to(const io::StateDict& state, const std::string& prefix) const;

  // The encoders VLA-Adapter uses, as timm defines them (timm/models/vision_transformer.py,
  // `vit_large_patch14_reg4_dinov2` and `vit_so400m_patch14_siglip_224`), created by Prismatic
  // with img_size = `image_size` and num_classes = 0.
  static VitConfig dinov2_vit_large_reg4(int64_t image_size = 224);
  static VitConfig siglip_so400m(int64_t image_size = 224);
  // Looks a timm model id (with or without its pretrained tag, e.g. ".lvd142m") up in the table of
  // known encoders; throws Error listing the known ids otherwise.
  static VitConfig from_timm_id(const std::string& timm_model_id, int64_t image_size = 224);
};

// timm `PatchEmbed.proj`: a p x p convolution with stride p. Registered empty (loading fills it).
class PatchConvImpl : public torch::nn::Module {
 public:
  PatchConvImpl(int64_t in_channels, int64_t out_channels, int64_t patch, const torch::TensorOptions& options)
      : weight(register_parameter("weight", torch::empty({out_channels, in_channels, patch, patch}, options), false)),
        bias(register_parameter("bias", torch::empty({out_channels}, options), false)),
        patch_(patch) {}
  torch::Tensor forward(const torch::Tensor& x) const { return torch::conv2d(x, weight, bias, {patch_, patch_}); }
  // The same products as forward(), as one GEMM: (B, C, H, W) -> (B, H/p * W/p, D) over the
  // flattened p x p patches (rows past the last whole patch dropped, as the convolution does).
  // bf16 / fp16 inputs are multiplied in fp32 and rounded once. Summed in another order than
  // the reference's convolution kernel, so not bit for bit; on a CPU ~13x faster than the bf16
  // convolution (oneDNN's bf16 p = 14 kernel: 39 ms for two 224 images, this GEMM ~3 ms; fp32
  // convolutions are as fast as the GEMM).
  torch::Tensor forward_gemm(const torch::Tensor& x) const;

  torch::Tensor weight;
  torch::Tensor bias;

 private:
  int64_t patch_;
};
TORCH_MODULE(PatchConv);

// (B, C, H, W) -> (B, H/p * W/p, D), patches in row-major grid order.
class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(const VitConfig& config, const torch::TensorOptions& options)
      : proj(register_module("proj", PatchConv(config.in_channels, config.dim, config.patch_size, options))) {}
  torch::Tensor forward(const torch::Tensor& pixels) const {
    return as_gemm ? proj->forward_gemm(pixels) : proj->forward(pixels).flatten(2).transpose(1, 2);
  }

  PatchConv proj;
  // PatchConv::forward_gemm instead of the convolution. Off by default: the convolution is the
  // reference's kernel (bit for bit in bf16); quantized policies, not bit for bit anyway, turn it
  // on (docs/QUANTIZATION.md).
  bool as_gemm = false;
};
TORCH_MODULE(PatchEmbed);

// Multi-head self-attention with one fused qkv projection (timm `Attention`).
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const VitConfig& config, const torch::TensorOptions& options)
      : qkv(register_module("qkv", nn::Linear(config.dim, 3 * config.dim, config.qkv_bias, options))),
        proj(register_module("proj", nn::Linear(config.dim, config.dim, true, options))),
        num_heads_(config.num_heads) {}

  torch::Tensor forward(const torch::Tensor& x) const {
    const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2);
    // (B, T, 3D) -> (3, B, heads, T, head_dim)
    const auto q_k_v =
        qkv->forward(x).view({batch, tokens, 3, num_heads_, dim / num_heads_}).permute({2, 0, 3, 1, 4});
    const auto heads = pad_keys_to > 1 ? attend_padded(q_k_v[0], q_k_v[1], q_k_v[2])
                                       : torch::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2]);
    return proj->forward(heads.transpose(1, 2).reshape({batch, tokens, dim}));
  }

  nn::Linear qkv;
  nn::Linear proj;
  // When > 1: keys and values padded to a multiple of this many positions, the padding masked
  // out (-inf), before SDPA. The same attention in exact arithmetic, but not bit for bit (the
  // kernel blocks the sum differently), so off by default; use_fast_kernels turns it on where it
  // pays (docs/QUANTIZATION.md).
  int64_t pad_keys_to = 0;

 private:
  // SDPA over keys / values padded as pad_keys_to says (q, k, v: (B, heads, T, head_dim)).
  torch::Tensor attend_padded(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) const;

  int64_t num_heads_;
};
TORCH_MODULE(Attention);

// Switches every ViT module under `root` to the kernels that are faster than the reference's
// but not bit for bit with it, for the dtype and device its weights have now: PatchEmbed::as_gemm;
// Attention::pad_keys_to = 16 for bf16 on a CPU with native bf16, where LibTorch's flash kernel
// runs DINOv2's 261 keys (256 patches + cls + 4 registers) ~1.8x slower than 272 masked ones (in
// fp32 no faster, with AVX2 slower: measured, docs/SPEED.md); a VisionBackbone's encoders side by
// side (VisionBackboneImpl::side_by_side), also for bf16 on a CPU with native bf16 (with AVX2,
// emulated, it measured no gain). Quantized policies run them (policy/quantize_plan);
// returns how many modules it switched.
int64_t use_fast_kernels(torch::nn::Module& root);

// fc1 -> exact (erf) GELU -> fc2 (timm `Mlp`).
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t hidden, const torch::TensorOptions& options)
      : fc1(register_module("fc1", nn::Linear(dim, hidden, true, options))),
        fc2(register_module("fc2", nn::Linear(hidden, dim, true, options))) {}
  torch::Tensor forward(const torch::Tensor& x) const {
    return fc2->forward(torch::gelu(fc1->forward(x)));
  }

  nn::Linear fc1;
  nn::Linear fc2;
};
TORCH_MODULE(Mlp);

// Per-channel scale of a residual branch (timm `LayerScale`; `gamma` saved as `scale_factor`).
class LayerScaleImpl : public torch::nn::Module {
 public:
  LayerScaleImpl(int64_t dim, const torch::TensorOptions& options)
      : scale_factor(register_parameter("scale_factor", torch::empty({dim}, options), false)) {}
  torch::Tensor forward(const torch::Tensor& x) const { return x * scale_factor; }

  torch::Tensor scale_factor;
};
TORCH_MODULE(LayerScale);

// Pre-norm transformer block (timm `Block`); ls1 / ls2 are empty holders without LayerScale.
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const VitConfig& config, const torch::TensorOptions& options)
      : norm1(register_module("norm1", nn::LayerNorm(config.dim, config.norm_eps, options))),
        attn(register_module("attn", Attention(config, options))),
        ls1(config.layer_scale ? register_module("ls1", LayerScale(config.dim, options)) : LayerScale(nullptr)),
        norm2(register_module("norm2", nn::LayerNorm(config.dim, config.norm_eps, options))),
        mlp(register_module("mlp", Mlp(config.dim, config.mlp_hidden, options))),
        ls2(config.layer_scale ? register_module("ls2", LayerScale(config.dim, options)) : LayerScale(nullptr)) {}

  // Returns a new tensor; `x` is left as it is.
  torch::Tensor forward(const torch::Tensor& x) const {
    torch::Tensor h = residual(x, attn->forward(norm1->forward(x)), ls1);
    return residual(h, mlp->forward(norm2->forward(h)), ls2);
  }

  nn::LayerNorm norm1;
  Attention attn;
  LayerScale ls1;
  nn::LayerNorm norm2;
  Mlp mlp;
  LayerScale ls2;

 private:
  // x + ls(branch) into a fresh tensor, rounding where timm rounds (the scaled branch first: in
  // bf16 a fused x + branch * gamma would differ from timm by an ulp here and there).
  static torch::Tensor residual(const torch::Tensor& x, const torch::Tensor& branch, const LayerScale& ls) {
    return ls ? x + ls->forward(branch) : x + branch;
  }
};
TORCH_MODULE(Block);

// Named intermediates (set_tap, core/tap.h): "patch_embed", "tokens" (after the position
// embedding and prefix), "blocks.{i}", "output".
class VisionTransformerImpl : public ImageEncoder {
 public:
  // `name`: the module name in the checkpoint below `vision_backbone` (see ImageEncoder).
  VisionTransformerImpl(const VitConfig& config, const torch::TensorOptions& options, std::string name = "");

  // pixels (B, in_channels, image_size, image_size), any floating dtype -> patch features
  // (B, num_patches, dim) of block `stop_after_block`, in the module's dtype.
  torch::Tensor forward(const torch::Tensor& pixels) const override;
  // forward() in steps (ImageEncoder): the patch and position embeddings, each block, the slice.
  int64_t steps() const override { return static_cast<int64_t>(block_list_.size()); }
  torch::Tensor start(const torch::Tensor& pixels) const override;
  torch::Tensor step(const torch::Tensor& x, int64_t index) const override;
  torch::Tensor finish(const torch::Tensor& x) const override;

  int64_t dim() const override { return config.dim; }
  int64_t tokens() const override { return config.num_patches(); }
  int64_t image_size() const override { return config.image_size; }
  int64_t in_channels() const override { return config.in_channels; }
  Normalization normalization() const override { return config.normalization; }

  const VitConfig config;
  torch::Tensor cls_token;  // (1, 1, D), undefined without class token
  torch::Tensor reg_token;  // (1, R, D), undefined without registers
  torch::Tensor pos_embed;  // (1, num_pos_tokens, D)
  PatchEmbed patch_embed;
  torch::nn::ModuleList blocks;  // children "0", "1", ... -> `blocks.{i}.*`

 private:
  // timm `_pos_embed`: position embedding and the prefix tokens [cls, registers].
  torch::Tensor embed_positions(const torch::Tensor& patches) const;

  std::vector<Block> block_list_;  // the same modules as `blocks`, typed
};
TORCH_MODULE(VisionTransformer);

// The timm ViT as an encoder kind of the vision tower.
class VitEncoderParams final : public EncoderParams {
 public:
  explicit VitEncoderParams(VitConfig config) : vit(std::move(config)) {}

  std::unique_ptr<EncoderParams> clone() const override { return std::make_unique<VitEncoderParams>(*this); }
  std::string kind() const override { return "timm ViT"; }
  int64_t dim() const override { return vit.dim; }
  int64_t tokens() const override { return vit.num_patches(); }
  int64_t image_size() const override { return vit.image_size; }
  int64_t in_channels() const override { return vit.in_channels; }
  Normalization normalization() const override { return vit.normalization; }
  void validate(const std::string& what) const override { vit.validate(what); }
  void fit(const io::StateDict& state, const std::string& prefix) override { vit = vit.fitted_to(state, prefix); }
  std::vector<std::string> unused_prefixes() const override { return vit.unused_prefixes(); }
  std::shared_ptr<ImageEncoder> build(const std::string& name, const torch::TensorOptions& options) const override {
    return std::make_shared<VisionTransformerImpl>(vit, options, name);
  }

  VitConfig vit;
};

// The registration of the timm ViT: ids "vit_*", configured by VitConfig::from_timm_id.
EncoderRegistration vit_encoder_registration();

// The ViT configuration of a tower's encoder; throws Error when that encoder is not a timm ViT.
inline VitConfig& vit_config(EncoderConfig& encoder) { return encoder.params_as<VitEncoderParams>().vit; }
inline const VitConfig& vit_config(const EncoderConfig& encoder) { return encoder.params_as<VitEncoderParams>().vit; }

// The io::LoadOptions one ViT loads with: its unused parts are ignored.
io::LoadOptions encoder_load_options(const VitConfig& config);

// ---------------------------------------------------------------------------------------------

inline VisionTransformerImpl::VisionTransformerImpl(const VitConfig& config_, const torch::TensorOptions& options,
                                                    std::string name)
    : ImageEncoder(std::move(name)),
      config(config_.validate("VisionTransformer")),
      cls_token(config.class_token ? register_parameter("cls_token", torch::empty({1, 1, config.dim}, options), false)
                                   : torch::Tensor()),
      reg_token(config.reg_tokens > 0
                    ? register_parameter("reg_token", torch::empty({1, config.reg_tokens, config.dim}, options), false)
                    : torch::Tensor()),
      pos_embed(register_parameter("pos_embed", torch::empty({1, config.num_pos_tokens(), config.dim}, options), false)),
      patch_embed(register_module("patch_embed", PatchEmbed(config, options))),
      blocks(register_module("blocks", torch::nn::ModuleList())) {
  for (int64_t i = 0; i < config.blocks_run(); ++i) {
    block_list_.push_back(Block(config, options));
    blocks->push_back(block_list_.back());
  }
}

inline torch::Tensor VisionTransformerImpl::embed_positions(const torch::Tensor& patches) const {
  const int64_t batch = patches.size(0);
  std::vector<torch::Tensor> prefix;
  if (cls_token.defined()) prefix.push_back(cls_token.expand({batch, -1, -1}));
  if (reg_token.defined()) prefix.push_back(reg_token.expand({batch, -1, -1}));
  if (config.no_embed_class) {  // DINOv2: position embedding on the patches, then the prefix
    torch::Tensor x = patches + pos_embed;
    if (prefix.empty()) return x;
    prefix.push_back(x);
    return torch::cat(prefix, 1);
  }
  if (prefix.empty()) return patches + pos_embed;  // SigLIP
  prefix.push_back(patches);
  return torch::cat(prefix, 1) + pos_embed;
}

inline torch::Tensor VisionTransformerImpl::start(const torch::Tensor& pixels) const {
  const c10::InferenceMode inference;
  const auto& c = config;
  check(pixels.dim() == 4 && pixels.size(1) == c.in_channels && pixels.size(2) == c.image_size &&
            pixels.size(3) == c.image_size,
        "VisionTransformer", "expected pixels of shape [B, " + std::to_string(c.in_channels) + ", " +
                                 std::to_string(c.image_size) + ", " + std::to_string(c.image_size) + "], got " +
                                 c10::str(pixels.sizes()));
  torch::Tensor x = patch_embed->forward(pixels.to(pos_embed.device(), pos_embed.scalar_type()));
  tap("patch_embed", x);
  x = embed_positions(x);
  tap("tokens", x);
  return x;
}

inline torch::Tensor VisionTransformerImpl::step(const torch::Tensor& x, int64_t index) const {
  const c10::InferenceMode inference;
  if (index < 0 || index >= steps())  // the message only when it fails: a step runs per block
    throw Error("VisionTransformer: step " + std::to_string(index) + " of " + std::to_string(steps()));
  torch::Tensor out = block_list_[static_cast<size_t>(index)]->forward(x);
  tap(indexed("blocks", index), out);
  return out;
}

inline torch::Tensor VisionTransformerImpl::finish(const torch::Tensor& x) const {
  const c10::InferenceMode inference;
  torch::Tensor out = x.slice(1, config.num_prefix_tokens());
  tap("output", out);
  return out;
}

inline torch::Tensor VisionTransformerImpl::forward(const torch::Tensor& pixels) const {
  torch::Tensor x = start(pixels);
  for (int64_t i = 0; i < steps(); ++i) x = step(x, i);
  return finish(x);
}

}  // namespace focusvla::vision
