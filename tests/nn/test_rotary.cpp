// nn::rotary, the one-pass rotary embedding, against the unfused expression it replaces (three
// LibTorch elementwise ops, each rounding to the dtype): bit for bit, for both pair layouts, both
// position dimensions, strided inputs (views of a fused projection), fp32 and bf16; other dtypes
// run the expression itself; shapes that do not fit are named.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "focusvla/nn/rotary.h"
#include "test_util.h"

namespace focusvla::nn {
namespace {

using focusvla::testing::expect_error;

// cos / sin (T, D) as the models make them: angles of positions x frequencies.
std::pair<torch::Tensor, torch::Tensor> table(int64_t positions, int64_t dim, torch::ScalarType dtype) {
  const auto inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, dim, 2, torch::kFloat64) / dim);
  auto angles = torch::outer(torch::arange(positions, torch::kFloat64), inv_freq);
  angles = torch::cat({angles, angles}, -1);
  return {angles.cos().to(dtype), angles.sin().to(dtype)};
}

TEST(Rotary, EqualsTheUnfusedExpressionBitForBit) {
  torch::manual_seed(0);
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (const auto pairs : {RotaryPairs::kHalves, RotaryPairs::kInterleaved}) {
      // The decoder's layout: q / k as views of a (B, L, 1152) projection, positions on dim 1.
      const auto fused = torch::randn({2, 37, 1152}).mul(3).to(dtype);
      const auto q = fused.narrow(2, 0, 896).view({2, 37, 14, 64});
      const auto k = fused.narrow(2, 896, 128).view({2, 37, 2, 64});
      const auto [cos1, sin1] = table(37, 64, dtype);
      for (const auto& x : {q, k}) {
        const auto y = rotary(x, cos1, sin1, 1, pairs);
        EXPECT_TRUE(y.is_contiguous());
        EXPECT_TRUE(torch::equal(y, rotary_reference(x, cos1, sin1, 1, pairs))) << dtype;
      }
      // The head's layout: (B, heads, T, D) as a transposed view, positions on dim 2; D = 112.
      const auto h = torch::randn({3, 512, 8, 112}).to(dtype).transpose(1, 2);
      const auto [cos2, sin2] = table(512, 112, dtype);
      EXPECT_TRUE(torch::equal(rotary(h, cos2, sin2, 2, pairs), rotary_reference(h, cos2, sin2, 2, pairs))) << dtype;
    }
  }
}

// The unfused expression in HF's own form (cat of the negated halves; x * cos + rotated * sin) and
// the head's (stacked pairs): what rotary_reference stands for.
TEST(Rotary, ReferenceIsTheModelsExpression) {
  torch::manual_seed(1);
  const auto x = torch::randn({1, 5, 3, 8}).to(torch::kBFloat16);
  const auto [cos, sin] = table(5, 8, torch::kBFloat16);
  const auto c = cos.view({1, 5, 1, 8}), s = sin.view({1, 5, 1, 8});
  const auto halves = torch::cat({-x.narrow(3, 4, 4), x.narrow(3, 0, 4)}, 3);
  EXPECT_TRUE(torch::equal(rotary_reference(x, cos, sin, 1, RotaryPairs::kHalves), x * c + halves * s));
  const auto p = x.unflatten(-1, {-1, 2});
  const auto pairs = torch::stack({-p.select(-1, 1), p.select(-1, 0)}, -1).flatten(-2);
  EXPECT_TRUE(torch::equal(rotary_reference(x, cos, sin, 1, RotaryPairs::kInterleaved), x * c + pairs * s));
}

TEST(Rotary, OtherDtypesRunTheExpression) {
  const auto x = torch::randn({1, 4, 2, 6}, torch::kFloat64);
  const auto [cos, sin] = table(4, 6, torch::kFloat64);
  EXPECT_TRUE(torch::equal(rotary(x, cos, sin, 1, RotaryPairs::kHalves),
                           rotary_reference(x, cos, sin, 1, RotaryPairs::kHalves)));
  EXPECT_EQ(rotary(x.to(torch::kFloat16), cos.to(torch::kFloat16), sin.to(torch::kFloat16), 1, RotaryPairs::kHalves)
                .scalar_type(),
            torch::kFloat16);
}

TEST(Rotary, ShapesThatDoNotFitAreNamed) {
  const auto x = torch::randn({1, 4, 2, 6});
  const auto [cos, sin] = table(4, 6, torch::kFloat32);
  expect_error([&] { rotary(x, cos.narrow(0, 0, 3), sin, 1, RotaryPairs::kHalves); },
               {"rotary embedding", "cos / sin must be [4, 6]", "[3, 6]"});
  expect_error([&] { rotary(x, cos, sin, 3, RotaryPairs::kHalves); }, {"rotary embedding", "position dimension"});
  expect_error([&] { rotary(x.view({1, 4, 12}), cos, sin, 1, RotaryPairs::kHalves); }, {"rotary embedding", "rank 4"});
  const auto odd = torch::randn({1, 4, 2, 5});
  const auto [c5, s5] = table(4, 6, torch::kFloat32);
  expect_error([&] { rotary(odd, c5, s5, 1, RotaryPairs::kHalves); }, {"rotary embedding", "even"});
}

}  // namespace
}  // namespace focusvla::nn
