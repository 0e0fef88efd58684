#include "focusvla/nn/linear.h"

#include "focusvla/core/error.h"
#include "focusvla/nn/quantize.h"

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
    case MatmulMode::kInt8:
      if ((packed_.defined() || weight_q_.defined()) && derived_from_current())
        return int8_linear(x, {weight_q_, weight_scale_, packed_, packed_zero_point_term_}, bias_fp32_);
      break;
    case MatmulMode::kInt8WeightOnly:
      if (weight_q_.defined() && derived_from_current())
        return int8_weight_only_linear(x, {weight_q_, weight_scale_}, bias);
      break;
    case MatmulMode::kFp8:
      if (weight_q_.defined() && derived_from_current()) return fp8_linear(x, {weight_q_, weight_scale_}, bias);
      break;
  }
  // A released weight is a placeholder: never multiply it. (A part of a quantized fused block
  // runs through its block; FusedLinear does not call a part while the block is fused.)
  check(!(released_ && derived_from_current()), "nn::Linear",
        std::string("quantized (") + matmul_mode_name(mode_) + ") without its quantized weight");
  return torch::linear(x, weight, bias);
}

void LinearImpl::set_matmul_mode(MatmulMode mode) {
  check_not_released(std::string("set matmul mode ") + matmul_mode_name(mode));
  if (mode == MatmulMode::kInt8)
    check(weight.is_cpu(), "nn::Linear", "int8 (W8A8) runs on the CPU; the weight is on " + weight.device().str());
  std::string why;
  if (mode == MatmulMode::kFp8) check(fp8_supported(weight.device(), &why), "nn::Linear", why);
  mode_ = mode;
  derive();
}

void LinearImpl::check_not_released(const std::string& action) const {
  check(!released_, "nn::Linear",
        std::string("cannot ") + action + ": the layer is quantized (" + matmul_mode_name(mode_) +
            ") and its float weight was released; load the checkpoint again");
}

void LinearImpl::release_weight() {
  torch::NoGradGuard no_grad;
  weight.set_data(torch::zeros({1}, weight.options()).expand(weight.sizes()));
  released_ = true;
}

MatmulMode LinearImpl::active_matmul_mode() const {
  switch (mode_) {
    case MatmulMode::kNative:
      break;
    case MatmulMode::kFp32Copies:
      if (weight_fp32_.defined() && derived_from_current()) return MatmulMode::kFp32Copies;
      break;
    case MatmulMode::kInt8:
    case MatmulMode::kInt8WeightOnly:
    case MatmulMode::kFp8:
      if ((weight_q_.defined() || packed_.defined() || weight_scale_.defined()) && derived_from_current()) return mode_;
      break;
  }
  return MatmulMode::kNative;
}

void LinearImpl::derive() {
  torch::NoGradGuard no_grad;
  // Dropped first, so that the old and the new copies are never held together.
  for (auto* t : derived_tensors()) *t = torch::Tensor();
  packed_ = packed_zero_point_term_ = torch::Tensor();
  derived_weight_ = derived_bias_ = nullptr;
  switch (mode_) {
    case MatmulMode::kNative:
      return;
    case MatmulMode::kFp32Copies:
      if (weight.scalar_type() != torch::kBFloat16 || !weight.is_cpu()) return;  // nothing to copy
      weight_fp32_ = weight.to(torch::kFloat32);
      if (bias.defined()) bias_fp32_ = bias.to(torch::kFloat32);
      break;
    case MatmulMode::kInt8: {
      // Packed for oneDNN where LibTorch has the op (then the plain int8 values are not kept).
      QuantizedWeight q = pack_int8(quantize_rows_int8(weight, cpu_int8_weight_max()));
      packed_ = std::move(q.packed);
      packed_zero_point_term_ = std::move(q.zero_point_term);
      if (!packed_.defined()) weight_q_ = std::move(q.values);
      weight_scale_ = std::move(q.scales);
      if (bias.defined()) bias_fp32_ = bias.to(torch::kFloat32);
      break;
    }
    case MatmulMode::kInt8WeightOnly: {
      QuantizedWeight q = quantize_rows_int8(weight, 127);
      weight_q_ = std::move(q.values);
      weight_scale_ = std::move(q.scales);
      break;
    }
    case MatmulMode::kFp8: {
      QuantizedWeight q = quantize_rows_fp8(weight);
      weight_q_ = std::move(q.values);
      weight_scale_ = std::move(q.scales);
      break;
    }
  }
  if (is_quantized(mode_)) release_weight();
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
  check_not_released("move to " + device.str() + " / " + c10::toString(dtype));
  torch::nn::Module::to(device, dtype, non_blocking);
  derive();
}

void LinearImpl::to(torch::Dtype dtype, bool non_blocking) {
  check_not_released(std::string("convert to ") + c10::toString(dtype));
  torch::nn::Module::to(dtype, non_blocking);
  derive();
}

void LinearImpl::to(torch::Device device, bool non_blocking) {
  check_not_released("move to " + device.str());
  torch::nn::Module::to(device, non_blocking);
  derive();
}

}  // namespace focusvla::nn
