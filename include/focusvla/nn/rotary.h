#pragma once
// Rotary position embedding in one pass: y = x * cos + rotate(x) * sin over the last dimension,
// with cos / sin rows chosen by each element's position. The decoder (rotate-half pairs, HF
// apply_rotary_pos_emb) and the policy head (interleaved pairs, SPEC 8) both run it.
//
// The unfused expression runs three elementwise ops, each rounding to x's dtype; this loop
// rounds at the same three places (float products and sum, then the dtype), so it is bit for bit
// the expression (tests/nn/test_rotary.cpp) at a fraction of the passes over memory. float32 and
// bfloat16 on the CPU; any other dtype or device runs the expression itself.

#include <torch/torch.h>

namespace focusvla::nn {

enum class RotaryPairs {
  kHalves,       // rotate(x) = cat(-x[D/2:], x[:D/2]) (HF rotate_half)
  kInterleaved,  // rotate(x)[2i] = -x[2i+1], rotate(x)[2i+1] = x[2i]
};

// x (d0, d1, d2, D), any strides; cos / sin (T, D) in x's dtype with T = x.size(position_dim)
// (1 or 2). Returns a new contiguous tensor of x's shape and dtype. Throws Error naming the
// mismatch for other shapes.
torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int64_t position_dim,
                     RotaryPairs pairs);

// The unfused expression (what rotary computes; the oracle of its tests and the path for other
// dtypes and devices).
torch::Tensor rotary_reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                               int64_t position_dim, RotaryPairs pairs);

}  // namespace focusvla::nn
