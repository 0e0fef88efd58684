#pragma once
// Linear layers that read the same input (q/k/v, gate/up), run as one matmul. Their weights and
// biases become row blocks of one tensor and the parameters views of those rows, so they keep
// their checkpoint names and shapes (loading writes through the views) while forward does one
// matmul and splits its output. Module::to() gives every parameter a new tensor: FusingModule
// re-fuses after it. When a part stops being a view (a caller replaced its weight), forward runs
// the parts separately: slower, never wrong.

#include <torch/torch.h>

#include <vector>

#include "focusvla/nn/layers.h"

namespace focusvla::nn {

// x W^T + b; with `bf16_in_fp32` and a bf16 x, as linear_bf16_as_fp32 of the fp32 copies given,
// or of fp32 copies made for this call when none are given.
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, bool bf16_in_fp32,
                     const torch::Tensor& weight_fp32 = {}, const torch::Tensor& bias_fp32 = {});

class FusedLinear {
 public:
  FusedLinear() = default;
  // The parts share in_features; all have a bias or none has. Fuses them.
  explicit FusedLinear(std::vector<Linear> parts);

  // Makes the parts row blocks of one tensor again (a copy; a no-op when they already are).
  void fuse();
  bool fused() const;
  // Keeps (true) or drops fp32 copies of the fused weight and bias, for bf16 on CPUs without
  // native bf16 dot products (see linear_bf16_as_fp32). Only while fused.
  void keep_fp32_copy(bool on);

  // One output per part, in order: views of one matmul's output when fused.
  std::vector<torch::Tensor> forward(const torch::Tensor& x, bool bf16_in_fp32 = false) const;

 private:
  std::vector<Linear> parts_;
  torch::Tensor weight_;  // (sum of out_features, in_features), unregistered: the parameters view it
  torch::Tensor bias_;    // undefined when the parts have none
  torch::Tensor weight_fp32_;  // see keep_fp32_copy
  torch::Tensor bias_fp32_;
};

// A module holding FusedLinear members (and Linear layers with fp32 copies): after Module::to()
// it calls refuse(), which rebuilds the fused blocks and drops the fp32 copies (they would be
// stale: Module::to() does not see them).
class FusingModule : public torch::nn::Module {
 public:
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

 protected:
  virtual void refuse() = 0;
};

}  // namespace focusvla::nn
