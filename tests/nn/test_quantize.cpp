// nn/quantize.h and the quantized MatmulModes of nn::Linear, against PyTorch's own arithmetic
// (tests/python/gen_quantize.py): per-row weight and per-token activation quantization (int8 and
// fp8) bit for bit, W8A8 int8_linear exactly (integer products, one float32 epilogue; with the
// zero point folded into the GEMM's bias, within that path's derived rounding bound), weight-only
// int8; the quantized Linear releases its float weight, refuses a second quantization or a move,
// a fused block stays fused; zero / NaN rows; the named errors (fp8 off CUDA, parse).

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "focusvla/io/state_dict.h"
#include "focusvla/nn/fused_linear.h"
#include "focusvla/nn/linear.h"
#include "focusvla/nn/matmul.h"
#include "focusvla/nn/quantize.h"
#include "test_util.h"

namespace focusvla::nn {
namespace {

using focusvla::testing::data_path;
using focusvla::testing::expect_error;

const char* const kCases[] = {"f32_small", "f32_odd", "bf16_mlp", "bf16_one_token", "f32_zero_and_outlier_rows"};

const io::StateDict& oracle() {
  static const io::StateDict state = io::StateDict::from_safetensors(data_path("llm", "quantize.safetensors"));
  return state;
}
torch::Tensor get(const std::string& name) { return oracle().at(name).clone(); }
torch::Tensor bias_of(const std::string& c) { return oracle().contains(c + ".bias") ? get(c + ".bias") : torch::Tensor(); }
torch::Tensor fp32_or_none(const torch::Tensor& t) { return t.defined() ? t.to(torch::kFloat32) : torch::Tensor(); }

void expect_same(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  EXPECT_TRUE(torch::equal(got, want)) << what << ": max difference "
                                       << (got.to(torch::kFloat64) - want.to(torch::kFloat64)).abs().max().item<double>();
}

Linear linear_of(const std::string& c) {
  const torch::Tensor w = get(c + ".weight");
  const torch::Tensor b = bias_of(c);
  return Linear(w, b);
}

TEST(Quantize, RowsInt8EqualPyTorch) {
  for (const char* c : kCases)
    for (const int qmax : {127, 63}) {
      const std::string p = std::string(c) + ".w" + std::to_string(qmax);
      const QuantizedWeight q = quantize_rows_int8(get(std::string(c) + ".weight"), qmax);
      expect_same(q.values, get(p + ".values"), p + ".values");
      expect_same(q.scales, get(p + ".scales"), p + ".scales");
      EXPECT_LE(q.values.abs().max().item<int>(), qmax) << p;
    }
}

TEST(Quantize, TokensInt8EqualPyTorch) {
  for (const char* c : kCases) {
    const torch::Tensor x = get(std::string(c) + ".x");
    const QuantizedWeight q = quantize_tokens_int8(x.reshape({-1, x.size(-1)}).contiguous());
    expect_same(q.values, get(std::string(c) + ".tokens.values"), std::string(c) + " token values");
    expect_same(q.scales, get(std::string(c) + ".tokens.scales"), std::string(c) + " token scales");
  }
}

TEST(Quantize, Fp8RowsAndTokensEqualPyTorch) {
  for (const char* c : kCases) {
    const std::string name(c);
    const QuantizedWeight w = quantize_rows_fp8(get(name + ".weight"));
    ASSERT_EQ(w.values.scalar_type(), torch::kFloat8_e4m3fn);
    expect_same(w.values.view(torch::kUInt8), get(name + ".fp8.values"), name + " fp8 weight bits");
    expect_same(w.scales, get(name + ".fp8.scales"), name + " fp8 weight scales");
    const torch::Tensor x = get(name + ".x");
    const QuantizedWeight a = quantize_tokens_fp8(x.reshape({-1, x.size(-1)}));
    expect_same(a.values.view(torch::kUInt8), get(name + ".tokens_fp8.values"), name + " fp8 token bits");
    expect_same(a.scales, get(name + ".tokens_fp8.scales"), name + " fp8 token scales");
  }
}

// The integer products are exact and the epilogue rounds as PyTorch's float32 ops do: equal.
// Weights of this CPU's width only (127 with int8 dot products, 63 without: 8-bit weights
// saturate the u8 x s8 instruction of CPUs without VNNI; see nn/quantize.h).
TEST(Quantize, Int8LinearEqualsPyTorchW8A8) {
  const int qmax = cpu_int8_weight_max();
  for (const char* c : kCases) {
    const std::string p = std::string(c) + ".w" + std::to_string(qmax);
    const QuantizedWeight w{get(p + ".values"), get(p + ".scales")};
    const torch::Tensor got = int8_linear(get(std::string(c) + ".x"), w, fp32_or_none(bias_of(c)));
    expect_same(got, get(p + ".int8"), p + " int8_linear (at::_int_mm)");
  }
}

// The packed path's oracle for case `c`: the GEMM writes bf16 for a bf16 x only where that is
// fast (int8_gemm_writes_bf16), else float32 (one rounding less). The AVX2 group (llm_int8_avx2,
// oneDNN capped at AVX2) and AVX2-only CPUs check the float32 branch, native-bf16 CPUs the other.
std::string packed_oracle(const char* c) {
  const bool bf16 = get(std::string(c) + ".x").scalar_type() == torch::kBFloat16;
  return bf16 && !int8_gemm_writes_bf16() ? ".int8_packed_f32out" : ".int8_packed";
}

// Where the packed GEMM takes the zero point's term as its bias (int8_gemm_folds_zero_point: CPUs
// without int8 dot products), oneDNN sums acc' = acc + 128 R (R: the weight row's sum) and
// computes t = acc' * w_scale + term, term = -128 R w_scale: the same value as acc * w_scale, but
// rounded at other places (by oneDNN's kernel, not PyTorch's expression), so not bit for bit.
// Against the exact integer result (float64), with u = 2^-24: converting acc' and multiplying
// round by at most u |acc'| w_scale each, the term by u 128 |R| w_scale, the sum by u |t|; then
// t * x_scale and + bias by u of each value, and a bf16 output by 2^-8 of it. Derived, not
// fitted (second-order terms covered by the factor 2 on the float32 ones); the share used is
// printed.
void expect_within_folded_bound(const torch::Tensor& got, const char* c, const QuantizedWeight& w,
                                const std::string& what) {
  const torch::Tensor x0 = get(std::string(c) + ".x");
  const QuantizedWeight xq = quantize_tokens_int8(x0.reshape({-1, x0.size(-1)}).contiguous());
  const auto f64 = [](const torch::Tensor& t) { return t.to(torch::kFloat64); };
  const torch::Tensor acc = torch::matmul(f64(xq.values), f64(w.values).t());
  const torch::Tensor rows = f64(w.values).sum(1).unsqueeze(0), ws = f64(w.scales).unsqueeze(0);
  const torch::Tensor xs = f64(xq.scales).unsqueeze(1);
  const torch::Tensor bias = bias_of(c).defined() ? f64(bias_of(c)).unsqueeze(0) : torch::zeros({1}, torch::kFloat64);
  const torch::Tensor t = acc * ws, exact = t * xs + bias;
  const double u = std::ldexp(1.0, -24), out_u = x0.scalar_type() == torch::kBFloat16 ? std::ldexp(1.0, -8) : 0.0;
  const torch::Tensor bound = 2 * u * (xs * (2 * (acc + 128 * rows).abs() * ws + 128 * rows.abs() * ws + t.abs()) +
                                       (t * xs).abs() + exact.abs()) +
                              out_u * exact.abs() * (1 + 1e-3);
  const torch::Tensor error = (f64(got).reshape(exact.sizes()) - exact).abs();
  EXPECT_LE((error - bound).max().item<double>(), 0.0) << what;
  std::cout << "[ folded zero point ] " << what << ": largest share of the rounding bound used "
            << (error / bound.clamp_min(1e-300)).max().item<double>() << "\n";
}

// The packed path's result for case `c` (qmax: this CPU's): PyTorch's expression bit for bit, or
// within the rounding bound above where the zero point is folded.
void expect_packed_result(const torch::Tensor& got, const char* c, const std::string& what) {
  const std::string p = std::string(c) + ".w" + std::to_string(cpu_int8_weight_max());
  if (!int8_gemm_folds_zero_point()) return expect_same(got, get(p + packed_oracle(c)), what);
  const torch::Tensor want = get(p + packed_oracle(c));
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  expect_within_folded_bound(got, c, {get(p + ".values"), get(p + ".scales")}, what);
}

// The packed GEMM (oneDNN's int8 matmul through onednn::qlinear_pointwise): its epilogue rounds
// acc * w_scale to the output dtype, then ours applies the token scale and bias.
TEST(Quantize, PackedInt8LinearEqualsPyTorchW8A8) {
  ASSERT_TRUE(int8_packed_gemm_available()) << "this LibTorch has no onednn::qlinear_pointwise";
  const int qmax = cpu_int8_weight_max();
  for (const char* c : kCases) {
    const std::string p = std::string(c) + ".w" + std::to_string(qmax);
    QuantizedWeight w = pack_int8({get(p + ".values"), get(p + ".scales")});
    ASSERT_TRUE(w.packed.defined());
    w.values = torch::Tensor();  // the layer keeps only the packed weight
    EXPECT_EQ(w.zero_point_term.defined(), int8_gemm_folds_zero_point()) << p;
    const torch::Tensor got = int8_linear(get(std::string(c) + ".x"), w, fp32_or_none(bias_of(c)));
    expect_packed_result(got, c, p + " int8_linear (packed)");
  }
}

// The folded zero point's term is -128 * the row sum * the row's scale, rounded once.
TEST(Quantize, FoldedZeroPointTermIsTheRowSums) {
  if (!int8_gemm_folds_zero_point()) GTEST_SKIP() << "this CPU has int8 dot products: oneDNN keeps the zero point";
  const int qmax = cpu_int8_weight_max();
  for (const char* c : kCases) {
    const std::string p = std::string(c) + ".w" + std::to_string(qmax);
    const QuantizedWeight w = pack_int8({get(p + ".values"), get(p + ".scales")});
    const torch::Tensor sums = get(p + ".values").to(torch::kFloat64).sum(1);
    const torch::Tensor want = (sums * -128.0 * get(p + ".scales").to(torch::kFloat64)).to(torch::kFloat32);
    expect_same(w.zero_point_term, want, p + " zero_point_term");
  }
}

TEST(Quantize, Int8LinearModeEqualsPyTorchAndReleasesTheWeight) {
  const int qmax = cpu_int8_weight_max();
  for (const char* c : kCases) {
    Linear linear = linear_of(c);
    const auto sizes = linear->weight.sizes().vec();
    const auto dtype = linear->weight.scalar_type();
    linear->set_matmul_mode(MatmulMode::kInt8);
    EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kInt8) << c;
    EXPECT_TRUE(linear->weight_released()) << c;
    EXPECT_EQ(linear->weight.sizes().vec(), sizes) << c << ": the parameter keeps its shape";
    EXPECT_EQ(linear->weight.scalar_type(), dtype) << c << ": and its dtype";
    EXPECT_LE(linear->weight.storage().nbytes(), 4u) << c << ": over no memory";
    const std::string p = std::string(c) + ".w" + std::to_string(qmax);
    const torch::Tensor got = linear->forward(get(std::string(c) + ".x"));
    if (int8_packed_gemm_available())
      expect_packed_result(got, c, p + " Linear kInt8");
    else
      expect_same(got, get(p + ".int8"), p + " Linear kInt8");
  }
}

// Against the float layer (float64): the error W8A8 adds is bounded by the rounding steps. Per
// token, |x_k - x^_k| <= ax / 254 (ax = the token's absmax: half a step of ax / 127), per weight
// row |w_k - w^_k| <= aw / (2 qmax); so |y - y^| <= ax / 254 sum|w_k| + aw / (2 qmax) sum|x_k|
// + K ax aw / (254 * 2 qmax), plus the output's own rounding (bf16: 2^-8 of the value). Derived,
// not fitted; the measured errors are printed.
TEST(Quantize, Int8ErrorWithinTheQuantizationBound) {
  const int qmax = cpu_int8_weight_max();
  for (const char* c : kCases) {
    const torch::Tensor x0 = get(std::string(c) + ".x");
    const torch::Tensor x = x0.to(torch::kFloat64).reshape({-1, x0.size(-1)});
    const torch::Tensor w = get(std::string(c) + ".weight").to(torch::kFloat64);
    const std::string p = std::string(c) + ".w" + std::to_string(qmax);
    for (const char* path : {".int8", ".int8_packed", ".int8_packed_f32out"}) {
    const torch::Tensor got = get(p + path).to(torch::kFloat64).reshape({x.size(0), -1});
    const torch::Tensor exact = get(std::string(c) + ".float").to(torch::kFloat64).reshape({x.size(0), -1});
    const torch::Tensor ax = x.abs().amax(1, true), aw = w.abs().amax(1).unsqueeze(0);
    const double k = static_cast<double>(x.size(1));
    const torch::Tensor bound = ax / 254 * w.abs().sum(1).unsqueeze(0) + aw / (2.0 * qmax) * x.abs().sum(1, true) +
                                k * ax * aw / (254.0 * 2 * qmax);
    // The output's rounding: bf16 2^-8 of the value (twice on the packed path), float32 ~1e-6.
    const double rounding = x0.scalar_type() == torch::kBFloat16 ? 2.0 / 256 : 1e-6;
    const torch::Tensor excess = (got - exact).abs() - bound - rounding * (exact.abs() + bound);
    EXPECT_LE(excess.max().item<double>(), 0.0) << c;
    std::cout << "[ int8 error ] " << c << ": max |int8 - float64| / max |float64| = "
              << ((got - exact).abs().max() / exact.abs().max()).item<double>()
              << ", largest share of the bound used " << ((got - exact).abs() / bound).max().item<double>() << " ("
              << path << ")\n";
    }
  }
}

TEST(Quantize, WeightOnlyMatchesPyTorch) {
  for (const char* c : kCases) {
    const std::string name(c);
    const QuantizedWeight w{get(name + ".w127.values"), get(name + ".w127.scales")};
    const torch::Tensor got = int8_weight_only_linear(get(name + ".x"), w, bias_of(c));
    const torch::Tensor want = get(name + ".weight_only");
    ASSERT_EQ(got.sizes(), want.sizes());
    // One float GEMM each (PyTorch and here): equal up to the GEMM's accumulation order, <= 2
    // ulps of the output dtype of the largest value (measured: 0 in float32 on x86 MKL).
    const double ulp = want.scalar_type() == torch::kBFloat16 ? 1.0 / 128 : 2.4e-7;
    const double scale = want.to(torch::kFloat64).abs().max().item<double>();
    EXPECT_LE((got.to(torch::kFloat64) - want.to(torch::kFloat64)).abs().max().item<double>(), 2 * ulp * scale) << c;
    Linear linear = linear_of(c);
    linear->set_matmul_mode(MatmulMode::kInt8WeightOnly);
    EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kInt8WeightOnly);
    EXPECT_TRUE(torch::equal(linear->forward(get(name + ".x")), got)) << c;
  }
}

TEST(Quantize, ZeroAndNanTokens) {
  torch::manual_seed(3);
  Linear linear(torch::randn({8, 16}), torch::randn({8}));
  const torch::Tensor bias = linear->bias.clone();
  linear->set_matmul_mode(MatmulMode::kInt8);
  torch::Tensor x = torch::randn({4, 16});
  const torch::Tensor clean = linear->forward(x);
  x[1].zero_();
  x[2][3] = std::nan("");
  x[3][0] = INFINITY;
  const torch::Tensor y = linear->forward(x);
  EXPECT_TRUE(torch::equal(y[0], clean[0])) << "other tokens are untouched";
  EXPECT_TRUE(torch::equal(y[1], bias)) << "an all-zero token gives the bias";
  EXPECT_TRUE(torch::isnan(y[2]).all().item<bool>()) << "NaN reaches the output";
  EXPECT_TRUE(torch::isnan(y[3]).all().item<bool>()) << "Inf gives NaN, as Inf * 0 in a float matmul";
  EXPECT_EQ(linear->forward(torch::randn({0, 16})).sizes(), (std::vector<int64_t>{0, 8}));
}

TEST(Quantize, QuantizedLayerRefusesASecondQuantizationAndMoves) {
  Linear linear(torch::randn({8, 16}), torch::randn({8}));
  linear->set_matmul_mode(MatmulMode::kInt8);
  expect_error([&] { linear->set_matmul_mode(MatmulMode::kInt8); }, {"nn::Linear", "int8", "released", "load"});
  expect_error([&] { linear->set_matmul_mode(MatmulMode::kNative); }, {"nn::Linear", "released"});
  expect_error([&] { linear->to(torch::kBFloat16); }, {"nn::Linear", "released"});
  EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kInt8) << "still runs";
  // The tree walkers leave quantized layers as they are.
  EXPECT_EQ(set_cpu_bf16_matmul(*linear, CpuBf16Matmul::kFloat32), 0);
  EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kInt8);
}

TEST(Quantize, FusedBlockQuantizesOnceAndStaysFused) {
  torch::manual_seed(4);
  const auto options = torch::TensorOptions().dtype(torch::kBFloat16);
  Linear q(16, 24, true, options), k(16, 8, true, options), v(16, 8, true, options);
  {
    torch::NoGradGuard no_grad;
    for (auto* l : {&q, &k, &v}) {
      (*l)->weight.normal_();
      (*l)->bias.normal_();
    }
  }
  // Each part alone, quantized: the oracle for the fused block's rows (per-row scales).
  std::vector<torch::Tensor> want;
  const torch::Tensor x = torch::randn({5, 16}).to(torch::kBFloat16);
  for (auto* l : {&q, &k, &v}) {
    Linear alone((*l)->weight.clone(), (*l)->bias.clone());
    alone->set_matmul_mode(MatmulMode::kInt8);
    want.push_back(alone->forward(x));
  }
  FusedLinear fused(std::vector<Linear>{q, k, v});
  torch::nn::Module holder;
  holder.register_module("q", q);
  holder.register_module("qkv", fused);
  int64_t asked = 0;
  const int64_t n = set_matmul_mode(holder, MatmulMode::kInt8, [&](const std::string& path, const LinearImpl&) {
    ++asked;
    return path == "qkv";
  });
  EXPECT_EQ(n, 3) << "the block's three parts";
  EXPECT_EQ(asked, 1) << "the parts go with their block";
  EXPECT_TRUE(fused->fused());
  for (auto* l : {&q, &k, &v}) EXPECT_TRUE((*l)->weight_released());
  const auto got = fused->forward(x);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(torch::equal(got[i], want[i])) << "part " << i;
  expect_error([&] { fused->set_matmul_mode(MatmulMode::kFp32Copies); }, {"released"});
  EXPECT_TRUE(fused->fused()) << "a refused change leaves the block working";
}

TEST(Quantize, Fp8NeedsCuda) {
  Linear linear(torch::randn({16, 16}), torch::Tensor());
  expect_error([&] { linear->set_matmul_mode(MatmulMode::kFp8); }, {"nn::Linear", "fp8", "CUDA", "8.9"});
  EXPECT_EQ(linear->matmul_mode(), MatmulMode::kNative) << "refused before anything changed";
  EXPECT_FALSE(linear->weight_released());
  const QuantizedWeight w = quantize_rows_fp8(torch::randn({16, 16}));
  expect_error([&] { fp8_linear(torch::randn({2, 16}), w, torch::Tensor()); }, {"fp8_linear", "CUDA"});
  std::string why;
  EXPECT_FALSE(fp8_supported(torch::kCPU, &why));
  EXPECT_NE(why.find("8.9"), std::string::npos) << why;
}

TEST(Quantize, BadInputsAreNamedErrors) {
  expect_error([] { parse_quantize("int4", "--quantize"); }, {"--quantize", "int4", "none, int8 or fp8"});
  EXPECT_EQ(parse_quantize("w8a8"), Quantize::kInt8);
  EXPECT_EQ(parse_quantize("e4m3"), Quantize::kFp8);
  EXPECT_EQ(quantize_name(Quantize::kNone), "none");
  const QuantizedWeight w = quantize_rows_int8(torch::randn({8, 16}), cpu_int8_weight_max());
  expect_error([&] { int8_linear(torch::randn({2, 15}), w, torch::Tensor()); }, {"int8_linear", "15 features", "16"});
  expect_error([&] { int8_linear(torch::ones({2, 16}, torch::kInt32), w, torch::Tensor()); }, {"int8_linear", "dtype"});
  expect_error([&] { int8_linear(torch::randn({2, 16}), w, torch::randn({7})); }, {"int8_linear", "bias"});
  QuantizedWeight odd_term = w;
  odd_term.zero_point_term = torch::zeros({7});
  expect_error([&] { int8_linear(torch::randn({2, 16}), odd_term, torch::Tensor()); }, {"int8_linear", "zero_point_term"});
  expect_error([&] { pack_int8({w.values, torch::ones({7})}); }, {"pack_int8", "one scale per weight row"});
  expect_error([] { quantize_rows_int8(torch::randn({8}), 127); }, {"quantize_rows_int8", "(N, K)"});
  expect_error([] { quantize_rows_int8(torch::randn({8, 8}), 200); }, {"qmax"});
}

}  // namespace
}  // namespace focusvla::nn
