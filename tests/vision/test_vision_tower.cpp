// VisionTower and Projector: built from config.json + the checkpoint's shapes, loaded name for
// name, they reproduce Prismatic's fused features and projector output (timm + torch with the
// same weights), at test sizes in fp32 and bf16 and at the full released size in fp32.

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "focusvla/core/error.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/nn/matmul.h"
#include "focusvla/vision/vision_tower.h"
#include "tensor_util.h"
#include "test_util.h"

namespace focusvla::vision {
namespace {

using focusvla::testing::data_path;
using focusvla::testing::expect_error;
using focusvla::testing::relative_error;

struct Case {
  io::StateDict model;
  io::StateDict io;
  io::VlaConfig config;
};

Case read_case(const std::string& dir) {
  return {io::StateDict::from_safetensors(data_path("vision", dir + "/model.safetensors")),
          io::StateDict::from_safetensors(data_path("vision", dir + "/io.safetensors")),
          io::VlaConfig::load(data_path("vision", dir + "/config.json"))};
}

// A copy of `state` without `drop`, with `replacement` under that name when defined.
io::StateDict edited(const io::StateDict& state, const std::string& drop, const torch::Tensor& replacement = {}) {
  io::StateDict out;
  for (const auto& key : state.keys())
    if (key != drop) out.insert(key, state.at(key), "edited.safetensors");
  if (replacement.defined()) out.insert(drop, replacement, "edited.safetensors");
  return out;
}

void expect_tower_matches(const VisionTower& tower, const io::StateDict& io, const std::string& suffix,
                          double tolerance, const std::string& label) {
  const auto pixels = io.at("pixels");  // (B, N, 6, 224, 224)
  const auto features = tower->features(pixels);
  const auto output = tower->forward(pixels);
  const double err_features = relative_error(features, io.at("features" + suffix));
  const double err_output = relative_error(output, io.at("output" + suffix));
  std::cout << "[ measured ] " << label << " relative error: fused features " << err_features << ", projector output "
            << err_output << "\n";
  EXPECT_LE(err_features, tolerance);
  EXPECT_LE(err_output, tolerance);
}

TEST(VisionTower, BuildsFromConfigAndShapes) {
  const Case c = read_case("tiny16");
  const auto config = VisionTowerConfig::from_vla_config(c.config).fitted_to(c.model);
  ASSERT_EQ(config.num_encoders(), 2u);
  EXPECT_EQ(config.encoders[0].name, "featurizer");
  EXPECT_EQ(config.encoders[1].name, "fused_featurizer");
  const VitConfig& dino = vit_config(config.encoders[0]);
  const VitConfig& siglip = vit_config(config.encoders[1]);
  EXPECT_EQ(dino.dim, 128);
  EXPECT_EQ(dino.depth, 4);
  EXPECT_EQ(dino.stop_after_block, 2);
  EXPECT_EQ(dino.mlp_hidden, 512);
  EXPECT_EQ(dino.reg_tokens, 4);
  EXPECT_TRUE(dino.layer_scale);
  EXPECT_EQ(siglip.dim, 144);
  EXPECT_EQ(siglip.stop_after_block, 2);
  EXPECT_EQ(siglip.mlp_hidden, 538);
  EXPECT_EQ(config.in_channels(), 6);
  EXPECT_EQ(config.projector.vision_dim, 272);
  EXPECT_EQ(config.projector.hidden, 1088);
  EXPECT_EQ(config.projector.llm_dim, 112);
  EXPECT_EQ(config.tokens_per_image(), 256);

  // Without a checkpoint: the released sizes.
  const auto full = VisionTowerConfig::from_vla_config(c.config);
  EXPECT_EQ(full.vision_dim(), 2176);
  EXPECT_EQ(full.projector.hidden, 8704);
  EXPECT_EQ(full.projector.llm_dim, 896);
  EXPECT_EQ(vit_config(full.encoders[0]).stop_after_block, 22);
  EXPECT_EQ(vit_config(full.encoders[1]).stop_after_block, 25);
  // The encoders' own (timm pretrained) normalization: ImageNet for DINOv2, 0.5 for SigLIP.
  EXPECT_FLOAT_EQ(full.encoders[0].normalization().mean[0], 0.485f);
  EXPECT_FLOAT_EQ(full.encoders[1].normalization().std[2], 0.5f);

  // Parameter names are the checkpoint's.
  const auto tower = VisionTower::load(c.model, c.config);
  for (const auto& p : tower->named_parameters()) EXPECT_TRUE(c.model.contains(p.key())) << p.key();
}

TEST(VisionTower, Fp32MatchesPrismatic) {
  const Case c = read_case("tiny16");
  const auto tower = VisionTower::load(c.model, c.config, torch::TensorOptions().dtype(torch::kFloat32));
  expect_tower_matches(tower, c.io, "", 1e-4, "tiny16 fp32");
}

TEST(VisionTower, Bf16MatchesPrismaticBf16) {
  const Case c = read_case("tiny16");
  const auto tower = VisionTower::load(c.model, c.config, torch::TensorOptions().dtype(torch::kBFloat16));
  EXPECT_EQ(tower->forward(c.io.at("pixels")).scalar_type(), torch::kBFloat16);
  expect_tower_matches(tower, c.io, "_bf16", 2e-2, "tiny16 bf16");
}

// The fp32-matmul path for bf16 on CPUs without native bf16: the same products, other rounding
// order; still within the bf16 tolerance of the bf16 reference.
TEST(VisionTower, Bf16WithFp32MatmulsMatchesPrismaticBf16) {
  const Case c = read_case("tiny16");
  auto tower = VisionTower::load(c.model, c.config, torch::TensorOptions().dtype(torch::kBFloat16));
  const auto native = tower->forward(c.io.at("pixels"));
  nn::set_cpu_bf16_matmul(*tower, nn::CpuBf16Matmul::kFloat32);
  EXPECT_EQ(tower->forward(c.io.at("pixels")).scalar_type(), torch::kBFloat16);
  expect_tower_matches(tower, c.io, "_bf16", 2e-2, "tiny16 bf16 (fp32 matmuls)");
  nn::set_cpu_bf16_matmul(*tower, nn::CpuBf16Matmul::kNative);
  EXPECT_TRUE(torch::equal(tower->forward(c.io.at("pixels")), native));
}

// make_checkpoint.py's tiny sizes use 4 heads, which shapes cannot show: set them in the config.
TEST(VisionTower, ExplicitHeadCountFromBf16Weights) {
  const Case c = read_case("tiny4");
  auto config = VisionTowerConfig::from_vla_config(c.config).fitted_to(c.model);
  for (auto& encoder : config.encoders) vit_config(encoder).num_heads = 4;
  expect_tower_matches(VisionTower::load(c.model, config), c.io, "", 1e-4, "tiny4 fp32 (bf16 weights)");
  expect_tower_matches(VisionTower::load(c.model, config, torch::TensorOptions().dtype(torch::kBFloat16)), c.io,
                       "_bf16", 2e-2, "tiny4 bf16");
}

// One sample may come as (N, 6, H, W); every sample of a batch equals its own run.
TEST(VisionTower, BatchEqualsPerSample) {
  const Case c = read_case("tiny16");
  const auto tower = VisionTower::load(c.model, c.config);
  const auto pixels = c.io.at("pixels");
  const auto batched = tower->forward(pixels);
  ASSERT_EQ(batched.sizes(), (std::vector<int64_t>{2, 512, 112}));
  for (int64_t b = 0; b < 2; ++b) {
    const auto single = tower->forward(pixels[b]);
    ASSERT_EQ(single.sizes(), (std::vector<int64_t>{1, 512, 112}));
    EXPECT_LE(relative_error(single[0], batched[b]), 1e-6);
  }
  // Camera order is token order: camera 1 alone gives tokens 256..511.
  const auto camera1 = tower->features(pixels[0].slice(0, 1, 2));
  EXPECT_LE(relative_error(camera1[0], tower->features(pixels)[0].slice(0, 256, 512)), 1e-6);
}

// A quantized policy's tower (int8 layers, vision::use_fast_kernels) on as many threads as
// encoders runs them side by side, one thread each: the features of the sequential run, bit for
// bit (integer sums; the float operations are per row or per element).
TEST(VisionTower, Int8EncodersSideBySideEqualTheSequentialRun) {
  const Case c = read_case("tiny16");
  auto tower = VisionTower::load(c.model, c.config, torch::TensorOptions().dtype(torch::kBFloat16));
  auto& backbone = *tower->vision_backbone;
  ASSERT_GT(nn::set_matmul_mode(backbone, nn::MatmulMode::kInt8), 0);
  EXPECT_GT(use_fast_kernels(backbone), 0);
  EXPECT_EQ(backbone.side_by_side, nn::cpu_has_native_bf16());  // where it measured faster
  backbone.side_by_side = true;
  const auto pixels = c.io.at("pixels");
  const int threads = at::get_num_threads();
  torch::set_num_threads(2);
  ASSERT_TRUE(backbone.runs_side_by_side(pixels));
  const auto side_by_side = tower->features(pixels);
  backbone.side_by_side = false;
  EXPECT_TRUE(torch::equal(side_by_side, tower->features(pixels)));
  torch::set_num_threads(threads);
}

TEST(VisionTower, TapsNameTheIntermediates) {
  const Case c = read_case("tiny16");
  auto tower = VisionTower::load(c.model, c.config);
  std::vector<std::string> names;
  torch::Tensor siglip;
  tower->set_tap([&](const std::string& name, const torch::Tensor& value) {
    names.push_back(name);
    if (name == "fused_featurizer.output") siglip = value.clone();
  });
  tower->forward(c.io.at("pixels"));
  // Relative to the tower, layer-qualified, each encoder under its checkpoint name, in run order.
  const std::vector<std::string> expected = {
      "featurizer.patch_embed",       "featurizer.tokens",       "featurizer.blocks.0",
      "featurizer.blocks.1",          "featurizer.blocks.2",     "featurizer.output",
      "fused_featurizer.patch_embed", "fused_featurizer.tokens", "fused_featurizer.blocks.0",
      "fused_featurizer.blocks.1",    "fused_featurizer.blocks.2", "fused_featurizer.output",
      "features",                     "output"};
  EXPECT_EQ(names, expected);
  EXPECT_LE(relative_error(siglip, c.io.at("siglip")), 1e-4);
}

// The released architecture: DINOv2-L/14-reg4 (blocks 0..22) + SigLIP-SO400M/14 (blocks 0..25) +
// projector 2176 -> 8704 -> 896 -> 896, on a real LIBERO image through Prismatic's processor.
TEST(VisionTower, FullSizeFp32MatchesPrismatic) {
  const Case c = read_case("full");
  const auto tower = VisionTower::load(c.model, c.config, torch::TensorOptions().dtype(torch::kFloat32));
  EXPECT_EQ(tower->config.encoders[0].dim(), 1024);
  EXPECT_EQ(tower->vision_backbone->encoder_as<VisionTransformerImpl>(0)->blocks->size(), 23u);
  EXPECT_EQ(tower->vision_backbone->encoder_as<VisionTransformerImpl>(1)->blocks->size(), 26u);
  expect_tower_matches(tower, c.io, "", 1e-4, "full-size fp32");
}

TEST(VisionTowerErrors, BadPixels) {
  const Case c = read_case("tiny16");
  const auto tower = VisionTower::load(c.model, c.config);
  expect_error([&] { tower->forward(torch::zeros({2, 5, 224, 224})); },
                     {"expected 6 channels", "[2, 5, 224, 224]"});
  expect_error([&] { tower->forward(torch::zeros({0, 6, 224, 224})); }, {"no camera images (N = 0)"});
  expect_error([&] { tower->forward(torch::zeros({1, 0, 6, 224, 224})); }, {"no camera images (N = 0)"});
  expect_error([&] { tower->forward(torch::zeros({1, 6, 224, 224}, torch::kUInt8)); },
                     {"floating point", "Byte"});
  expect_error([&] { tower->forward(torch::zeros({1, 6, 256, 256})); }, {"224x224", "[1, 6, 256, 256]"});
  expect_error([&] { tower->forward(torch::zeros({6, 224, 224})); }, {"[N, 6, H, W]", "[6, 224, 224]"});
}

TEST(VisionTowerErrors, MissingKeyIsNamed) {
  const Case c = read_case("tiny16");
  const std::string key = "vision_backbone.fused_featurizer.blocks.1.mlp.fc2.bias";
  expect_error([&] { VisionTower::load(edited(c.model, key), c.config); },
                     {"loading the vision tower", "missing", key});
  expect_error([&] { VisionTower::load(edited(c.model, "projector.fc3.weight"), c.config); },
                     {"missing", "projector.fc3.weight"});
}

TEST(VisionTowerErrors, MisShapedKeyNamesExpectedAndFound) {
  const Case c = read_case("tiny16");
  const std::string key = "vision_backbone.featurizer.blocks.2.attn.qkv.weight";
  expect_error([&] { VisionTower::load(edited(c.model, key, torch::zeros({10, 128})), c.config); },
                     {key + ": expected [384, 128], found [10, 128]"});
  const std::string fused = "vision_backbone.fused_featurizer.pos_embed";
  expect_error([&] { VisionTower::load(edited(c.model, fused, torch::zeros({1, 255, 144})), c.config); },
                     {fused + ": expected [1, 256, 144], found [1, 255, 144]"});
  // All problems at once, not just the first.
  auto two = edited(edited(c.model, key, torch::zeros({10, 128})), "projector.fc2.bias", torch::zeros({7}));
  expect_error([&] { VisionTower::load(two, c.config); }, {key, "projector.fc2.bias: expected [112], found [7]"});
}

TEST(VisionTowerErrors, NotAVisionCheckpoint) {
  io::StateDict state;
  state.insert("language_model.model.embed_tokens.weight", torch::zeros({4, 4}), "llm.safetensors");
  const Case c = read_case("tiny16");
  expect_error([&] { VisionTower::load(state, c.config); },
                     {"no 'vision_backbone.*' tensors", "vision_backbone.featurizer.cls_token"});
  io::VlaConfig single = c.config;
  single.use_fused_vision_backbone = false;
  expect_error([&] { VisionTowerConfig::from_vla_config(single); }, {"use_fused_vision_backbone"});
  io::VlaConfig unknown = c.config;
  unknown.timm_model_ids[1] = "vit_huge_patch14_clip_224";
  expect_error([&] { VisionTowerConfig::from_vla_config(unknown); }, {"vit_huge_patch14_clip_224"});
}

TEST(Projector, MatchesTorchWithWidthsFromTheCheckpoint) {
  const Case c = read_case("tiny16");
  const ProjectorConfig config = ProjectorImpl::config_from(c.model);
  EXPECT_EQ(config.vision_dim, 272);
  EXPECT_EQ(config.hidden, 1088);
  EXPECT_EQ(config.llm_dim, 112);
  Projector projector(config, torch::TensorOptions());
  io::load_module(*projector, c.model, "projector");
  const double err = relative_error(projector->forward(c.io.at("features")), c.io.at("output"));
  std::cout << "[ measured ] projector fp32 relative error " << err << "\n";
  EXPECT_LE(err, 1e-5);
  std::vector<std::string> names;
  for (const auto& p : projector->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight",
                                             "fc3.bias"}));
}

TEST(Projector, FullSizeWidths) {
  const Case c = read_case("full");
  const ProjectorConfig config = ProjectorImpl::config_from(c.model);
  EXPECT_EQ(config.vision_dim, 2176);
  EXPECT_EQ(config.hidden, 8704);
  EXPECT_EQ(config.llm_dim, 896);
}

}  // namespace
}  // namespace focusvla::vision
