// VisionTransformer: the timm encoders (DINOv2-L/14-reg4, SigLIP-SO400M/14 arguments) with the same
// random weights give the same patch features as timm's get_intermediate_layers path that
// Prismatic runs, parameter names are timm's, and loading checks what it uses.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "focusvla/core/error.h"
#include "focusvla/io/json_file.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/nn/matmul.h"
#include "focusvla/vision/vision_tower.h"
#include "focusvla/vision/vit.h"
#include "tensor_util.h"
#include "test_util.h"

namespace focusvla::vision {
namespace {

using focusvla::testing::data_path;
using focusvla::testing::expect_error;
using focusvla::testing::relative_error;

// The tiny16 encoders as gen_vision.py builds them.
VitConfig tiny_dino() {
  VitConfig c = VitConfig::dinov2_vit_large_reg4();
  c.dim = 128, c.depth = 4, c.mlp_hidden = 512, c.stop_after_block = 2;
  return c;
}
VitConfig tiny_siglip() {
  VitConfig c = VitConfig::siglip_so400m();
  c.dim = 144, c.depth = 4, c.mlp_hidden = 538, c.stop_after_block = 2;  // int(144 * 3.7362)
  return c;
}

VisionTransformer load_encoder(const io::StateDict& state, const VitConfig& config, const std::string& prefix,
                               torch::Dtype dtype) {
  VisionTransformer vit(config, torch::TensorOptions().dtype(dtype));
  io::load_module(*vit, state, prefix, encoder_load_options(config));
  return vit;
}

// (B, N, 6, H, W) -> (B*N, 3, H, W) for the DINOv2 (first) or SigLIP (second) half.
torch::Tensor half(const torch::Tensor& pixels, bool second) {
  const auto flat = pixels.flatten(0, 1);
  return second ? flat.slice(1, 3) : flat.slice(1, 0, 3);
}

TEST(VitConfig, TableFollowsTimm) {
  const VitConfig dino = VitConfig::from_timm_id("vit_large_patch14_reg4_dinov2.lvd142m");
  EXPECT_EQ(dino.dim, 1024);
  EXPECT_EQ(dino.depth, 24);
  EXPECT_EQ(dino.num_heads, 16);
  EXPECT_EQ(dino.mlp_hidden, 4096);
  EXPECT_TRUE(dino.class_token);
  EXPECT_EQ(dino.reg_tokens, 4);
  EXPECT_TRUE(dino.layer_scale);
  EXPECT_TRUE(dino.no_embed_class);
  EXPECT_EQ(dino.stop_after_block, 22);
  EXPECT_EQ(dino.num_patches(), 256);
  EXPECT_EQ(dino.num_pos_tokens(), 256);
  EXPECT_EQ(dino.num_tokens(), 261);
  EXPECT_EQ(dino.norm_eps, 1e-6);

  const VitConfig siglip = VitConfig::from_timm_id("vit_so400m_patch14_siglip_224");
  EXPECT_EQ(siglip.dim, 1152);
  EXPECT_EQ(siglip.depth, 27);
  EXPECT_EQ(siglip.mlp_hidden, 4304);
  EXPECT_FALSE(siglip.class_token);
  EXPECT_EQ(siglip.reg_tokens, 0);
  EXPECT_FALSE(siglip.layer_scale);
  EXPECT_EQ(siglip.stop_after_block, 25);
  EXPECT_EQ(siglip.num_pos_tokens(), 256);

  // The tag is optional; an unknown id names the known ones.
  EXPECT_EQ(VitConfig::from_timm_id("vit_large_patch14_reg4_dinov2").dim, 1024);
  expect_error([] { VitConfig::from_timm_id("vit_base_patch16_224.augreg_in21k"); },
                   {"vit_base_patch16_224.augreg_in21k", "not a known vision encoder", "vit_so400m_patch14_siglip_224"});
}

TEST(VitConfig, ValidationNamesTheField) {
  VitConfig c = VitConfig::dinov2_vit_large_reg4();
  c.num_heads = 7;
  expect_error([&] { VisionTransformer(c, torch::TensorOptions()); }, {"dim 1024", "num_heads 7"});
  c = VitConfig::dinov2_vit_large_reg4();
  c.stop_after_block = 24;
  expect_error([&] { c.validate("featurizer"); }, {"featurizer", "stop_after_block 24"});
  c = VitConfig::siglip_so400m(230);
  expect_error([&] { c.validate("fused_featurizer"); }, {"image_size 230", "patch_size 14"});
}

// Our parameter names and shapes at full size are exactly timm's (with LayerScale's gamma saved as
// scale_factor); everything timm has beyond them is under the ignored prefixes.
TEST(VitNames, FullSizeNamesAreTimmNames) {
  const auto keys = io::read_json_file(data_path("vision", "full/keys.json"));
  for (const auto& [prefix, config] :
       {std::make_pair(std::string("vision_backbone.featurizer"), VitConfig::dinov2_vit_large_reg4()),
        std::make_pair(std::string("vision_backbone.fused_featurizer"), VitConfig::siglip_so400m())}) {
    SCOPED_TRACE(prefix);
    // torch::empty does not touch the pages: a full-size module costs no memory here.
    const VisionTransformer vit(config, torch::TensorOptions());
    std::set<std::string> ours;
    for (const auto& p : vit->named_parameters()) {
      const std::string key = prefix + "." + p.key();
      ours.insert(key);
      ASSERT_TRUE(keys.contains(key)) << key << " is not a timm name";
      EXPECT_EQ(p.value().sizes().vec(), keys[key].get<std::vector<int64_t>>()) << key;
    }
    EXPECT_TRUE(vit->named_buffers().is_empty());
    size_t timm_count = 0;
    for (const auto& item : keys.items()) {
      if (item.key().rfind(prefix + ".", 0) != 0) continue;
      ++timm_count;
      if (ours.count(item.key())) continue;
      const std::string rel = item.key().substr(prefix.size() + 1);
      bool ignored = false;
      for (const auto& p : config.unused_prefixes()) ignored = ignored || rel.rfind(p, 0) == 0;
      EXPECT_TRUE(ignored) << item.key() << " is neither constructed nor ignored";
    }
    EXPECT_LT(ours.size(), timm_count);
    EXPECT_EQ(vit->blocks->size(), static_cast<size_t>(config.depth - 1));
  }
}

void expect_encoders_match(const std::string& dir, VitConfig dino, VitConfig siglip, torch::Dtype dtype,
                           const std::string& suffix, double tolerance, bool fast_kernels = false) {
  const auto state = io::StateDict::from_safetensors(data_path("vision", dir + "/model.safetensors"));
  const auto io = io::StateDict::from_safetensors(data_path("vision", dir + "/io.safetensors"));
  const auto pixels = io.at("pixels");
  auto dino_vit = load_encoder(state, dino, "vision_backbone.featurizer", dtype);
  auto siglip_vit = load_encoder(state, siglip, "vision_backbone.fused_featurizer", dtype);
  if (fast_kernels) {
    // The patch embedding, and the attentions where padding pays (bf16, native bf16 CPU).
    const bool pad = dtype == torch::kBFloat16 && nn::cpu_has_native_bf16();
    EXPECT_EQ(vision::use_fast_kernels(*dino_vit), 1 + (pad ? dino.stop_after_block + 1 : 0));
    vision::use_fast_kernels(*siglip_vit);
  }
  const auto a = dino_vit->forward(half(pixels, false));
  const auto b = siglip_vit->forward(half(pixels, true));
  EXPECT_EQ(a.scalar_type(), dtype);
  const double err_dino = relative_error(a, io.at("dino" + suffix));
  const double err_siglip = relative_error(b, io.at("siglip" + suffix));
  std::cout << "[ measured ] " << dir << " " << c10::toString(dtype) << (fast_kernels ? " fast kernels" : "")
            << " relative error: DINOv2 " << err_dino
            << ", SigLIP " << err_siglip << "\n";
  EXPECT_LE(err_dino, tolerance);
  EXPECT_LE(err_siglip, tolerance);
}

TEST(VitTiny, Fp32MatchesTimm) {
  expect_encoders_match("tiny16", tiny_dino(), tiny_siglip(), torch::kFloat32, "", 1e-4);
}

TEST(VitTiny, Bf16MatchesTimmBf16) {
  expect_encoders_match("tiny16", tiny_dino(), tiny_siglip(), torch::kBFloat16, "_bf16", 2e-2);
}

// The fast kernels (what quantized policies run: the patch embedding as one GEMM, attention over
// padded keys) against timm, at the tolerances of the reference's kernels.
TEST(VitTiny, FastKernelsMatchTimm) {
  expect_encoders_match("tiny16", tiny_dino(), tiny_siglip(), torch::kFloat32, "", 1e-4, true);
  expect_encoders_match("tiny16", tiny_dino(), tiny_siglip(), torch::kBFloat16, "_bf16", 2e-2, true);
}

// Attention over keys padded to a multiple (the padding masked out) is the same attention: in
// float64 equal to SDPA over the real keys up to the summation order, for key counts below, at
// and above a multiple.
TEST(VitAttention, PaddedKeysEqualTheUnpadded) {
  VitConfig config = tiny_dino();
  auto options = torch::TensorOptions().dtype(torch::kFloat64);
  vision::Attention attention(config, options);
  for (auto* p : {&attention->qkv->weight, &attention->qkv->bias, &attention->proj->weight, &attention->proj->bias})
    if (p->defined()) p->normal_(0, 0.2);
  for (const int64_t tokens : {5, 16, 21, 33}) {
    const auto x = torch::randn({2, tokens, config.dim}, options);
    attention->pad_keys_to = 0;
    const auto expected = attention->forward(x);
    attention->pad_keys_to = 16;
    const auto actual = attention->forward(x);
    ASSERT_EQ(actual.sizes(), expected.sizes()) << tokens;
    EXPECT_LE((actual - expected).abs().max().item<double>(), 1e-12 * expected.abs().max().item<double>()) << tokens;
  }
}

// forward_gemm is the convolution's arithmetic: in float64 equal to torch::conv2d up to the
// summation order, including images that are not a whole number of patches (the rest dropped).
TEST(VitPatchGemm, EqualsTheConvolution) {
  for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{28, 42}, {31, 45}, {14, 14}}) {
    vision::PatchConv conv(3, 5, 14, torch::TensorOptions().dtype(torch::kFloat64));
    conv->weight.normal_();
    conv->bias.normal_();
    const auto x = torch::randn({2, 3, h, w}, torch::kFloat64);
    const auto expected = conv->forward(x).flatten(2).transpose(1, 2);
    const auto actual = conv->forward_gemm(x);
    ASSERT_EQ(actual.sizes(), expected.sizes()) << h << "x" << w;
    EXPECT_LE((actual - expected).abs().max().item<double>(), 1e-12 * expected.abs().max().item<double>()) << h << "x" << w;
  }
  vision::PatchConv conv(3, 5, 14, torch::TensorOptions());
  expect_error([&] { conv->forward_gemm(torch::zeros({2, 4, 28, 28})); }, {"patch_embed", "[2, 4, 28, 28]"});
}

TEST(VitTiny, FourHeadsMatchTimm) {
  VitConfig dino = VitConfig::dinov2_vit_large_reg4(), siglip = VitConfig::siglip_so400m();
  dino.dim = 64, dino.depth = 3, dino.num_heads = 4, dino.mlp_hidden = 256, dino.stop_after_block = 1;
  siglip.dim = 72, siglip.depth = 3, siglip.num_heads = 4, siglip.mlp_hidden = 269, siglip.stop_after_block = 1;
  expect_encoders_match("tiny4", dino, siglip, torch::kFloat32, "", 1e-4);
}

TEST(VitTap, NamedIntermediatesMatchTimm) {
  const auto state = io::StateDict::from_safetensors(data_path("vision", "tiny16/model.safetensors"));
  const auto io = io::StateDict::from_safetensors(data_path("vision", "tiny16/io.safetensors"));
  auto vit = load_encoder(state, tiny_dino(), "vision_backbone.featurizer", torch::kFloat32);
  std::vector<std::string> names;
  torch::Tensor block0, output;
  vit->set_tap([&](const std::string& name, const torch::Tensor& value) {
    names.push_back(name);
    if (name == "blocks.0") block0 = value.clone();
    if (name == "output") output = value.clone();
  });
  const auto pixels = half(io.at("pixels"), false).slice(0, 0, 1);
  const auto out = vit->forward(pixels);
  EXPECT_EQ(names, (std::vector<std::string>{"patch_embed", "tokens", "blocks.0", "blocks.1", "blocks.2", "output"}));
  EXPECT_LE(relative_error(block0, io.at("dino_block0")), 1e-5);
  EXPECT_TRUE(torch::equal(output, out));
}

TEST(VitForward, WrongPixelShapeIsAnError) {
  const VisionTransformer vit(tiny_dino(), torch::TensorOptions());
  expect_error([&] { vit->forward(torch::zeros({1, 4, 224, 224})); }, {"VisionTransformer", "[1, 4, 224, 224]"});
  expect_error([&] { vit->forward(torch::zeros({1, 3, 112, 112})); }, {"[B, 3, 224, 224]", "[1, 3, 112, 112]"});
  expect_error([&] { vit->forward(torch::zeros({3, 224, 224})); }, {"[3, 224, 224]"});
}

// Loading checks every used key; the unused blocks and heads may be anything.
TEST(VitLoad, UsedKeysAreCheckedUnusedIgnored) {
  const auto state = io::StateDict::from_safetensors(data_path("vision", "tiny16/model.safetensors"));
  const std::string prefix = "vision_backbone.featurizer";
  auto rebuilt = [&](const std::string& drop, const torch::Tensor& replacement) {
    io::StateDict out;
    for (const auto& key : state.keys())
      if (key != drop) out.insert(key, state.at(key), "edited.safetensors");
    if (replacement.defined()) out.insert(drop, replacement, "edited.safetensors");
    return out;
  };
  const VitConfig config = tiny_dino();
  auto load = [&](const io::StateDict& s) {
    VisionTransformer vit(config, torch::TensorOptions());
    io::load_module(*vit, s, prefix, encoder_load_options(config));
  };
  // Block 3 is not run (stop_after_block 2): a wrong shape there does not matter.
  load(rebuilt(prefix + ".blocks.3.mlp.fc1.weight", torch::zeros({3, 3})));
  load(rebuilt(prefix + ".norm.weight", torch::Tensor()));
  // A used key missing or mis-shaped is reported with its name and shapes.
  expect_error([&] { load(rebuilt(prefix + ".blocks.2.attn.qkv.weight", torch::Tensor())); },
                   {"missing", "vision_backbone.featurizer.blocks.2.attn.qkv.weight"});
  expect_error([&] { load(rebuilt(prefix + ".blocks.1.ls2.scale_factor", torch::zeros({127}))); },
                   {"vision_backbone.featurizer.blocks.1.ls2.scale_factor: expected [128], found [127]"});
  expect_error([&] { load(rebuilt(prefix + ".reg_token", torch::zeros({1, 5, 128}))); },
                   {"vision_backbone.featurizer.reg_token: expected [1, 4, 128], found [1, 5, 128]"});
  expect_error([&] { load(rebuilt(prefix + ".blocks.0.attn.extra", torch::zeros({1}))); },
                   {"unexpected", "vision_backbone.featurizer.blocks.0.attn.extra"});
}

}  // namespace
}  // namespace focusvla::vision
