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
  // With fp32 copies kept (keep_fp32_copy), bf16 inputs on the CPU go through linear_bf16_as_fp32.
  torch::Tensor forward(const torch::Tensor& x) const;

  // Keeps fp32 copies of the current (bf16) weight and bias, for CPUs without native bf16 dot
  // products (see linear_bf16_as_fp32); `false` drops them. Made once here, never per call: call
  // it after loading (a later load does not update the copies).
  void keep_fp32_copy(bool on) {
    torch::NoGradGuard no_grad;
    weight_fp32 = on ? weight.to(torch::kFloat32) : torch::Tensor();
    bias_fp32 = on && bias.defined() ? bias.to(torch::kFloat32) : torch::Tensor();
  }

  torch::Tensor weight;
  torch::Tensor bias;  // undefined when built without bias
  torch::Tensor weight_fp32;  // see keep_fp32_copy; undefined unless kept
  torch::Tensor bias_fp32;
};
TORCH_MODULE(Linear);

// x W^T + b for bf16 x on the CPU as one fp32 matmul of x upcast (exact) and fp32 copies of the
// weights, rounded to bf16 once: the products LibTorch's bf16 kernel computes with native bf16
// instructions (bf16 operands, fp32 accumulation), but ~3x faster on CPUs that lack them
// (no AVX512-BF16 / AMX / Arm BF16), where LibTorch emulates bf16 matmuls. Results differ from the
// native kernel in accumulation order only.
inline torch::Tensor linear_bf16_as_fp32(const torch::Tensor& x, const torch::Tensor& weight_fp32,
                                         const torch::Tensor& bias_fp32) {
  return torch::linear(x.to(torch::kFloat32), weight_fp32, bias_fp32).to(torch::kBFloat16);
}

inline torch::Tensor LinearImpl::forward(const torch::Tensor& x) const {
  if (weight_fp32.defined() && x.scalar_type() == torch::kBFloat16 && x.is_cpu())
    return linear_bf16_as_fp32(x, weight_fp32, bias_fp32);
  return torch::linear(x, weight, bias);
}

// keep_fp32_copy(on) on every bf16 CPU Linear under `root` (itself included); returns how many.
inline int64_t keep_fp32_copies(torch::nn::Module& root, bool on) {
  int64_t count = 0;
  for (const auto& module : root.modules(/*include_self=*/true)) {
    if (auto* linear = dynamic_cast<LinearImpl*>(module.get())) {
      const bool eligible = linear->weight.scalar_type() == torch::kBFloat16 && linear->weight.is_cpu();
      linear->keep_fp32_copy(on && eligible);
      count += on && eligible ? 1 : 0;
    }
  }
  return count;
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
