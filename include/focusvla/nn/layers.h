#pragma once
// Thin layers shared by every model file. Unlike torch::nn::Linear they do not random-initialise
// their weights (loading overwrites them all): parameters are registered as uninitialised tensors
// of the right shape, dtype and device, named as in the checkpoints ("weight", "bias").

#include <torch/torch.h>

namespace focusvla::nn {

// y = x W^T + b, W: (out_features, in_features).
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias, const torch::TensorOptions& options)
      : weight(register_parameter("weight", torch::empty({out_features, in_features}, options), false)) {
    if (bias) this->bias = register_parameter("bias", torch::empty({out_features}, options), false);
  }
  torch::Tensor forward(const torch::Tensor& x) const { return torch::linear(x, weight, bias); }

  torch::Tensor weight;
  torch::Tensor bias;  // undefined when built without bias
};
TORCH_MODULE(Linear);

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
