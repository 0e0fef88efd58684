#pragma once
// Tensor comparisons shared by the conformance tests (LibTorch; test_util.h stays Torch-free for
// the AddressSanitizer build).

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <limits>

namespace focusvla::testing {

// max|a - b| / max|b| in double; infinity when the shapes differ or `actual` has a NaN or Inf
// (so a poisoned, unwritten output fails any tolerance).
inline double relative_error(const torch::Tensor& actual, const torch::Tensor& expected) {
  const auto a = actual.to(torch::kFloat64);
  const auto b = expected.to(torch::kFloat64);
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return std::numeric_limits<double>::infinity();
  if (!torch::isfinite(a).all().item<bool>()) return std::numeric_limits<double>::infinity();
  const double scale = b.abs().max().item<double>();
  return (a - b).abs().max().item<double>() / std::max(scale, 1e-30);
}

}  // namespace focusvla::testing
