// nn/fused_linear.h: parts fused into one matmul (one nn::Linear over the concatenated weight)
// give what each part's own forward gives, in every MatmulMode; the parameters stay views
// (loading writes through them) and the mode's derived tensors (fp32 copies) are the fused
// block's, each part viewing its rows; a part replaced by a caller, or given its own mode,
// unfuses the block and forward still answers right (separately); fuse(), set_matmul_mode and
// Module::to() re-fuse; parts that cannot be fused are refused by name.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "focusvla/core/error.h"
#include "focusvla/nn/fused_linear.h"
#include "test_util.h"

namespace focusvla::nn {
namespace {

using testing::expect_error;

const torch::TensorOptions kF32;  // float32 on the CPU

std::vector<Linear> random_parts(bool bias, torch::ScalarType dtype = torch::kFloat32) {
  torch::manual_seed(3);
  std::vector<Linear> parts;
  for (const int64_t rows : {12, 4, 4}) {
    Linear p(16, rows, bias, torch::TensorOptions().dtype(dtype));
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

// bf16 outputs within one bf16 ulp (2^-8 relative): a BLAS may sum the 16 products in another
// order for the fused block than for a part alone, and the final bf16 rounding can then differ.
void expect_within_a_bf16_ulp(const torch::Tensor& got, const torch::Tensor& want, const std::string& label) {
  EXPECT_EQ(got.scalar_type(), torch::kBFloat16) << label;
  EXPECT_TRUE(torch::allclose(got.to(torch::kFloat32), want.to(torch::kFloat32), 1.0 / 256, 1e-6)) << label;
}

TEST(FusedLinear, OneMatmulEqualsEachPart) {
  for (const bool bias : {true, false}) {
    auto parts = random_parts(bias);
    FusedLinear fused(parts);
    EXPECT_TRUE(fused->fused());
    EXPECT_EQ(fused->linear()->weight.size(0), 20);
    const auto x = torch::randn({2, 5, 16});
    expect_parts_equal(fused->forward(x), parts, x);

    // Writing a parameter (as loading does) writes the fused block: still one matmul, new values.
    {
      torch::NoGradGuard no_grad;
      parts[1]->weight.copy_(torch::randn({4, 16}));
    }
    EXPECT_TRUE(fused->fused());
    expect_parts_equal(fused->forward(x), parts, x);
  }
}

TEST(FusedLinear, AReplacedPartRunsSeparatelyUntilRefused) {
  auto parts = random_parts(true);
  FusedLinear fused(parts);
  const auto x = torch::randn({3, 16});
  parts[2]->weight.set_data(torch::randn({4, 16}));  // no longer a view of the block
  EXPECT_FALSE(fused->fused());
  expect_parts_equal(fused->forward(x), parts, x);
  fused->fuse();
  EXPECT_TRUE(fused->fused());
  expect_parts_equal(fused->forward(x), parts, x);
}

// The fused forward equals each part's own Linear::forward, in both modes, and the products of
// the mode (kFp32Copies: the bf16 operands multiplied in fp32, rounded once to bf16).
TEST(FusedLinear, ForwardEqualsThePartsForwardsInBothModes) {
  auto parts = random_parts(true, torch::kBFloat16);
  FusedLinear fused(parts);
  const auto x = torch::randn({3, 16}).to(torch::kBFloat16);
  for (const auto mode : {MatmulMode::kFp32Copies, MatmulMode::kNative, MatmulMode::kFp32Copies}) {
    const std::string label = mode == MatmulMode::kNative ? "native" : "fp32 copies";
    fused->set_matmul_mode(mode);
    EXPECT_TRUE(fused->fused()) << label << ": one matmul, the parts viewing the block's derived rows";
    EXPECT_EQ(fused->linear()->active_matmul_mode(), mode) << label;
    const auto got = fused->forward(x);
    ASSERT_EQ(got.size(), parts.size());
    for (size_t i = 0; i < parts.size(); ++i) {
      const std::string part = label + ", part " + std::to_string(i);
      EXPECT_EQ(parts[i]->matmul_mode(), mode) << part;
      EXPECT_EQ(parts[i]->active_matmul_mode(), mode) << part;
      expect_within_a_bf16_ulp(got[i], parts[i]->forward(x), part + " vs its own forward");
      const auto want = mode == MatmulMode::kNative
                            ? torch::linear(x, parts[i]->weight, parts[i]->bias)
                            : linear_bf16_as_fp32(x, parts[i]->weight.to(torch::kFloat32), parts[i]->bias.to(torch::kFloat32));
      expect_within_a_bf16_ulp(got[i], want, part + " vs the mode's products");
    }
  }
  // The block's fp32 copies in one matmul: exactly linear_bf16_as_fp32 of the whole block.
  const auto whole = fused->linear();
  const auto y = linear_bf16_as_fp32(x, whole->weight.to(torch::kFloat32), whole->bias.to(torch::kFloat32));
  const auto got = fused->forward(x);
  EXPECT_TRUE(torch::equal(torch::cat(got, -1), y));
}

// A part given its own mode stops sharing the block's: forward runs the parts separately (each
// in its own mode) until fuse() gives the block the parts' mode again.
TEST(FusedLinear, APartWithItsOwnModeRunsSeparatelyUntilRefused) {
  auto parts = random_parts(false, torch::kBFloat16);
  FusedLinear fused(parts);
  const auto x = torch::randn({2, 16}).to(torch::kBFloat16);
  parts[0]->set_matmul_mode(MatmulMode::kFp32Copies);
  EXPECT_FALSE(fused->fused());
  auto got = fused->forward(x);
  EXPECT_TRUE(torch::equal(got[0], linear_bf16_as_fp32(x, parts[0]->weight.to(torch::kFloat32), {})));
  EXPECT_TRUE(torch::equal(got[1], torch::linear(x, parts[1]->weight)));
  fused->fuse();
  EXPECT_FALSE(fused->fused()) << "the parts disagree: each keeps its own";
  for (auto& p : parts) p->set_matmul_mode(MatmulMode::kFp32Copies);
  fused->fuse();
  EXPECT_TRUE(fused->fused());
  got = fused->forward(x);
  for (size_t i = 0; i < parts.size(); ++i)
    expect_within_a_bf16_ulp(got[i], linear_bf16_as_fp32(x, parts[i]->weight.to(torch::kFloat32), {}),
                             "part " + std::to_string(i));
}

struct HolderImpl : torch::nn::Module {
  explicit HolderImpl(const torch::TensorOptions& options)
      : a(register_module("a", Linear(8, 3, true, options))),
        b(register_module("b", Linear(8, 5, true, options))),
        ab(register_module("ab", FusedLinear(std::vector<Linear>{a, b}))) {}
  Linear a, b;
  FusedLinear ab;
};
TORCH_MODULE(Holder);

TEST(FusedLinear, ModuleToRefuses) {
  Holder holder(kF32);
  holder->to(torch::kFloat64);
  EXPECT_TRUE(holder->ab->fused());
  EXPECT_EQ(holder->a->weight.scalar_type(), torch::kFloat64);
  const auto x = torch::randn({2, 8}, torch::kFloat64);
  expect_parts_equal(holder->ab->forward(x), {holder->a, holder->b}, x);
  // The parameters keep their names; the fused block adds none.
  std::vector<std::string> names;
  for (const auto& p : holder->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"a.weight", "a.bias", "b.weight", "b.bias"}));
}

// Module::to() keeps every Linear's mode: fp32 copies appear for bf16 CPU weights and go for
// others, re-fused for the block.
TEST(FusedLinear, ModuleToKeepsTheModeOfTheBlock) {
  Holder holder(kF32);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : holder->parameters()) p.normal_();
  }
  EXPECT_EQ(set_cpu_bf16_matmul(*holder, CpuBf16Matmul::kFloat32), 0) << "fp32 weights need no copies";
  holder->to(torch::kBFloat16);
  EXPECT_TRUE(holder->ab->fused());
  EXPECT_EQ(holder->ab->linear()->active_matmul_mode(), MatmulMode::kFp32Copies);
  EXPECT_EQ(holder->a->active_matmul_mode(), MatmulMode::kFp32Copies);
  EXPECT_EQ(holder->b->active_matmul_mode(), MatmulMode::kFp32Copies);
  const auto x = torch::randn({2, 8}).to(torch::kBFloat16);
  const auto got = holder->ab->forward(x);
  const Linear parts[] = {holder->a, holder->b};
  for (size_t i = 0; i < 2; ++i)
    expect_within_a_bf16_ulp(got[i], linear_bf16_as_fp32(x, parts[i]->weight.to(torch::kFloat32), parts[i]->bias.to(torch::kFloat32)),
                             "part " + std::to_string(i));
  holder->to(torch::kFloat32);
  EXPECT_TRUE(holder->ab->fused());
  EXPECT_EQ(holder->ab->linear()->active_matmul_mode(), MatmulMode::kNative);
  EXPECT_EQ(holder->a->active_matmul_mode(), MatmulMode::kNative);
  EXPECT_EQ(holder->a->matmul_mode(), MatmulMode::kFp32Copies) << "the mode stays, for a later bf16";
  const auto x32 = torch::randn({2, 8});
  expect_parts_equal(holder->ab->forward(x32), {holder->a, holder->b}, x32);
}

TEST(FusedLinear, PartsThatCannotBeFusedAreRefused) {
  expect_error([] { FusedLinear none(std::vector<Linear>{}); }, {"FusedLinear", "no parts"});
  expect_error([] { FusedLinear f(std::vector<Linear>{Linear(8, 2, true, kF32), Linear(9, 2, true, kF32)}); },
               {"FusedLinear", "in_features"});
  expect_error([] { FusedLinear f(std::vector<Linear>{Linear(8, 2, true, kF32), Linear(8, 2, false, kF32)}); },
               {"FusedLinear", "bias"});
  expect_error([] { FusedLinear f(std::vector<Linear>{Linear(8, 2, true, kF32), Linear(8, 2, true, torch::kBFloat16)}); },
               {"FusedLinear", "dtype"});
}

// Init::kUninitialised (a model built before its load): the block is allocated, not copied from
// the parts; the parts view its rows, so writing them (a load) fills the block and the fused
// forward equals each part's.
TEST(FusedLinear, UninitialisedBlockIsFilledThroughTheParts) {
  std::vector<Linear> parts;
  for (const int64_t rows : {12, 4, 4}) parts.push_back(Linear(16, rows, true, kF32));
  FusedLinear fused(parts, FusedLinearImpl::Init::kUninitialised);
  ASSERT_TRUE(fused->fused());
  const auto values = random_parts(/*bias=*/true);
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < parts.size(); ++i) {
      parts[i]->weight.copy_(values[i]->weight);
      parts[i]->bias.copy_(values[i]->bias);
    }
  }
  ASSERT_TRUE(fused->fused());
  const auto x = torch::randn({5, 16});
  expect_parts_equal(fused->forward(x), values, x);
}

}  // namespace
}  // namespace focusvla::nn
