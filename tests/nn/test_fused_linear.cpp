// nn/fused_linear.h: parts fused into one matmul give what each part's own torch::linear gives;
// the parameters stay views (loading writes through them); a part replaced by a caller unfuses
// the block and forward still answers right (separately); fuse() and Module::to() re-fuse; fp32
// copies follow the fused weights; parts that cannot be fused are refused by name.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "focusvla/core/error.h"
#include "focusvla/nn/fused_linear.h"
#include "test_util.h"

namespace focusvla::nn {
namespace {

using testing::expect_error;

const torch::TensorOptions kF32;  // float32 on the CPU

std::vector<Linear> random_parts(bool bias) {
  torch::manual_seed(3);
  std::vector<Linear> parts;
  for (const int64_t rows : {12, 4, 4}) {
    Linear p(16, rows, bias, torch::TensorOptions());
    torch::NoGradGuard no_grad;
    p->weight.normal_();
    if (bias) p->bias.normal_();
    parts.push_back(p);
  }
  return parts;
}

void expect_parts_equal(const std::vector<torch::Tensor>& got, const std::vector<Linear>& parts, const torch::Tensor& x) {
  ASSERT_EQ(got.size(), parts.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto want = torch::linear(x, parts[i]->weight, parts[i]->bias);
    EXPECT_TRUE(torch::allclose(got[i], want, 1e-6, 1e-6)) << "part " << i;
  }
}

TEST(FusedLinear, OneMatmulEqualsEachPart) {
  for (const bool bias : {true, false}) {
    auto parts = random_parts(bias);
    FusedLinear fused(parts);
    EXPECT_TRUE(fused.fused());
    const auto x = torch::randn({2, 5, 16});
    expect_parts_equal(fused.forward(x), parts, x);

    // Writing a parameter (as loading does) writes the fused block: still one matmul, new values.
    {
      torch::NoGradGuard no_grad;
      parts[1]->weight.copy_(torch::randn({4, 16}));
    }
    EXPECT_TRUE(fused.fused());
    expect_parts_equal(fused.forward(x), parts, x);
  }
}

TEST(FusedLinear, AReplacedPartRunsSeparatelyUntilRefused) {
  auto parts = random_parts(true);
  FusedLinear fused(parts);
  const auto x = torch::randn({3, 16});
  parts[2]->weight.set_data(torch::randn({4, 16}));  // no longer a view of the block
  EXPECT_FALSE(fused.fused());
  expect_parts_equal(fused.forward(x), parts, x);
  fused.fuse();
  EXPECT_TRUE(fused.fused());
  expect_parts_equal(fused.forward(x), parts, x);
}

TEST(FusedLinear, Fp32CopiesOfBf16WeightsFollowTheFusedBlock) {
  auto parts = random_parts(true);
  for (auto& p : parts) p->to(torch::kBFloat16);
  FusedLinear fused(parts);
  fused.keep_fp32_copy(true);
  const auto x = torch::randn({3, 16}).to(torch::kBFloat16);
  const auto got = fused.forward(x);
  for (size_t i = 0; i < parts.size(); ++i) {
    // The products of the bf16 operands in fp32, rounded once to bf16.
    const auto want = torch::linear(x.to(torch::kFloat32), parts[i]->weight.to(torch::kFloat32),
                                    parts[i]->bias.to(torch::kFloat32)).to(torch::kBFloat16);
    // One bf16 ulp (2^-8 relative) allowed: a BLAS may sum the 16 products in another order for
    // the fused block than for a part alone, and the final bf16 rounding can then differ.
    EXPECT_EQ(got[i].scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::allclose(got[i].to(torch::kFloat32), want.to(torch::kFloat32), 1.0 / 256, 1e-6)) << "part " << i;
  }
  // Copies dropped: LibTorch's bf16 kernel, as each part's own bf16 torch::linear (one ulp).
  fused.keep_fp32_copy(false);
  const auto native = fused.forward(x);
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto want = torch::linear(x, parts[i]->weight, parts[i]->bias);
    EXPECT_TRUE(torch::allclose(native[i].to(torch::kFloat32), want.to(torch::kFloat32), 1.0 / 256, 1e-6)) << "part " << i;
  }
}

TEST(FusedLinear, ModuleToRefuses) {
  struct Holder : FusingModule {
    Holder() : a(register_module("a", Linear(8, 3, true, kF32))), b(register_module("b", Linear(8, 5, true, kF32))), ab({a, b}) {}
    void after_to() override { ab.fuse(); }
    Linear a, b;
    FusedLinear ab;
  };
  Holder holder;
  holder.to(torch::kFloat64);
  EXPECT_TRUE(holder.ab.fused());
  EXPECT_EQ(holder.a->weight.scalar_type(), torch::kFloat64);
  const auto x = torch::randn({2, 8}, torch::kFloat64);
  expect_parts_equal(holder.ab.forward(x), {holder.a, holder.b}, x);
}

TEST(FusedLinear, PartsThatCannotBeFusedAreRefused) {
  expect_error([] { FusedLinear none(std::vector<Linear>{}); }, {"FusedLinear", "no parts"});
  expect_error([] { FusedLinear f({Linear(8, 2, true, kF32), Linear(9, 2, true, kF32)}); }, {"FusedLinear", "in_features"});
  expect_error([] { FusedLinear f({Linear(8, 2, true, kF32), Linear(8, 2, false, kF32)}); }, {"FusedLinear", "bias"});
}

}  // namespace
}  // namespace focusvla::nn
