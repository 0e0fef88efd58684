#include "focusvla/nn/linear.h"

namespace focusvla::nn {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool bias, const torch::TensorOptions& options)
    : weight(register_parameter("weight", torch::empty({out_features, in_features}, options), false)) {
  if (bias) this->bias = register_parameter("bias", torch::empty({out_features}, options), false);
}

LinearImpl::LinearImpl(torch::Tensor weight, torch::Tensor bias)
    : weight(register_parameter("weight", std::move(weight), false)) {
  if (bias.defined()) this->bias = register_parameter("bias", std::move(bias), false);
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) const {
  switch (mode_) {
    case MatmulMode::kNative:
      break;
    case MatmulMode::kFp32Copies:
      if (weight_fp32_.defined() && x.scalar_type() == torch::kBFloat16 && x.is_cpu() && derived_from_current())
        return linear_bf16_as_fp32(x, weight_fp32_, bias_fp32_);
      break;
      // A quantized mode (int8 / fp8 weights) goes here: its GEMM on the derived tensors.
  }
  return torch::linear(x, weight, bias);
}

void LinearImpl::set_matmul_mode(MatmulMode mode) {
  mode_ = mode;
  derive();
}

MatmulMode LinearImpl::active_matmul_mode() const {
  switch (mode_) {
    case MatmulMode::kNative:
      break;
    case MatmulMode::kFp32Copies:
      if (weight_fp32_.defined() && derived_from_current()) return MatmulMode::kFp32Copies;
      break;
  }
  return MatmulMode::kNative;
}

void LinearImpl::derive() {
  torch::NoGradGuard no_grad;
  // Dropped first, so that the old and the new copies are never held together.
  weight_fp32_ = torch::Tensor();
  bias_fp32_ = torch::Tensor();
  derived_weight_ = derived_bias_ = nullptr;
  switch (mode_) {
    case MatmulMode::kNative:
      return;
    case MatmulMode::kFp32Copies:
      if (weight.scalar_type() != torch::kBFloat16 || !weight.is_cpu()) return;  // nothing to copy
      weight_fp32_ = weight.to(torch::kFloat32);
      if (bias.defined()) bias_fp32_ = bias.to(torch::kFloat32);
      break;
  }
  note_derived_from_current();
}

bool LinearImpl::derived_from_current() const {
  return weight.const_data_ptr() == derived_weight_ && (!bias.defined() || bias.const_data_ptr() == derived_bias_);
}

void LinearImpl::note_derived_from_current() {
  derived_weight_ = weight.const_data_ptr();
  derived_bias_ = bias.defined() ? bias.const_data_ptr() : nullptr;
}

void LinearImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, dtype, non_blocking);
  derive();
}

void LinearImpl::to(torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(dtype, non_blocking);
  derive();
}

void LinearImpl::to(torch::Device device, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  derive();
}

}  // namespace focusvla::nn
