#pragma once
// Thin layers shared by every model file. Unlike torch::nn's they do not random-initialise their
// weights (loading overwrites them all): parameters are registered as uninitialised tensors of
// the right shape, dtype and device, named as in the checkpoints ("weight", "bias").
// nn::Linear, the owner of how weights multiply, is in nn/linear.h.

#include <torch/torch.h>

#include "focusvla/nn/linear.h"
#include "focusvla/nn/matmul.h"

namespace focusvla::nn {

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
