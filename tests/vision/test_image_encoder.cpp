// The vision tower holds any number of encoders behind one interface: a one-encoder tower
// (config.json with a single timm id) builds, stages and equals its encoder; a non-ViT encoder
// defined and registered here builds a tower next to a ViT and loads from a checkpoint; the
// registry names what it knows.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/json_file.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/vision/image_encoder.h"
#include "focusvla/vision/preprocess.h"
#include "focusvla/vision/vision_tower.h"
#include "tensor_util.h"
#include "test_util.h"

namespace focusvla::vision {
namespace {

using focusvla::testing::asset_path;
using focusvla::testing::data_path;
using focusvla::testing::expect_error;
using focusvla::testing::relative_error;

io::StateDict read_state(const std::string& name) {
  return io::StateDict::from_safetensors(data_path("vision", "tiny16/" + name));
}

// The entries of `state` under `prefix.`, names kept.
void copy_prefix(const io::StateDict& state, const std::string& prefix, io::StateDict& into) {
  for (const auto& key : state.keys())
    if (key.rfind(prefix + ".", 0) == 0) into.insert(key, state.at(key), "tiny16/model.safetensors");
}

// Random projector weights for features of width `vision_dim` (4x hidden, 112 out).
void add_projector(io::StateDict& state, int64_t vision_dim) {
  torch::manual_seed(7);
  const int64_t hidden = 4 * vision_dim, out = 112;
  state.insert("projector.fc1.weight", torch::randn({hidden, vision_dim}) * 0.05, "test");
  state.insert("projector.fc1.bias", torch::randn({hidden}) * 0.05, "test");
  state.insert("projector.fc2.weight", torch::randn({out, hidden}) * 0.05, "test");
  state.insert("projector.fc2.bias", torch::randn({out}) * 0.05, "test");
  state.insert("projector.fc3.weight", torch::randn({out, out}) * 0.05, "test");
  state.insert("projector.fc3.bias", torch::randn({out}) * 0.05, "test");
}

// (B*N, P, D) per-camera reference -> (B, N*P, D), as the tower lays out tokens.
torch::Tensor per_sample(const torch::Tensor& per_camera, int64_t batch) {
  return per_camera.reshape({batch, -1, per_camera.size(2)});
}

// ---------------------------------------------------------------------------------------------
// One encoder.

// config.json of tiny16 with only the DINOv2 encoder, as a non-fused checkpoint writes it.
io::VlaConfig one_encoder_config() {
  nlohmann::json j = io::read_json_file(data_path("vision", "tiny16/config.json"));
  j["timm_model_ids"] = nlohmann::json::array({j["timm_model_ids"][0]});
  j["image_sizes"] = nlohmann::json::array({224});
  j["use_fused_vision_backbone"] = false;
  return io::VlaConfig::from_json(j, "one-encoder config.json");
}

TEST(VisionEncoders, OneEncoderTowerBuildsStagesAndEqualsItsEncoder) {
  const io::StateDict model = read_state("model.safetensors");
  const io::StateDict io = read_state("io.safetensors");
  io::StateDict state;
  copy_prefix(model, "vision_backbone.featurizer", state);
  add_projector(state, 128);
  const io::VlaConfig config = one_encoder_config();
  ASSERT_EQ(config.timm_model_ids.size(), 1u);

  const auto tower = VisionTower::load(state, config);
  ASSERT_EQ(tower->num_encoders(), 1u);
  EXPECT_EQ(tower->config.encoders[0].name, "featurizer");
  EXPECT_EQ(tower->config.in_channels(), 3);
  EXPECT_EQ(tower->config.vision_dim(), 128);
  EXPECT_EQ(tower->config.projector.vision_dim, 128);
  for (const auto& p : tower->named_parameters()) EXPECT_TRUE(state.contains(p.key())) << p.key();

  // Features are the encoder's own output (bit for bit) and timm's within the fp32 tolerance.
  const auto pixels = io.at("pixels").slice(2, 0, 3);  // (2, 2, 3, 224, 224): the DINOv2 channels
  const auto features = tower->features(pixels);
  ASSERT_EQ(features.sizes(), (std::vector<int64_t>{2, 512, 128}));
  const auto own = tower->vision_backbone->encoder(0)->forward(pixels.flatten(0, 1));
  EXPECT_TRUE(torch::equal(features, per_sample(own, 2)));
  const double err = relative_error(features, per_sample(io.at("dino"), 2));
  std::cout << "[ measured ] one-encoder tower vs timm DINOv2: relative error " << err << "\n";
  EXPECT_LE(err, 1e-4);
  EXPECT_TRUE(torch::equal(tower->forward(pixels), tower->project(features)));
  EXPECT_TRUE(torch::equal(tower->project(features), tower->projector->forward(features)));
  expect_error([&] { tower->features(io.at("pixels")); }, {"expected 3 channels", "featurizer normalized"});

  // The preprocessor of a one-backbone preprocessor_config.json stages {B, N, 1, S, S, 3}; its
  // normalization is the two-backbone one's first three channels, bit for bit.
  io::PreprocessorConfig pre_config =
      io::PreprocessorConfig::load(asset_path("vla-adapter-reference/preprocessor_config.json"));
  const ImagePreprocessor both(pre_config);
  pre_config.backbones.resize(1);
  const ImagePreprocessor one(pre_config);
  EXPECT_EQ(one.num_encoders(), 1);
  EXPECT_EQ(one.channels(), 3);
  EXPECT_EQ(one.staging_shape(2, 3), (std::vector<int64_t>{2, 3, 1, 224, 224, 3}));
  EXPECT_EQ(both.staging_shape(2, 3), (std::vector<int64_t>{2, 3, 2, 224, 224, 3}));
  torch::manual_seed(3);
  const std::vector<torch::Tensor> images = {torch::randint(0, 256, {224, 224, 3}, torch::kUInt8),
                                             torch::randint(0, 256, {256, 200, 3}, torch::kUInt8)};
  auto staged = torch::full(one.staging_shape(1, 2), 7, torch::kUInt8);
  one.stage(images, staged[0]);
  const auto normalized = one.normalize(staged);  // (1, 2, 3, 224, 224)
  ASSERT_EQ(normalized.sizes(), (std::vector<int64_t>{1, 2, 3, 224, 224}));
  EXPECT_TRUE(torch::equal(normalized[0], both(images).slice(1, 0, 3)));
  EXPECT_TRUE(torch::equal(normalized[0], one(images)));
  EXPECT_EQ(tower->features(normalized).sizes(), (std::vector<int64_t>{1, 512, 128}));
}

TEST(VisionEncoders, ConfigListFollowsTimmModelIds) {
  const VisionTowerConfig one = VisionTowerConfig::from_vla_config(one_encoder_config());
  ASSERT_EQ(one.num_encoders(), 1u);
  EXPECT_EQ(one.encoders[0].timm_model_id, "vit_large_patch14_reg4_dinov2.lvd142m");
  EXPECT_EQ(one.vision_dim(), 1024);
  EXPECT_EQ(one.projector.hidden, 4096);
  // Copies are deep: changing one leaves the other.
  VisionTowerConfig copy = one;
  vit_config(copy.encoders[0]).dim = 64;
  EXPECT_EQ(one.vision_dim(), 1024);
  EXPECT_EQ(copy.vision_dim(), 64);
  EXPECT_EQ(VisionTowerConfig::encoder_name(0), "featurizer");
  EXPECT_EQ(VisionTowerConfig::encoder_name(1), "fused_featurizer");
  EXPECT_EQ(VisionTowerConfig().num_encoders(), 2u);
  EXPECT_EQ(VisionTowerConfig().vision_dim(), 2176);
  VisionTowerConfig empty;
  empty.encoders.clear();
  expect_error([&] { empty.validate(); }, {"vision tower", "no encoders"});
}

// ---------------------------------------------------------------------------------------------
// A new kind of encoder, defined entirely in this file: the mean of each patch x patch cell of
// the image, projected by a linear layer: pixels (M, 3, S, S) -> (M, (S / patch)^2, width).

struct PoolParams final : EncoderParams {
  int64_t patch = 14;
  int64_t width = 8;
  int64_t size = 224;
  int64_t steps = 1;  // > 1: a SteppedPoolEncoder

  std::unique_ptr<EncoderParams> clone() const override { return std::make_unique<PoolParams>(*this); }
  std::string kind() const override { return "toy pool"; }
  int64_t dim() const override { return width; }
  int64_t tokens() const override { return (size / patch) * (size / patch); }
  int64_t image_size() const override { return size; }
  Normalization normalization() const override { return {{0.25f, 0.5f, 0.75f}, {0.5f, 0.25f, 0.125f}}; }
  void validate(const std::string& what) const override {
    check(patch > 0 && width > 0 && size > 0 && size % patch == 0, what, "bad toy pool sizes");
  }
  void fit(const io::StateDict& state, const std::string& prefix) override {
    if (state.contains(prefix + ".proj.weight")) width = state.at(prefix + ".proj.weight").size(0);
  }
  std::shared_ptr<ImageEncoder> build(const std::string& name, const torch::TensorOptions& options) const override;
};

// weight (out, in), bias (out): registered empty, loading fills them.
struct ProjImpl : torch::nn::Module {
  ProjImpl(int64_t in, int64_t out, const torch::TensorOptions& options)
      : weight(register_parameter("weight", torch::empty({out, in}, options), false)),
        bias(register_parameter("bias", torch::empty({out}, options), false)) {}
  torch::Tensor weight, bias;
};
TORCH_MODULE(Proj);

// What each PoolEncoder run saw (for the side-by-side test): its thread, whether it ran inside a
// parallel region, whether the caller's inference mode reached it; and a switch that makes it fail.
struct PoolRun {
  int thread;
  bool in_parallel;
  bool inference;
  std::string encoder;
  int64_t step = -1;  // SteppedPoolEncoder: which step; -1: a whole forward
};
std::mutex pool_runs_mutex;
std::vector<PoolRun> pool_runs;
std::atomic<bool> pool_fails{false};
// For the two-phase test: a PoolEncoder's forward says it ran; a SteppedPoolEncoder's step 0 then
// waits for that (at most 10 s) when pool_step_waits is set.
std::atomic<bool> pool_forward_done{false};
std::atomic<bool> pool_step_waits{false};

void record_pool_run(const std::string& encoder, int64_t step) {
  const std::lock_guard<std::mutex> lock(pool_runs_mutex);
  pool_runs.push_back(
      {at::get_thread_num(), at::in_parallel_region(), c10::InferenceMode::is_enabled(), encoder, step});
}

class PoolEncoder : public ImageEncoder {
 public:
  PoolEncoder(const PoolParams& params, std::string name, const torch::TensorOptions& options)
      : ImageEncoder(std::move(name)), params_(params), proj(register_module("proj", Proj(3, params.width, options))) {}

  torch::Tensor forward(const torch::Tensor& pixels) const override {
    record_pool_run(checkpoint_name(), -1);
    check(!pool_fails, "toy pool encoder '" + checkpoint_name() + "'", "asked to fail");
    auto out = project(pool(pixels));
    pool_forward_done = true;
    return out;
  }
  torch::Tensor pool(const torch::Tensor& pixels) const {
    const c10::InferenceMode inference;
    const auto pooled =
        torch::avg_pool2d(pixels.to(proj->weight.scalar_type()), params_.patch).flatten(2).transpose(1, 2);
    tap("pooled", pooled);
    return pooled;
  }
  torch::Tensor project(const torch::Tensor& pooled) const {
    const c10::InferenceMode inference;
    auto out = torch::matmul(pooled, proj->weight.t()) + proj->bias;
    tap("output", out);
    return out;
  }
  int64_t dim() const override { return params_.dim(); }
  int64_t tokens() const override { return params_.tokens(); }
  int64_t image_size() const override { return params_.size; }
  Normalization normalization() const override { return params_.normalization(); }

 protected:
  const PoolParams& params() const { return params_; }

 private:
  PoolParams params_;

 public:
  Proj proj;
};

// The toy in steps: pool, then steps() times x -> x / 2 + step, then the projection.
class SteppedPoolEncoder final : public PoolEncoder {
 public:
  using PoolEncoder::PoolEncoder;

  torch::Tensor forward(const torch::Tensor& pixels) const override {
    torch::Tensor x = start(pixels);
    for (int64_t i = 0; i < steps(); ++i) x = step(x, i);
    return finish(x);
  }
  int64_t steps() const override { return params().steps; }
  torch::Tensor start(const torch::Tensor& pixels) const override { return pool(pixels); }
  torch::Tensor step(const torch::Tensor& x, int64_t index) const override {
    record_pool_run(checkpoint_name(), index);
    check(!pool_fails, "toy pool encoder '" + checkpoint_name() + "'", "asked to fail");
    if (index == 0 && pool_step_waits) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!pool_forward_done && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    }
    return x / 2 + static_cast<double>(index);
  }
  torch::Tensor finish(const torch::Tensor& x) const override { return project(x); }
};

std::shared_ptr<ImageEncoder> PoolParams::build(const std::string& name, const torch::TensorOptions& options) const {
  if (steps > 1) return std::make_shared<SteppedPoolEncoder>(*this, name, options);
  return std::make_shared<PoolEncoder>(*this, name, options);
}

// The registration: ids "toy_pool_p<patch>_w<width>", or "..._s<steps>" for the stepped toy.
EncoderRegistration pool_registration() {
  EncoderRegistration r;
  r.kind = "toy pool";
  r.timm_id_prefixes = {"toy_pool_"};
  r.configure = [](const std::string& id, int64_t image_size) -> std::unique_ptr<EncoderParams> {
    auto p = std::make_unique<PoolParams>();
    check(std::sscanf(id.c_str(), "toy_pool_p%ld_w%ld_s%ld", &p->patch, &p->width, &p->steps) >= 2,
          "timm model id '" + id + "'", "not a toy pool id (toy_pool_p<patch>_w<width>[_s<steps>])");
    p->size = image_size;
    return p;
  };
  return r;
}

// The toy next to tiny16's SigLIP: config.json names it, the registry builds it, the checkpoint
// loads into it under vision_backbone.featurizer.*, and the fused features are [toy, SigLIP].
TEST(VisionEncoders, RegisteredToyEncoderBuildsATowerWithAViT) {
  register_encoder(pool_registration());
  register_encoder(pool_registration());  // again: replaces, does not duplicate
  const auto kinds = registered_encoder_kinds();
  EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "toy pool"), 1);
  EXPECT_EQ(kinds.front(), "timm ViT");

  const io::StateDict model = read_state("model.safetensors");
  const io::StateDict io = read_state("io.safetensors");
  io::VlaConfig config = io::VlaConfig::load(data_path("vision", "tiny16/config.json"));
  config.timm_model_ids[0] = "toy_pool_p14_w5";  // the checkpoint says 8 wide: fitted from shapes
  io::StateDict state;
  copy_prefix(model, "vision_backbone.fused_featurizer", state);
  torch::manual_seed(5);
  const auto weight = torch::randn({8, 3}), bias = torch::randn({8});
  state.insert("vision_backbone.featurizer.proj.weight", weight, "test");
  state.insert("vision_backbone.featurizer.proj.bias", bias, "test");
  add_projector(state, 8 + 144);

  auto tower = VisionTower::load(state, config);
  ASSERT_EQ(tower->num_encoders(), 2u);
  EXPECT_EQ(tower->config.encoders[0].params().kind(), "toy pool");
  EXPECT_EQ(tower->config.encoders[0].params_as<PoolParams>().width, 8);
  EXPECT_EQ(tower->config.vision_dim(), 152);
  EXPECT_EQ(tower->vision_backbone->encoder(0)->checkpoint_name(), "featurizer");
  EXPECT_NO_THROW(tower->vision_backbone->encoder_as<PoolEncoder>(0));
  expect_error([&] { vit_config(tower->config.encoders[0]); }, {"featurizer", "toy_pool_p14_w5", "toy pool"});
  std::vector<std::string> names;
  for (const auto& p : tower->named_parameters()) {
    EXPECT_TRUE(state.contains(p.key())) << p.key();
    names.push_back(p.key());
  }
  EXPECT_NE(std::find(names.begin(), names.end(), "vision_backbone.featurizer.proj.weight"), names.end());

  std::vector<std::string> tapped;
  tower->set_tap([&](const std::string& name, const torch::Tensor&) { tapped.push_back(name); });
  const auto pixels = io.at("pixels");  // (2, 2, 6, 224, 224)
  const auto features = tower->features(pixels);
  ASSERT_EQ(features.sizes(), (std::vector<int64_t>{2, 512, 152}));
  const auto pooled = torch::avg_pool2d(pixels.flatten(0, 1).slice(1, 0, 3), 14).flatten(2).transpose(1, 2);
  const auto toy = torch::matmul(pooled, weight.t()) + bias;  // (4, 256, 8)
  EXPECT_LE(relative_error(features.slice(2, 0, 8), per_sample(toy, 2)), 1e-6);
  const double err = relative_error(features.slice(2, 8), per_sample(io.at("siglip"), 2));
  std::cout << "[ measured ] toy + SigLIP tower, SigLIP part vs timm: relative error " << err << "\n";
  EXPECT_LE(err, 1e-4);
  EXPECT_EQ(tapped.front(), "featurizer.pooled");
  EXPECT_NE(std::find(tapped.begin(), tapped.end(), "fused_featurizer.blocks.2"), tapped.end());
  EXPECT_EQ(tapped.back(), "features");

  // A preprocessor from the encoders themselves: each normalized its own way.
  std::vector<EncoderInput> inputs;
  for (const auto& e : tower->vision_backbone->encoders()) inputs.push_back(EncoderInput::of(*e));
  const ImagePreprocessor preprocess(inputs);
  EXPECT_EQ(preprocess.staging_shape(1, 2), (std::vector<int64_t>{1, 2, 2, 224, 224, 3}));
  const auto gray = torch::full({224, 224, 3}, 51, torch::kUInt8);  // 0.2
  const auto out = preprocess(gray);
  EXPECT_FLOAT_EQ(out[0][0][0][0].item<float>(), (51.0f / 255.0f - 0.25f) / 0.5f);
  EXPECT_FLOAT_EQ(out[0][2][0][0].item<float>(), (51.0f / 255.0f - 0.75f) / 0.125f);
  EXPECT_FLOAT_EQ(out[0][3][0][0].item<float>(), (51.0f / 255.0f - 0.5f) / 0.5f);  // SigLIP
  EXPECT_EQ(tower->forward(out.unsqueeze(0)).sizes(), (std::vector<int64_t>{1, 256, 112}));

  // An id of the toy's prefix that it does not know, and an id no kind takes.
  expect_error([] { EncoderConfig::from_timm_id("toy_pool_big", 224, "featurizer"); }, {"toy_pool_big", "toy pool id"});
  expect_error([] { EncoderConfig::from_timm_id("resnet50.a1_in1k", 224, "featurizer"); },
               {"resnet50.a1_in1k", "no registered vision encoder", "vit_* (timm ViT)", "toy_pool_* (toy pool)"});
}

// A tower of the one-step toy (8 wide) and the toy `second` (4 wide), parameters drawn from `seed`.
VisionTower toy_tower(const std::string& second, uint64_t seed) {
  register_encoder(pool_registration());
  VisionTowerConfig config;
  config.encoders[0] = EncoderConfig::from_timm_id("toy_pool_p14_w8", 224, "featurizer");
  config.encoders[1] = EncoderConfig::from_timm_id(second, 224, "fused_featurizer");
  config.projector = {12, 48, 16};
  VisionTower tower(config, torch::TensorOptions());
  const torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (auto& p : tower->parameters()) p.normal_(0.0, 0.1);
  return tower;
}

// Side by side (what quantized policies run on as many threads as encoders): each encoder on its
// own thread of one parallel region, the caller's inference mode with it, the features those of
// the sequential run, an encoder's error rethrown to the caller. One after the other otherwise.
TEST(VisionEncoders, SideBySideRunsEachEncoderOnItsOwnThread) {
  VisionTower tower = toy_tower("toy_pool_p14_w4", 3);
  const auto pixels = torch::rand({1, 2, 6, 224, 224});
  auto& backbone = *tower->vision_backbone;
  const int threads = at::get_num_threads();
  torch::set_num_threads(2);
  const auto sequential = tower->features(pixels);
  EXPECT_FALSE(backbone.runs_side_by_side(pixels));  // off by default

  backbone.side_by_side = true;
  EXPECT_TRUE(backbone.runs_side_by_side(pixels));
  EXPECT_TRUE(torch::equal(tower->features(pixels), sequential));
  pool_runs.clear();  // no encoder runs now: the lock is for the encoders' threads
  {
    const c10::InferenceMode mode;
    tower->features(pixels);
  }
  std::vector<PoolRun> seen;
  {
    const std::lock_guard<std::mutex> lock(pool_runs_mutex);
    seen = pool_runs;
  }
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_TRUE(seen[0].in_parallel && seen[1].in_parallel);
  EXPECT_NE(seen[0].thread, seen[1].thread);
  EXPECT_TRUE(seen[0].inference && seen[1].inference);

  pool_fails = true;
  expect_error([&] { tower->features(pixels); }, {"toy pool encoder", "asked to fail"});
  pool_fails = false;
  EXPECT_TRUE(torch::equal(tower->features(pixels), sequential));  // and it runs on

  // One thread; more threads than encoders; a tap (taps come in run order): one after the other.
  torch::set_num_threads(1);
  EXPECT_FALSE(backbone.runs_side_by_side(pixels));
  torch::set_num_threads(3);
  EXPECT_FALSE(backbone.runs_side_by_side(pixels));
  torch::set_num_threads(2);
  std::vector<std::string> tapped;
  tower->set_tap([&](const std::string& name, const torch::Tensor&) { tapped.push_back(name); });
  EXPECT_FALSE(backbone.runs_side_by_side(pixels));
  pool_runs.clear();
  EXPECT_TRUE(torch::equal(tower->features(pixels), sequential));
  EXPECT_EQ(tapped.front(), "featurizer.pooled");
  EXPECT_EQ(pool_runs.size(), 2u);
  for (const auto& run : pool_runs) EXPECT_FALSE(run.in_parallel);
  torch::set_num_threads(threads);
}

// The two phases of side by side: the one-step toy is done while the stepped toy (4 steps) waits
// in its first step, so the stepped toy's other steps run after the parallel region, on all
// threads, in order; the features are the sequential run's. An error in either phase is named,
// and the tower runs on after it.
TEST(VisionEncoders, SideBySideRunsTheSlowerEncodersRestOnAllThreads) {
  VisionTower tower = toy_tower("toy_pool_p14_w4_s4", 4);
  ASSERT_EQ(tower->vision_backbone->encoder(0)->steps(), 1);
  ASSERT_EQ(tower->vision_backbone->encoder(1)->steps(), 4);
  const auto pixels = torch::rand({2, 2, 6, 224, 224});
  auto& backbone = *tower->vision_backbone;
  const int threads = at::get_num_threads();
  torch::set_num_threads(2);
  const auto sequential = tower->features(pixels);
  // The stepped toy is its steps: x / 2 + step, four times, between the pooling and the projection.
  const auto& stepped = backbone.encoder_as<PoolEncoder>(1);
  torch::Tensor x = stepped->pool(pixels.flatten(0, 1).slice(1, 3, 6));
  for (int64_t i = 0; i < 4; ++i) x = x / 2 + static_cast<double>(i);
  EXPECT_TRUE(torch::equal(sequential.view({4, 256, -1}).slice(2, 8), stepped->project(x)));

  backbone.side_by_side = true;
  ASSERT_TRUE(backbone.runs_side_by_side(pixels));
  pool_runs.clear();
  pool_forward_done = false;
  pool_step_waits = true;
  EXPECT_TRUE(torch::equal(tower->features(pixels), sequential));
  pool_step_waits = false;
  std::vector<PoolRun> seen;
  {
    const std::lock_guard<std::mutex> lock(pool_runs_mutex);
    seen = pool_runs;
  }
  ASSERT_EQ(seen.size(), 5u);
  std::vector<PoolRun> steps;
  for (const auto& run : seen) {
    if (run.encoder == "featurizer") {
      EXPECT_EQ(run.step, -1);
      EXPECT_TRUE(run.in_parallel);
    } else {
      steps.push_back(run);
    }
  }
  ASSERT_EQ(steps.size(), 4u);
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(steps[static_cast<size_t>(i)].step, i);
  EXPECT_TRUE(steps[0].in_parallel);  // phase 1
  for (size_t i = 1; i < 4; ++i) EXPECT_FALSE(steps[i].in_parallel) << "step " << i;  // phase 2

  pool_fails = true;
  expect_error([&] { tower->features(pixels); }, {"toy pool encoder", "asked to fail"});
  pool_fails = false;
  EXPECT_TRUE(torch::equal(tower->features(pixels), sequential));
  torch::set_num_threads(threads);
}

// Encoders that do not fit together are named.
TEST(VisionEncoders, MismatchedEncodersAreNamed) {
  register_encoder(pool_registration());
  VisionTowerConfig config;
  config.encoders[1] = EncoderConfig::from_timm_id("toy_pool_p16_w8", 224, "fused_featurizer");  // 196 tokens
  config.projector.vision_dim = config.vision_dim();
  expect_error([&] { config.validate(); }, {"featurizer", "256 tokens", "fused_featurizer", "196 tokens"});
  config.encoders[1] = EncoderConfig::from_timm_id("toy_pool_p14_w8", 224, "featurizer");
  expect_error([&] { config.validate(); }, {"two encoders are named 'featurizer'"});
}

}  // namespace
}  // namespace focusvla::vision
