#include "focusvla/vision/vit.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "focusvla/core/error.h"
#include "focusvla/nn/matmul.h"
#include "focusvla/vision/vision_tower.h"

namespace focusvla::vision {
namespace {

std::string strip_pretrained_tag(const std::string& id) {
  const auto dot = id.find('.');
  return dot == std::string::npos ? id : id.substr(0, dot);
}

// The tensor `prefix.name` when present with `dims` dimensions, else an undefined tensor.
torch::Tensor find(const io::StateDict& state, const std::string& prefix, const std::string& name, int64_t dims) {
  const std::string key = prefix + "." + name;
  if (!state.contains(key)) return {};
  const torch::Tensor& t = state.at(key);
  return t.dim() == dims ? t : torch::Tensor();
}

// timm/data/constants.py
constexpr Normalization kImagenetDefault{{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
constexpr Normalization kImagenetInception{{0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};

void require_positive(int64_t value, const std::string& what, const char* field) {
  check(value > 0, what, std::string(field) + " must be positive, got " + std::to_string(value));
}

}  // namespace

torch::Tensor PatchConvImpl::forward_gemm(const torch::Tensor& x) const {
  check(x.dim() == 4 && x.size(1) == weight.size(1), "patch_embed",
        "expected pixels (B, " + std::to_string(weight.size(1)) + ", H, W), got " + io::shape_string(x.sizes()));
  const int64_t b = x.size(0), c = x.size(1), gh = x.size(2) / patch_, gw = x.size(3) / patch_;
  // (B, C, gh, p, gw, p) -> (B, gh, gw, C, p, p): each row one patch in the weight's (C, p, p) order.
  const torch::Tensor patches = x.narrow(2, 0, gh * patch_)
                                    .narrow(3, 0, gw * patch_)
                                    .reshape({b, c, gh, patch_, gw, patch_})
                                    .permute({0, 2, 4, 1, 3, 5})
                                    .reshape({b * gh * gw, c * patch_ * patch_});
  // bf16 / fp16 inputs: products and sums in fp32, rounded once (pixels carry more precision than
  // bf16 keeps, and this GEMM is small: ~1 ms in fp32 for two 224 images).
  const auto dtype = x.scalar_type();
  const bool widen = dtype == torch::kBFloat16 || dtype == torch::kHalf;
  const auto as = [&](const torch::Tensor& t) { return widen ? t.to(torch::kFloat32) : t; };
  const torch::Tensor out = torch::addmm(as(bias), as(patches), as(weight).reshape({weight.size(0), -1}).t());
  return out.to(dtype).view({b, gh * gw, weight.size(0)});
}

const VitConfig& VitConfig::validate(const std::string& what) const {
  require_positive(image_size, what, "image_size");
  require_positive(patch_size, what, "patch_size");
  require_positive(in_channels, what, "in_channels");
  require_positive(dim, what, "dim");
  require_positive(depth, what, "depth");
  require_positive(num_heads, what, "num_heads");
  require_positive(mlp_hidden, what, "mlp_hidden");
  check(reg_tokens >= 0, what, "reg_tokens must not be negative, got " + std::to_string(reg_tokens));
  check(image_size % patch_size == 0, what,
        "image_size " + std::to_string(image_size) + " is not a multiple of patch_size " + std::to_string(patch_size));
  check(dim % num_heads == 0, what,
        "dim " + std::to_string(dim) + " is not divisible by num_heads " + std::to_string(num_heads));
  check(stop_after_block >= 0 && stop_after_block < depth, what,
        "stop_after_block " + std::to_string(stop_after_block) + " is outside the " + std::to_string(depth) +
            " blocks");
  check(norm_eps > 0, what, "norm_eps must be positive");
  return *this;
}

std::vector<std::string> VitConfig::unused_prefixes() const {
  std::vector<std::string> out;
  for (int64_t i = blocks_run(); i < depth; ++i) out.push_back("blocks." + std::to_string(i) + ".");
  for (const char* head : {"norm.", "fc_norm.", "attn_pool.", "head."}) out.emplace_back(head);
  return out;
}

VitConfig VitConfig::fitted_to(const io::StateDict& state, const std::string& prefix) const {
  VitConfig c = *this;
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

torch::Tensor AttentionImpl::attend_padded(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) const {
  const int64_t keys = k.size(2);
  const int64_t padded = (keys + pad_keys_to - 1) / pad_keys_to * pad_keys_to;
  if (padded == keys) return torch::scaled_dot_product_attention(q, k, v);
  // The rows appended as zeros, only they filled (a zero pad fills the whole tensor, then copies).
  const auto with_padding = [&](const torch::Tensor& t) {
    auto out = torch::empty({t.size(0), t.size(1), padded, t.size(3)}, t.options());
    out.narrow(2, 0, keys).copy_(t);
    out.narrow(2, keys, padded - keys).zero_();
    return out;
  };
  // Additive mask over the key positions: 0 for the real ones, -inf for the padding.
  auto mask = torch::zeros({1, 1, 1, padded}, q.options());
  mask.narrow(-1, keys, padded - keys).fill_(-std::numeric_limits<float>::infinity());
  return torch::scaled_dot_product_attention(q, with_padding(k), with_padding(v), mask);
}

int64_t use_fast_kernels(torch::nn::Module& root) {
  constexpr int64_t kKeyMultiple = 16;  // 261 -> 272 keys: the measured fast case (docs/SPEED.md)
  // Where the padded keys and the side-by-side encoders measured faster: bf16 on native bf16.
  const auto native_bf16 = [](const torch::Tensor& w) {
    return w.defined() && w.is_cpu() && w.scalar_type() == torch::kBFloat16 && nn::cpu_has_native_bf16();
  };
  int64_t count = 0;
  for (const auto& module : root.modules()) {
    if (auto* backbone = dynamic_cast<VisionBackboneImpl*>(module.get())) {
      const auto params = backbone->parameters();
      if (!params.empty() && native_bf16(params.front())) {
        backbone->side_by_side = true;
        ++count;
      }
    } else if (auto* embed = dynamic_cast<PatchEmbedImpl*>(module.get())) {
      embed->as_gemm = true;
      ++count;
    } else if (auto* attention = dynamic_cast<AttentionImpl*>(module.get())) {
      if (native_bf16(attention->qkv->weight)) {
        attention->pad_keys_to = kKeyMultiple;
        ++count;
      }
    }
  }
  return count;
}

// timm/models/vision_transformer.py, `vit_large_patch14_reg4_dinov2`: patch 14, 1024 wide, 24 blocks,
// 16 heads, mlp_ratio 4, init_values 1e-5 (LayerScale), 4 registers, no_embed_class; pretrained
// cfg `.lvd142m`: ImageNet mean / std.
VitConfig VitConfig::dinov2_vit_large_reg4(int64_t image_size) {
  VitConfig c;
  c.image_size = image_size;
  c.patch_size = 14;
  c.dim = 1024;
  c.depth = 24;
  c.num_heads = 16;
  c.mlp_hidden = 4096;
  c.class_token = true;
  c.reg_tokens = 4;
  c.layer_scale = true;
  c.no_embed_class = true;
  c.stop_after_block = c.depth - 2;
  c.normalization = kImagenetDefault;
  return c;
}

// timm/models/vision_transformer.py, `vit_so400m_patch14_siglip_224`: patch 14, 1152 wide, 27 blocks,
// 16 heads, mlp_ratio 3.7362 (int(1152 * 3.7362) = 4304), no class token, global_pool "map";
// pretrained cfg `.webli`: timm's default 0.5 / 0.5.
VitConfig VitConfig::siglip_so400m(int64_t image_size) {
  VitConfig c;
  c.image_size = image_size;
  c.patch_size = 14;
  c.dim = 1152;
  c.depth = 27;
  c.num_heads = 16;
  c.mlp_hidden = 4304;
  c.class_token = false;
  c.reg_tokens = 0;
  c.layer_scale = false;
  c.no_embed_class = false;
  c.stop_after_block = c.depth - 2;
  c.normalization = kImagenetInception;
  return c;
}

VitConfig VitConfig::from_timm_id(const std::string& timm_model_id, int64_t image_size) {
  // The encoders of Prismatic's `dinosiglip-vit-so-224px` / `-384px` backbones.
  static const std::map<std::string, VitConfig (*)(int64_t)> table = {
      {"vit_large_patch14_reg4_dinov2", &VitConfig::dinov2_vit_large_reg4},
      {"vit_so400m_patch14_siglip_224", &VitConfig::siglip_so400m},
      {"vit_so400m_patch14_siglip_384", &VitConfig::siglip_so400m},
  };
  const auto it = table.find(strip_pretrained_tag(timm_model_id));
  if (it == table.end()) {
    std::string known;
    for (const auto& kv : table) known += (known.empty() ? "" : ", ") + kv.first;
    throw Error("timm model id '" + timm_model_id + "': not a known vision encoder (known: " + known + ")");
  }
  return it->second(image_size).validate("timm model '" + timm_model_id + "'");
}

io::LoadOptions encoder_load_options(const VitConfig& config) {
  io::LoadOptions options;
  options.ignored_prefixes = config.unused_prefixes();
  return options;
}

EncoderRegistration vit_encoder_registration() {
  EncoderRegistration r;
  r.kind = "timm ViT";
  r.timm_id_prefixes = {"vit_"};
  r.configure = [](const std::string& timm_model_id, int64_t image_size) -> std::unique_ptr<EncoderParams> {
    return std::make_unique<VitEncoderParams>(VitConfig::from_timm_id(timm_model_id, image_size));
  };
  return r;
}

}  // namespace focusvla::vision
