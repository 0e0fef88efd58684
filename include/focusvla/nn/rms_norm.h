#pragma once
// HF's RMSNorm (Qwen2RMSNorm): weight * (h * rsqrt(mean(h^2, -1) + eps)).to(x.dtype), h = x in
// float32. The expression runs eight LibTorch ops over the activations (the float copy, the square,
// the mean, the scale, the conversion, the weight); on the CPU for float32 / bfloat16 this runs two
// passes of ours around LibTorch's own mean: the squares (float products, as pow(2) computes them)
// and one pass for the rest, rounding where the expression rounds (the float product, the dtype,
// the weight's product). So it is bit for bit the expression (tests/nn/test_rms_norm.cpp); the sum
// stays LibTorch's (its order is its kernel's: reproducing it measured 2x the full-size int8 action
// error, docs/QUANTIZATION.md).

#include <torch/torch.h>

namespace focusvla::nn {

// x (..., D) contiguous float32 or bfloat16 with weight (D) of x's dtype on the CPU: the fused
// form, a new contiguous tensor of x's shape and dtype; anything else: the expression (whose
// dtype follows type promotion). Throws Error naming the mismatch when weight is not (D).
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// The expression itself (the oracle of the tests and the path for other dtypes and devices).
torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps);

}  // namespace focusvla::nn
