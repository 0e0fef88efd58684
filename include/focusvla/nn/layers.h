#pragma once
// Thin layers shared by every model file. Unlike torch::nn's they do not random-initialise their
// weights (loading overwrites them all): parameters are registered as uninitialised tensors of
// the right shape, dtype and device, named as in the checkpoints ("weight", "bias").
// nn::Linear, the owner of how weights multiply, is in nn/linear.h.

#include <torch/torch.h>

#include "focusvla/nn/linear.h"
#include "focusvla/nn/matmul.h"

namespace focusvla::nn {

// Deprecated: set_cpu_bf16_matmul(root, on ? kFloat32 : kNative). Kept only for
// vision/vit.h's VisionTransformerImpl::set_bf16_matmul_in_fp32 until vision/ calls
// set_cpu_bf16_matmul itself; no new callers.
inline int64_t keep_fp32_copies(torch::nn::Module& root, bool on) {
  return set_cpu_bf16_matmul(root, on ? CpuBf16Matmul::kFloat32 : CpuBf16Matmul::kNative);
}

// LayerNorm over the last dimension with affine weight and bias.
class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps, const torch::TensorOptions& options)
      : weight(register_parameter("weight", torch::empty({dim}, options), false)),
        bias(register_parameter("bias", torch::empty({dim}, options), false)),
        eps_(eps) {}
  torch::Tensor forward(const torch::Tensor& x) const {
    return torch::layer_norm(x, {weight.size(0)}, weight, bias, eps_);
  }

  torch::Tensor weight;
  torch::Tensor bias;

 private:
  double eps_;
};
TORCH_MODULE(LayerNorm);

}  // namespace focusvla::nn
