// nn/linear.h and nn/matmul.h: nn::Linear owns how its weight multiplies. kFp32Copies on bf16
// CPU weights is exactly linear_bf16_as_fp32 of copies made once; other weights run natively;
// the mode survives Module::to() (copies made again, or dropped, for the new dtype); a weight
// replaced after the copies were made runs natively, never with stale copies. One walker sets
// the mode over a module tree and counts, kAuto follows cpu_has_native_bf16().

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>

#include "focusvla/nn/fused_linear.h"
#include "focusvla/nn/layers.h"
#include "focusvla/nn/linear.h"
#include "focusvla/nn/matmul.h"

namespace focusvla::nn {
namespace {

Linear random_linear(int64_t in, int64_t out, bool bias, torch::ScalarType dtype) {
  Linear linear(in, out, bias, torch::TensorOptions().dtype(dtype));
  torch::NoGradGuard no_grad;
  linear->weight.normal_();
  if (bias) linear->bias.normal_();
  return linear;
}

torch::Tensor fp32_or_none(const torch::Tensor& t) { return t.defined() ? t.to(torch::kFloat32) : torch::Tensor(); }

TEST(LinearMatmulMode, Fp32CopiesEqualLinearBf16AsFp32) {
  torch::manual_seed(5);
  for (const bool bias : {true, false}) {
    auto linear = random_linear(32, 24, bias, torch::kBFloat16);
    const auto x = torch::randn({2, 7, 32}).to(torch::kBFloat16);
    EXPECT_EQ(linear->matmul_mode(), MatmulMode::kNative) << "the default";
    EXPECT_TRUE(torch::equal(linear->forward(x), torch::linear(x, linear->weight, linear->bias)));

    linear->set_matmul_mode(MatmulMode::kFp32Copies);
    EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kFp32Copies);
    const auto got = linear->forward(x);
    EXPECT_EQ(got.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(got, linear_bf16_as_fp32(x, linear->weight.to(torch::kFloat32), fp32_or_none(linear->bias))))
        << "bias " << bias;

    linear->set_matmul_mode(MatmulMode::kNative);
    EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kNative);
    EXPECT_TRUE(torch::equal(linear->forward(x), torch::linear(x, linear->weight, linear->bias)));
  }
}

// The copies are made once, from the weights as they are: an in-place load needs set_matmul_mode
// again; a weight replaced (set_data) runs natively until then, never with the stale copies.
TEST(LinearMatmulMode, CopiesFollowTheWeightsTheyWereMadeFrom) {
  torch::manual_seed(6);
  auto linear = random_linear(16, 8, true, torch::kBFloat16);
  linear->set_matmul_mode(MatmulMode::kFp32Copies);
  const auto x = torch::randn({3, 16}).to(torch::kBFloat16);
  linear->weight.set_data(torch::randn({8, 16}).to(torch::kBFloat16));
  EXPECT_EQ(linear->matmul_mode(), MatmulMode::kFp32Copies);
  EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kNative);
  EXPECT_TRUE(torch::equal(linear->forward(x), torch::linear(x, linear->weight, linear->bias)));
  linear->set_matmul_mode(MatmulMode::kFp32Copies);
  EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kFp32Copies);
  EXPECT_TRUE(torch::equal(linear->forward(x), linear_bf16_as_fp32(x, linear->weight.to(torch::kFloat32),
                                                                   linear->bias.to(torch::kFloat32))));
}

TEST(LinearMatmulMode, Fp32CopiesOnlyForBf16CpuWeights) {
  torch::manual_seed(7);
  auto linear = random_linear(16, 8, true, torch::kFloat32);
  linear->set_matmul_mode(MatmulMode::kFp32Copies);
  EXPECT_EQ(linear->matmul_mode(), MatmulMode::kFp32Copies);
  EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kNative) << "fp32 weights need no copies";
  const auto x = torch::randn({3, 16});
  EXPECT_TRUE(torch::equal(linear->forward(x), torch::linear(x, linear->weight, linear->bias)));
  auto half = random_linear(16, 8, true, torch::kFloat16);
  half->set_matmul_mode(MatmulMode::kFp32Copies);
  EXPECT_EQ(half->active_matmul_mode(), MatmulMode::kNative) << "fp16 is not bf16";
}

// Module::to() keeps the mode and makes the copies again for the new dtype (or drops them).
TEST(LinearMatmulMode, ModuleToKeepsOrDropsTheCopies) {
  torch::manual_seed(8);
  auto linear = random_linear(16, 8, true, torch::kFloat32);
  linear->set_matmul_mode(MatmulMode::kFp32Copies);
  linear->to(torch::kBFloat16);
  EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kFp32Copies);
  const auto x = torch::randn({3, 16}).to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(linear->forward(x), linear_bf16_as_fp32(x, linear->weight.to(torch::kFloat32),
                                                                   linear->bias.to(torch::kFloat32))));
  linear->to(torch::kFloat32);
  EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kNative);
  EXPECT_EQ(linear->matmul_mode(), MatmulMode::kFp32Copies);
  linear->to(torch::Device(torch::kCPU), torch::kBFloat16);
  EXPECT_EQ(linear->active_matmul_mode(), MatmulMode::kFp32Copies);

  // kNative stays native through a move to bf16.
  auto native = random_linear(16, 8, false, torch::kFloat32);
  native->to(torch::kBFloat16);
  EXPECT_EQ(native->active_matmul_mode(), MatmulMode::kNative);
  EXPECT_TRUE(torch::equal(native->forward(x), torch::linear(x, native->weight)));
}

// A tree: two plain Linears, one nested deeper, and a FusedLinear over two more.
struct TreeImpl : torch::nn::Module {
  struct InnerImpl : torch::nn::Module {
    explicit InnerImpl(const torch::TensorOptions& o)
        : c(register_module("c", Linear(8, 8, false, o))),
          d(register_module("d", Linear(8, 4, true, o))),
          e(register_module("e", Linear(8, 4, true, o))),
          de(register_module("de", FusedLinear(std::vector<Linear>{d, e}))) {}
    Linear c, d, e;
    FusedLinear de;
  };
  explicit TreeImpl(const torch::TensorOptions& o)
      : a(register_module("a", Linear(8, 8, true, o))),
        norm(register_module("norm", LayerNorm(8, 1e-6, o))),
        inner(register_module("inner", std::make_shared<InnerImpl>(o))) {}
  std::vector<Linear> linears() const { return {a, inner->c, inner->d, inner->e}; }
  Linear a;
  LayerNorm norm;
  std::shared_ptr<InnerImpl> inner;
};

TEST(LinearMatmulMode, TheWalkerSetsEveryLinearInATree) {
  auto tree = std::make_shared<TreeImpl>(torch::TensorOptions().dtype(torch::kBFloat16));
  EXPECT_EQ(set_cpu_bf16_matmul(*tree, CpuBf16Matmul::kFloat32), 4);
  for (const auto& l : tree->linears()) EXPECT_EQ(l->active_matmul_mode(), MatmulMode::kFp32Copies);
  EXPECT_TRUE(tree->inner->de->fused()) << "the fused block derived once, its parts viewing its rows";
  EXPECT_EQ(tree->inner->de->linear()->active_matmul_mode(), MatmulMode::kFp32Copies);

  EXPECT_EQ(set_cpu_bf16_matmul(*tree, CpuBf16Matmul::kNative), 0);
  for (const auto& l : tree->linears()) EXPECT_EQ(l->active_matmul_mode(), MatmulMode::kNative);
  EXPECT_TRUE(tree->inner->de->fused());
  EXPECT_EQ(set_matmul_mode(*tree, MatmulMode::kNative), 4) << "set_matmul_mode counts the Linears in the mode";

  // kAuto follows the CPU.
  const bool native = cpu_has_native_bf16();
  std::cout << "[ nn ] native bf16 dot products on this CPU: " << native << "\n";
  EXPECT_EQ(matmul_mode_for(CpuBf16Matmul::kAuto), native ? MatmulMode::kNative : MatmulMode::kFp32Copies);
  EXPECT_EQ(set_cpu_bf16_matmul(*tree, CpuBf16Matmul::kAuto), native ? 0 : 4);
  for (const auto& l : tree->linears())
    EXPECT_EQ(l->active_matmul_mode(), native ? MatmulMode::kNative : MatmulMode::kFp32Copies);

  // A Linear is a tree of one (not owned by a shared_ptr: the walker needs none).
  LinearImpl alone(8, 2, true, torch::TensorOptions().dtype(torch::kBFloat16));
  EXPECT_EQ(set_cpu_bf16_matmul(alone, CpuBf16Matmul::kFloat32), 1);
  EXPECT_EQ(alone.active_matmul_mode(), MatmulMode::kFp32Copies);

  // fp32 weights: the mode is set (for a later move to bf16) but nothing is copied.
  auto f32 = std::make_shared<TreeImpl>(torch::TensorOptions());
  EXPECT_EQ(set_cpu_bf16_matmul(*f32, CpuBf16Matmul::kFloat32), 0);
  f32->to(torch::kBFloat16);
  for (const auto& l : f32->linears()) EXPECT_EQ(l->active_matmul_mode(), MatmulMode::kFp32Copies);
  EXPECT_TRUE(f32->inner->de->fused());
}

TEST(LinearMatmulMode, Bf16MatmulInFp32ReportsTheMode) {
  const torch::Device cpu(torch::kCPU), cuda(torch::kCUDA, 0);
  EXPECT_TRUE(bf16_matmul_in_fp32(CpuBf16Matmul::kFloat32, torch::kBFloat16, cpu));
  EXPECT_FALSE(bf16_matmul_in_fp32(CpuBf16Matmul::kNative, torch::kBFloat16, cpu));
  EXPECT_EQ(bf16_matmul_in_fp32(CpuBf16Matmul::kAuto, torch::kBFloat16, cpu), !cpu_has_native_bf16());
  EXPECT_FALSE(bf16_matmul_in_fp32(CpuBf16Matmul::kFloat32, torch::kFloat32, cpu)) << "fp32 weights";
  EXPECT_FALSE(bf16_matmul_in_fp32(CpuBf16Matmul::kFloat32, torch::kFloat16, cpu)) << "fp16 weights";
  EXPECT_FALSE(bf16_matmul_in_fp32(CpuBf16Matmul::kFloat32, torch::kBFloat16, cuda)) << "CUDA multiplies bf16 natively";
}

}  // namespace
}  // namespace focusvla::nn
