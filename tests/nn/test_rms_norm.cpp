// nn::rms_norm against the expression it replaces (HF Qwen2RMSNorm: eight LibTorch ops): bit for
// bit for fp32 and bf16, rows of very different scales, zero rows, NaN / Inf rows; other dtypes,
// non-contiguous inputs and mixed dtypes run the expression itself; a misfit weight is named.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "focusvla/nn/rms_norm.h"
#include "test_util.h"

namespace focusvla::nn {
namespace {

using focusvla::testing::expect_error;

// The decoder's shape (B, L, 896), rows scaled from 1e-3 to 1e3 (as the residual stream grows).
torch::Tensor rows(int64_t length, int64_t dim, torch::ScalarType dtype) {
  const auto scale = torch::pow(10.0, torch::linspace(-3, 3, length)).view({1, length, 1});
  return (torch::randn({2, length, dim}) * scale).to(dtype);
}

TEST(RmsNorm, EqualsTheExpressionBitForBit) {
  torch::manual_seed(0);
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (const int64_t dim : {896, 64, 33}) {
      const auto x = rows(97, dim, dtype);
      const auto weight = (torch::randn({dim}) * 0.5 + 1).to(dtype);
      for (const double eps : {1e-6, 1e-5}) {
        const auto y = rms_norm(x, weight, eps);
        EXPECT_EQ(y.scalar_type(), dtype);
        EXPECT_TRUE(y.is_contiguous());
        EXPECT_TRUE(torch::equal(y, rms_norm_reference(x, weight, eps))) << dtype << " dim " << dim;
      }
    }
  }
}

// A zero row (its scale is rsqrt(eps)), a row with one NaN, one with an Inf: as the expression.
TEST(RmsNorm, ZeroNanAndInfRowsAsTheExpression) {
  torch::manual_seed(1);
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto x = rows(8, 896, dtype);
    x[0][1].zero_();
    x[0][2][5] = std::numeric_limits<float>::quiet_NaN();
    x[1][3][7] = std::numeric_limits<float>::infinity();
    const auto weight = torch::randn({896}).to(dtype);
    const auto y = rms_norm(x, weight, 1e-6);
    const auto expected = rms_norm_reference(x, weight, 1e-6);
    EXPECT_TRUE(torch::equal(y.isnan(), expected.isnan())) << dtype;
    EXPECT_TRUE(torch::equal(torch::nan_to_num(y, 0.0), torch::nan_to_num(expected, 0.0))) << dtype;
    EXPECT_TRUE(torch::equal(y[0][1], expected[0][1]));
    EXPECT_TRUE(y[0][2].isnan().all().item<bool>());
  }
}

// What the loops do not take runs the expression: fp16, a transposed input, a float32 weight
// for a bf16 input (the expression promotes the output to float32).
TEST(RmsNorm, OtherInputsRunTheExpression) {
  torch::manual_seed(2);
  const auto x = rows(16, 64, torch::kFloat32);
  const auto weight = torch::randn({64});
  const auto half = rms_norm(x.to(torch::kFloat16), weight.to(torch::kFloat16), 1e-6);
  EXPECT_TRUE(torch::equal(half, rms_norm_reference(x.to(torch::kFloat16), weight.to(torch::kFloat16), 1e-6)));
  const auto square = torch::randn({64, 64});
  EXPECT_TRUE(torch::equal(rms_norm(square.t(), weight, 1e-6), rms_norm_reference(square.t(), weight, 1e-6)));
  const auto mixed = rms_norm(x.to(torch::kBFloat16), weight, 1e-6);
  EXPECT_EQ(mixed.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(mixed, rms_norm_reference(x.to(torch::kBFloat16), weight, 1e-6)));
}

TEST(RmsNorm, MisfitWeightIsNamed) {
  const auto x = torch::randn({2, 3, 8});
  expect_error([&] { rms_norm(x, torch::ones({7}), 1e-6); }, {"RMSNorm", "weight must be (8)", "[7]"});
  expect_error([&] { rms_norm(x, torch::Tensor(), 1e-6); }, {"RMSNorm", "none"});
}

}  // namespace
}  // namespace focusvla::nn
