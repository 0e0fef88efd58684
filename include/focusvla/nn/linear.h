#pragma once
// nn::Linear: y = x W^T + b, and the one owner of how a weight is stored and multiplied (its
// MatmulMode, nn/matmul.h). Every linear layer of every model is one (FusedLinear's fused block
// too), and LinearImpl::forward is the only place a linear layer multiplies.
//
// Unlike torch::nn::Linear it does not random-initialise its weights (loading overwrites them
// all): the parameters are registered as uninitialised tensors of the right shape, dtype and
// device, named as in the checkpoints ("weight", "bias"). What a mode derives from them (fp32
// copies) is unregistered state: the checkpoint names and the state dict do not change with the
// mode. A quantized mode (kInt8, kInt8WeightOnly, kFp8) releases the float weight once its
// quantized copy exists: the parameter keeps its shape, dtype and device over 2 bytes of memory.

#include <torch/torch.h>

#include <array>

#include "focusvla/nn/matmul.h"

namespace focusvla::nn {

// x W^T + b for bf16 x on the CPU as one fp32 matmul of x upcast (exact) and fp32 copies of the
// weights, rounded to bf16 once: the products LibTorch's bf16 kernel computes with native bf16
// instructions (bf16 operands, fp32 accumulation), but ~3x faster on CPUs that lack them
// (no AVX512-BF16 / AMX / Arm BF16), where LibTorch emulates bf16 matmuls. Results differ from the
// native kernel in accumulation order only.
inline torch::Tensor linear_bf16_as_fp32(const torch::Tensor& x, const torch::Tensor& weight_fp32,
                                         const torch::Tensor& bias_fp32) {
  return torch::linear(x.to(torch::kFloat32), weight_fp32, bias_fp32).to(torch::kBFloat16);
}

class FusedLinearImpl;

class LinearImpl : public torch::nn::Module {
 public:
  // W: (out_features, in_features), uninitialised; bias (out_features) when `bias`.
  LinearImpl(int64_t in_features, int64_t out_features, bool bias, const torch::TensorOptions& options);
  // A Linear over existing tensors (registered as its parameters, not copied); `bias` may be
  // undefined. FusedLinear's fused block is one.
  LinearImpl(torch::Tensor weight, torch::Tensor bias);

  // x (..., in_features) -> (..., out_features), as the mode says (kNative: torch::linear).
  torch::Tensor forward(const torch::Tensor& x) const;

  // Sets the mode and makes what it needs from the current weights, now (never per call); a
  // later in-place change of the weights (a load) needs another call. Module::to() keeps the mode
  // and makes its tensors again for the new dtype / device. set_matmul_mode / set_cpu_bf16_matmul
  // (nn/matmul.h) set it over a whole module tree. Quantized modes: kInt8 needs CPU weights, kFp8
  // a CUDA device of compute capability 8.9+ (nn::fp8_supported); after one, the weight is
  // released and a further call (or Module::to()) throws Error.
  void set_matmul_mode(MatmulMode mode);
  // The mode as set (default kNative).
  MatmulMode matmul_mode() const { return mode_; }
  // The mode forward() runs now: the mode as set where it applies (kFp32Copies: bf16 weights on
  // the CPU, copies of the current weights), else kNative.
  MatmulMode active_matmul_mode() const;
  // Whether the float weight was released after quantizing (see above).
  bool weight_released() const { return released_; }

  // Module::to() moves the parameters, then derives the mode's tensors again.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  torch::Tensor weight;
  torch::Tensor bias;  // undefined when built without bias

 private:
  friend class FusedLinearImpl;  // shares its fused block's derived tensors with the parts

  // (Re)makes the mode's tensors from the current weight and bias (drops them where the mode
  // does not apply); a quantized mode then releases the weight.
  void derive();
  // Throws Error when the weight was released (nothing can be derived from it again).
  void check_not_released(const std::string& action) const;
  // Replaces the float weight by a placeholder of its shape, dtype and device (2 bytes).
  void release_weight();
  // Whether the derived tensors were made from the weight and bias as they are now (same
  // storage): a weight replaced with set_data() after derive() runs as kNative, never wrong.
  bool derived_from_current() const;
  void note_derived_from_current();
  // The mode's tensors, each with one row per output feature, in a fixed order (undefined where
  // the mode has none): FusedLinear gives each part its rows of the fused block's.
  std::array<torch::Tensor*, 4> derived_tensors() { return {&weight_fp32_, &bias_fp32_, &weight_q_, &weight_scale_}; }
  std::array<const torch::Tensor*, 4> derived_tensors() const {
    return {&weight_fp32_, &bias_fp32_, &weight_q_, &weight_scale_};
  }

  MatmulMode mode_ = MatmulMode::kNative;
  // kFp32Copies: fp32 copies of weight and bias (bf16 CPU weights only; else undefined). kInt8:
  // bias_fp32_ is the epilogue's bias.
  torch::Tensor weight_fp32_;
  torch::Tensor bias_fp32_;
  // Quantized modes: the weight's values (int8 or e4m3, (N, K)) and per-row float32 scales (N).
  torch::Tensor weight_q_;
  torch::Tensor weight_scale_;
  // kInt8 on the CPU: the int8 weight packed for oneDNN (opaque; the whole block's, not shared by
  // rows: a fused block's parts run through their block), and its zero_point_term (nn/quantize.h).
  torch::Tensor packed_;
  torch::Tensor packed_zero_point_term_;
  bool released_ = false;
  // The storage the derived tensors were made from (see derived_from_current).
  const void* derived_weight_ = nullptr;
  const void* derived_bias_ = nullptr;
};
TORCH_MODULE(Linear);

}  // namespace focusvla::nn
