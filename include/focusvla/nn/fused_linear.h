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

class FusedLinear {
 public:
  FusedLinear() = default;
  // The parts share in_features; all have a bias or none has. Fuses them.
  explicit FusedLinear(std::vector<Linear> parts);

  // Makes the parts row blocks of one tensor again (a copy; a no-op when they already are).
  void fuse();
  bool fused() const;
  // Keeps (true) or drops fp32 copies of the fused weight and bias, for bf16 on CPUs without
  // native bf16 dot products; while kept, bf16 inputs on the CPU go through linear_bf16_as_fp32,
  // as in Linear. Only while fused (fuse() drops them).
  void keep_fp32_copy(bool on);

  // One output per part, in order: views of one matmul's output when fused, else each part's own
  // Linear::forward.
  std::vector<torch::Tensor> forward(const torch::Tensor& x) const;

 private:
  std::vector<Linear> parts_;
  torch::Tensor weight_;  // (sum of out_features, in_features), unregistered: the parameters view it
  torch::Tensor bias_;    // undefined when the parts have none
  torch::Tensor weight_fp32_;  // see keep_fp32_copy
  torch::Tensor bias_fp32_;
};

// A module whose state views or copies its parameters (FusedLinear blocks, fp32 copies): after
// Module::to() has given every parameter a new tensor it calls after_to(), which rebuilds that
// state (Module::to() does not see it).
class FusingModule : public torch::nn::Module {
 public:
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

 protected:
  virtual void after_to() = 0;
};

}  // namespace focusvla::nn
