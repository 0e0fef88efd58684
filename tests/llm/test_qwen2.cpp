// Qwen2Model against HF transformers' Qwen2Model (oracle: tests/python/gen_llm.py): all hidden
// states, fp32 and bf16, right-padded batches, embeddings, and the errors on bad input.

#include <gtest/gtest.h>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/io/json_file.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/llm/qwen2.h"
#include "tensor_util.h"
#include "test_util.h"

namespace {

using focusvla::Error;
using focusvla::io::Qwen2Config;
using focusvla::io::StateDict;
using focusvla::nn::CpuBf16Matmul;
using focusvla::nn::MatmulMode;
using focusvla::llm::Qwen2Model;
using focusvla::testing::data_path;
using focusvla::testing::expect_error;
using focusvla::testing::relative_error;

constexpr double kTolF32 = 1e-4;
constexpr double kTolBf16 = 2e-2;
constexpr double kTolBf16Fp32Matmul = 5e-2;  // CpuBf16Matmul::kFloat32, see HiddenStatesMatchTransformers

Qwen2Config load_config(const std::string& shape) {
  const auto path = data_path("llm", shape + "/config.json");
  return Qwen2Config::from_json(focusvla::io::read_json_file(path), path);
}

StateDict load_weights(const std::string& shape) {
  return StateDict::from_safetensors(data_path("llm", shape + "/model.safetensors"));
}

StateDict load_cases(const std::string& shape) {
  return StateDict::from_safetensors(data_path("llm", shape + "/cases.safetensors"));
}

// Compares every hidden state (dim 0) and returns the largest relative error.
double compare_hidden(const torch::Tensor& actual, const torch::Tensor& expected, double tolerance,
                      const std::string& label) {
  EXPECT_EQ(actual.sizes(), expected.sizes()) << label;
  if (actual.sizes() != expected.sizes()) return std::numeric_limits<double>::infinity();
  double worst = 0;
  for (int64_t l = 0; l < expected.size(0); ++l) {
    const double err = relative_error(actual[l], expected[l]);
    EXPECT_LE(err, tolerance) << label << ": hidden state " << l << " of " << expected.size(0) - 1;
    worst = std::max(worst, err);
  }
  std::cout << "[ qwen2 ] " << std::left << std::setw(28) << label << " max relative error over " << expected.size(0)
            << " hidden states: " << std::scientific << std::setprecision(2) << worst << std::defaultfloat << "\n";
  return worst;
}

torch::Tensor nan_buffer(const Qwen2Model& model, int64_t batch, int64_t length) {
  return torch::full({model->num_layers() + 1, batch, length, model->config().hidden_size},
                     std::numeric_limits<float>::quiet_NaN(),
                     torch::TensorOptions().dtype(model->dtype()).device(model->device()));
}

// ---------------------------------------------------------------------------------------------
// Conformance: every hidden state against transformers, per shape and sequence length.

struct ShapeCase {
  std::string shape;
  std::vector<int64_t> lengths;
};

class Qwen2Conformance : public ::testing::TestWithParam<ShapeCase> {};

TEST_P(Qwen2Conformance, HiddenStatesMatchTransformers) {
  const auto& param = GetParam();
  const auto config = load_config(param.shape);
  const auto weights = load_weights(param.shape);
  const auto cases = load_cases(param.shape);

  // fp32; bf16 with LibTorch's bf16 matmuls; bf16 with fp32 matmuls of the upcast operands.
  const std::vector<std::pair<torch::ScalarType, CpuBf16Matmul>> variants{
      {torch::kFloat32, CpuBf16Matmul::kNative},
      {torch::kBFloat16, CpuBf16Matmul::kNative},
      {torch::kBFloat16, CpuBf16Matmul::kFloat32}};
  for (const auto& [dtype, matmul] : variants) {
    const bool f32 = dtype == torch::kFloat32;
    auto model = focusvla::llm::Qwen2ModelImpl::load(weights, config, torch::TensorOptions().dtype(dtype));
    // Every linear layer of every decoder layer (q, k, v, o, gate, up, down) or none.
    const bool fp32_copies = !f32 && matmul == CpuBf16Matmul::kFloat32;
    EXPECT_EQ(focusvla::nn::set_cpu_bf16_matmul(*model, matmul), fp32_copies ? 7 * config.num_hidden_layers : 0);
    EXPECT_EQ(focusvla::nn::bf16_matmul_in_fp32(matmul, model->dtype(), model->device()), fp32_copies);
    ASSERT_EQ(model->num_layers(), config.num_hidden_layers);
    const std::string label = f32 ? " f32" : (matmul == CpuBf16Matmul::kNative ? " bf16" : " bf16/fp32-mm");
    for (const int64_t length : param.lengths) {
      const std::string suffix = (f32 ? "_L" : "_bf16_L") + std::to_string(length);
      const auto& embeds = cases.at("embeds" + suffix);
      const auto& expected = cases.at("hidden" + suffix);
      auto out = nan_buffer(model, 1, length);
      model->forward_into(out, embeds.to(dtype));
      if (matmul == CpuBf16Matmul::kNative) {
        compare_hidden(out, expected, f32 ? kTolF32 : kTolBf16, param.shape + label + " L=" + std::to_string(length));
        continue;
      }
      // fp32 matmuls round differently from LibTorch's bf16 kernel (an ulp here and there), and
      // over 24 random layers two valid bf16 computations drift apart as far as bf16 is from
      // fp32 (~3e-2 on "full"). So: within 5e-2 of transformers' bf16, and no farther from the
      // fp32 oracle than transformers' own bf16 is (x1.5, + 2e-3).
      compare_hidden(out, expected, kTolBf16Fp32Matmul, param.shape + label + " L=" + std::to_string(length));
      const auto& oracle = cases.at("hidden_L" + std::to_string(length));
      for (int64_t l = 0; l < oracle.size(0); ++l) {
        const double ours = relative_error(out[l], oracle[l]);
        const double theirs = relative_error(expected[l], oracle[l]);
        EXPECT_LE(ours, 1.5 * theirs + 2e-3) << param.shape << label << " L=" << length << ": hidden state " << l
                                             << " vs the fp32 oracle (transformers bf16: " << theirs << ")";
      }
    }
  }
}

TEST(Qwen2Bf16Matmul, AutoFollowsTheCpu) {
  auto model = focusvla::llm::Qwen2ModelImpl::load(load_weights("mha"), load_config("mha"),
                                         torch::TensorOptions().dtype(torch::kBFloat16));
  const int64_t linears = 7 * model->num_layers();
  EXPECT_EQ(model->layer(0)->mlp->down_proj->active_matmul_mode(), MatmulMode::kNative)
      << "the default is LibTorch's bf16 matmul";
  const bool native = focusvla::nn::cpu_has_native_bf16();
  EXPECT_EQ(focusvla::nn::set_cpu_bf16_matmul(*model, CpuBf16Matmul::kAuto), native ? 0 : linears);
  EXPECT_EQ(focusvla::nn::bf16_matmul_in_fp32(CpuBf16Matmul::kAuto, model->dtype(), model->device()), !native);
  std::cout << "[ qwen2 ] native bf16 dot products on this CPU: " << native << "\n";
  auto f32 = focusvla::llm::Qwen2ModelImpl::load(load_weights("mha"), load_config("mha"));
  EXPECT_EQ(focusvla::nn::set_cpu_bf16_matmul(*f32, CpuBf16Matmul::kFloat32), 0) << "only bf16 weights are affected";
  EXPECT_EQ(f32->layer(0)->mlp->down_proj->active_matmul_mode(), MatmulMode::kNative);
  // Module::to() re-fuses, and each Linear makes the fp32 copies its mode asks for, for the new
  // dtype.
  f32->to(torch::kBFloat16);
  for (int64_t l = 0; l < f32->num_layers(); ++l) {
    EXPECT_TRUE(f32->layer(l)->self_attn->fused()) << l;
    EXPECT_TRUE(f32->layer(l)->mlp->fused()) << l;
    EXPECT_EQ(f32->layer(l)->mlp->down_proj->active_matmul_mode(), MatmulMode::kFp32Copies) << l;
    EXPECT_EQ(f32->layer(l)->self_attn->o_proj->active_matmul_mode(), MatmulMode::kFp32Copies) << l;
    EXPECT_EQ(f32->layer(l)->self_attn->q_proj->active_matmul_mode(), MatmulMode::kFp32Copies) << l;
    EXPECT_EQ(f32->layer(l)->mlp->up_proj->active_matmul_mode(), MatmulMode::kFp32Copies) << l;
  }
  f32->to(torch::kFloat32);
  EXPECT_EQ(f32->layer(0)->mlp->down_proj->active_matmul_mode(), MatmulMode::kNative) << "fp32 weights need no copies";
  EXPECT_TRUE(f32->layer(0)->self_attn->fused());
}

INSTANTIATE_TEST_SUITE_P(Qwen2Shapes, Qwen2Conformance,
                         ::testing::Values(ShapeCase{"gqa", {1, 7, 61}}, ShapeCase{"mha", {1, 7, 61}},
                                           ShapeCase{"mqa", {7, 200}}, ShapeCase{"full", {61}}),
                         [](const ::testing::TestParamInfo<ShapeCase>& info) { return info.param.shape; });

// ---------------------------------------------------------------------------------------------
// Right-padded batches: every real position equals the single-sequence result.

class Qwen2Batch : public ::testing::TestWithParam<std::string> {};

TEST_P(Qwen2Batch, RightPaddedEqualsSingleSequences) {
  const auto& shape = GetParam();
  const auto config = load_config(shape);
  const auto model = focusvla::llm::Qwen2ModelImpl::load(load_weights(shape), config);
  const auto cases = load_cases(shape);
  const auto& batch = cases.at("batch_embeds");
  const auto lengths_tensor = cases.at("batch_lengths");
  std::vector<int64_t> lengths(lengths_tensor.data_ptr<int64_t>(), lengths_tensor.data_ptr<int64_t>() + lengths_tensor.numel());
  ASSERT_EQ(static_cast<int64_t>(lengths.size()), batch.size(0));

  auto out = nan_buffer(model, batch.size(0), batch.size(1));
  model->forward_into(out, batch, lengths);
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>()) << "padded positions must stay finite";
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int64_t n = lengths[b];
    const auto real = out.select(1, static_cast<int64_t>(b)).narrow(1, 0, n).unsqueeze(1);  // (n+1, 1, len, D)
    const auto single = model->forward(batch.narrow(0, static_cast<int64_t>(b), 1).narrow(1, 0, n).contiguous());
    const std::string label = shape + " batch[" + std::to_string(b) + "] len " + std::to_string(n);
    compare_hidden(real, single, 1e-5, label + " vs single");
    compare_hidden(real, cases.at("batch_hidden_" + std::to_string(b)), kTolF32, label + " vs HF");
  }
}

INSTANTIATE_TEST_SUITE_P(Qwen2Shapes, Qwen2Batch, ::testing::Values("gqa", "mha", "full"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(Qwen2Padding, FullLengthsEqualNoLengths) {
  const auto config = load_config("gqa");
  const auto model = focusvla::llm::Qwen2ModelImpl::load(load_weights("gqa"), config);
  const auto x = torch::randn({2, 9, config.hidden_size});
  const auto a = model->forward(x);
  const auto b = model->forward(x, {9, 9});
  EXPECT_TRUE(torch::equal(a, b));
}

// ---------------------------------------------------------------------------------------------
// Loading and embeddings

TEST(Qwen2Load, EmbeddingRowsComeFromTheWeights) {
  const auto config = load_config("gqa");
  const auto weights = load_weights("gqa");
  const int64_t rows = weights.at("language_model.model.embed_tokens.weight").size(0);
  ASSERT_NE(rows, config.vocab_size) << "the oracle must store a table whose size differs from vocab_size";
  const auto model = focusvla::llm::Qwen2ModelImpl::load(weights, config);
  EXPECT_EQ(model->embed_tokens->weight.size(0), rows);

  // Names are HF's, one for one.
  const auto params = model->named_parameters();
  EXPECT_TRUE(params.contains("layers.2.self_attn.q_proj.bias"));
  EXPECT_TRUE(params.contains("layers.0.mlp.down_proj.weight"));
  EXPECT_TRUE(params.contains("layers.1.post_attention_layernorm.weight"));
  EXPECT_FALSE(params.contains("layers.0.self_attn.o_proj.bias"));
  EXPECT_EQ(static_cast<size_t>(params.size()), weights.size());
}

TEST(Qwen2Load, EmbedMatchesTransformers) {
  const auto config = load_config("gqa");
  const auto cases = load_cases("gqa");
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    const auto model = focusvla::llm::Qwen2ModelImpl::load(load_weights("gqa"), config, torch::TensorOptions().dtype(dtype));
    const auto out = model->embed(cases.at("embed_ids"));
    EXPECT_EQ(out.scalar_type(), dtype);
    EXPECT_TRUE(torch::equal(out, cases.at("embed_out").to(dtype)));
  }
}

// On a CPU the table is the file's own bytes (a view into the mapping), for a model in the file's
// dtype and in another (the rows are converted per lookup); the embeddings equal those of a
// model that owns a copy, also after to(dtype) (converted from the file's values). From owned tensors the model owns its table.
TEST(Qwen2Load, EmbeddingTableIsReadInPlaceFromTheFile) {
  const auto config = load_config("gqa");
  const auto weights = load_weights("gqa");
  const std::string key = "language_model.model.embed_tokens.weight";
  ASSERT_TRUE(weights.is_mapped(key));
  StateDict owned;
  for (const auto& name : weights.keys()) owned.insert(name, weights.at(name).clone(), "owned");
  const auto ids = load_cases("gqa").at("embed_ids");
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    const auto options = torch::TensorOptions().dtype(dtype);
    auto mapped = focusvla::llm::Qwen2ModelImpl::load(weights, config, options);
    auto copied = focusvla::llm::Qwen2ModelImpl::load(owned, config, options);
    ASSERT_NE(mapped->embed_tokens->mapped_file(), nullptr);
    EXPECT_EQ(mapped->embed_tokens->weight.data_ptr(), weights.at(key).data_ptr());
    EXPECT_EQ(copied->embed_tokens->mapped_file(), nullptr);
    const auto out = mapped->embed(ids);
    EXPECT_EQ(out.scalar_type(), dtype);
    EXPECT_TRUE(torch::equal(out, copied->embed(ids)));
    // After to(): the file's rows converted to the new dtype, as a model loaded in that dtype.
    const auto other = dtype == torch::kFloat32 ? torch::kBFloat16 : torch::kFloat32;
    mapped->to(other);
    EXPECT_NE(mapped->embed_tokens->mapped_file(), nullptr);
    EXPECT_EQ(mapped->embed(ids).scalar_type(), other);
    const auto loaded_as_other = focusvla::llm::Qwen2ModelImpl::load(owned, config, torch::TensorOptions().dtype(other));
    EXPECT_TRUE(torch::equal(mapped->embed(ids), loaded_as_other->embed(ids)));
  }
}

TEST(Qwen2Load, ReportsMissingAndMisshapedKeys) {
  const auto config = load_config("gqa");
  const auto weights = load_weights("gqa");
  const std::string missing = "language_model.model.layers.1.mlp.up_proj.weight";
  const std::string misshaped = "language_model.model.layers.2.self_attn.k_proj.weight";
  const std::string unexpected = "language_model.model.layers.0.self_attn.o_proj.bias";

  {
    StateDict broken;
    for (const auto& key : weights.keys())
      if (key != missing) broken.insert(key, weights.at(key), weights.source(key));
    expect_error([&] { focusvla::llm::Qwen2ModelImpl::load(broken, config); }, {"missing", missing});
  }
  {
    StateDict broken;
    for (const auto& key : weights.keys())
      broken.insert(key, key == misshaped ? torch::zeros({32, 60}) : weights.at(key), weights.source(key));
    // k_proj: 2 kv heads x head 16 = 32 rows, hidden 64 columns.
    expect_error([&] { focusvla::llm::Qwen2ModelImpl::load(broken, config); }, {misshaped, "[32, 64]", "[32, 60]"});
  }
  {
    StateDict broken;
    for (const auto& key : weights.keys()) broken.insert(key, weights.at(key), weights.source(key));
    broken.insert(unexpected, torch::zeros({64}), "test");
    expect_error([&] { focusvla::llm::Qwen2ModelImpl::load(broken, config); }, {"unexpected", unexpected});
  }
  // Another prefix: nothing is found, every key is reported missing.
  expect_error([&] { focusvla::llm::Qwen2ModelImpl::load(weights, config, {}, "model"); }, {"model.norm.weight"});
}

TEST(Qwen2Load, RejectsUnsupportedConfigs) {
  auto config = load_config("gqa");
  config.num_key_value_heads = 3;
  expect_error([&] { Qwen2Model m(config); }, {"num_key_value_heads", "3"});
  config = load_config("gqa");
  config.hidden_act = "gelu";
  expect_error([&] { Qwen2Model m(config); }, {"hidden_act", "gelu"});
}

// ---------------------------------------------------------------------------------------------
// Bad input

class Qwen2Errors : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = load_config("mha");  // hidden 48, max_position_embeddings 64
    model_ = focusvla::llm::Qwen2ModelImpl::load(load_weights("mha"), config_);
  }
  Qwen2Config config_;
  Qwen2Model model_{nullptr};
};

TEST_F(Qwen2Errors, WrongHiddenSize) {
  expect_error([&] { model_->forward(torch::zeros({1, 5, 40})); }, {"inputs_embeds", "hidden size 48", "got 40"});
}

TEST_F(Qwen2Errors, WrongRank) {
  expect_error([&] { model_->forward(torch::zeros({5, 48})); }, {"inputs_embeds", "rank 3", "rank 2"});
  expect_error([&] { model_->forward(torch::zeros({1, 1, 5, 48})); }, {"inputs_embeds", "rank 4"});
}

TEST_F(Qwen2Errors, EmptySequence) {
  expect_error([&] { model_->forward(torch::zeros({1, 0, 48})); }, {"inputs_embeds", "empty"});
}

TEST_F(Qwen2Errors, SequenceLongerThanMaxPositions) {
  ASSERT_EQ(config_.max_position_embeddings, 64);
  EXPECT_NO_THROW(model_->forward(torch::zeros({1, 64, 48})));
  expect_error([&] { model_->forward(torch::zeros({1, 65, 48})); }, {"65", "max_position_embeddings 64"});
}

TEST_F(Qwen2Errors, WrongDtype) {
  expect_error([&] { model_->forward(torch::zeros({1, 5, 48}, torch::kBFloat16)); }, {"inputs_embeds", "BFloat16", "Float"});
}

TEST_F(Qwen2Errors, LengthsOutOfRange) {
  const auto x = torch::zeros({2, 6, 48});
  expect_error([&] { model_->forward(x, {6, 0}); }, {"lengths[1] = 0", "[1, 6]"});
  expect_error([&] { model_->forward(x, {7, 6}); }, {"lengths[0] = 7", "[1, 6]"});
  expect_error([&] { model_->forward(x, {-1, 6}); }, {"lengths[0] = -1"});
  expect_error([&] { model_->forward(x, {6}); }, {"1 lengths for a batch of 2"});
}

TEST_F(Qwen2Errors, WrongOutputBuffer) {
  const auto x = torch::zeros({1, 5, 48});
  auto wrong_shape = torch::empty({config_.num_hidden_layers, 1, 5, 48});
  expect_error([&] { model_->forward_into(wrong_shape, x); }, {"out", "[3, 1, 5, 48]", "[2, 1, 5, 48]"});
  auto wrong_dtype = torch::empty({config_.num_hidden_layers + 1, 1, 5, 48}, torch::kBFloat16);
  expect_error([&] { model_->forward_into(wrong_dtype, x); }, {"out", "BFloat16"});
}

TEST_F(Qwen2Errors, TokenIdOutsideTable) {
  const int64_t rows = model_->embed_tokens->weight.size(0);
  expect_error([&] { model_->embed(torch::tensor({0L, rows})); }, {"token id " + std::to_string(rows)});
  expect_error([&] { model_->embed(torch::tensor({-1L})); }, {"token id -1"});
  expect_error([&] { model_->embed(torch::zeros({2})); }, {"integer"});
}

// ---------------------------------------------------------------------------------------------
// Fused q/k/v and gate/up projections

TEST(Qwen2Fusion, FusedAfterLoadAndTo) {
  const auto config = load_config("gqa");
  const auto cases = load_cases("gqa");
  auto model = focusvla::llm::Qwen2ModelImpl::load(load_weights("gqa"), config);
  for (int64_t l = 0; l < model->num_layers(); ++l) {
    EXPECT_TRUE(model->layer(l)->self_attn->fused()) << l;
    EXPECT_TRUE(model->layer(l)->mlp->fused()) << l;
  }
  // Module::to re-fuses: same result as loading straight into bf16.
  model->to(torch::kBFloat16);
  EXPECT_EQ(model->dtype(), torch::kBFloat16);
  EXPECT_TRUE(model->layer(0)->self_attn->fused());
  EXPECT_TRUE(model->layer(0)->mlp->fused());
  const auto direct = focusvla::llm::Qwen2ModelImpl::load(load_weights("gqa"), config, torch::TensorOptions().dtype(torch::kBFloat16));
  const auto& x = cases.at("embeds_bf16_L61");
  EXPECT_TRUE(torch::equal(model->forward(x), direct->forward(x)));
}

TEST(Qwen2Fusion, UnfusedParametersStillCompute) {
  const auto config = load_config("gqa");
  const auto cases = load_cases("gqa");
  auto model = focusvla::llm::Qwen2ModelImpl::load(load_weights("gqa"), config);
  // Replacing a parameter's storage breaks the fusion: forward must use the separate weights.
  torch::NoGradGuard no_grad;
  for (int64_t l = 0; l < model->num_layers(); ++l) {
    auto& q = model->layer(l)->self_attn->q_proj->weight;
    q.set_data(q.clone());
    auto& up = model->layer(l)->mlp->up_proj->weight;
    up.set_data(up.clone());
    EXPECT_FALSE(model->layer(l)->self_attn->fused());
    EXPECT_FALSE(model->layer(l)->mlp->fused());
  }
  auto out = nan_buffer(model, 1, 61);
  model->forward_into(out, cases.at("embeds_L61"));
  compare_hidden(out, cases.at("hidden_L61"), kTolF32, "gqa f32 L=61 unfused");
}

// ---------------------------------------------------------------------------------------------
// RoPE tables and the debug hook

TEST(Qwen2Rope, TablesAreCachedAndSliced) {
  const auto model = focusvla::llm::Qwen2ModelImpl::load(load_weights("gqa"), load_config("gqa"));
  const auto a = model->rope_tables(7, torch::kCPU, torch::kFloat32);
  const auto b = model->rope_tables(5, torch::kCPU, torch::kFloat32);
  EXPECT_EQ(a.cos.size(0), 7);
  EXPECT_EQ(b.cos.size(0), 5);
  EXPECT_EQ(a.cos.data_ptr(), b.cos.data_ptr()) << "the same cached table serves both lengths";
  EXPECT_TRUE(torch::equal(a.cos[0], torch::ones({a.cos.size(1)})));
  EXPECT_TRUE(torch::equal(a.sin[0], torch::zeros({a.sin.size(1)})));
  const auto c = model->rope_tables(7, torch::kCPU, torch::kBFloat16);
  EXPECT_EQ(c.cos.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(c.cos, a.cos.to(torch::kBFloat16)));
}

TEST(Qwen2Taps, NamedIntermediatesWithLayerPaths) {
  const auto config = load_config("gqa");
  auto model = focusvla::llm::Qwen2ModelImpl::load(load_weights("gqa"), config);
  std::map<std::string, int> counts;
  torch::Tensor last_layer_out, norm;
  model->set_tap([&](const std::string& name, const torch::Tensor& value) {
    ++counts[name];
    if (name == "layers.1") last_layer_out = value.clone();
    if (name == "norm") norm = value.clone();
    if (name == "layers.0.q") EXPECT_EQ(value.size(2), config.num_attention_heads);
    if (name == "layers.0.k") EXPECT_EQ(value.size(2), config.num_key_value_heads);
  });
  const auto h = model->forward(torch::randn({1, 4, config.hidden_size}));
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    for (const char* name : {"attn_norm", "q", "k", "v", "attn_out", "attn_residual", "ffn_norm", "ffn_out"})
      EXPECT_EQ(counts["layers." + std::to_string(l) + "." + name], 1) << l << " " << name;
  EXPECT_EQ(counts["layers.0"], 1);
  EXPECT_EQ(counts["norm"], 1);
  ASSERT_GE(config.num_hidden_layers, 3);
  EXPECT_TRUE(torch::equal(last_layer_out, h[2]));  // layer 1's output is hidden state 2
  EXPECT_TRUE(torch::equal(norm, h[config.num_hidden_layers]));
  model->set_tap({});
  counts.clear();
  model->forward(torch::randn({1, 4, config.hidden_size}));
  EXPECT_TRUE(counts.empty());
}

}  // namespace
