#pragma once
// How linear layers multiply: the one setting and its one walker. nn::Linear (nn/linear.h) owns
// the mode of each layer and is the only place a linear layer multiplies; this header is the
// small part callers need to choose and report the mode (it does not include the layers).
//
//   nn::set_cpu_bf16_matmul(*model, nn::CpuBf16Matmul::kAuto);   // after loading, any module tree
//   bool fp32 = nn::bf16_matmul_in_fp32(nn::CpuBf16Matmul::kAuto, torch::kBFloat16, torch::kCPU);

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>

namespace focusvla::nn {

// How one nn::Linear stores its weight and multiplies. New ways of storing weights (int8 / fp8
// weights with per-row scales and a quantized GEMM) are further modes here, made in
// LinearImpl::derive() and used in LinearImpl::forward() (src/nn/linear.cpp).
//
// The quantized modes (nn/quantize.h has their arithmetic) replace the weight: once quantized,
// the layer's float weight is released (the parameter keeps its shape, dtype and device, over no
// memory), so a quantized layer cannot change mode, dtype or device again (an Error: load the
// checkpoint again instead).
enum class MatmulMode {
  kNative,      // torch::linear on the weight in its own dtype (LibTorch's kernels)
  kFp32Copies,  // bf16 weights on the CPU: fp32 copies of weight and bias kept next to them; bf16
                // inputs upcast, one fp32 matmul, rounded to bf16 once (linear_bf16_as_fp32).
                // Other dtypes and devices: as kNative (nothing is copied).
  kInt8,        // CPU W8A8: int8 weights with per-row scales, int8 activations with per-token
                // scales, at::_int_mm, one rescale + bias epilogue (nn::int8_linear)
  kInt8WeightOnly,  // int8 weights with per-row scales, activations in the compute dtype
                    // (nn::int8_weight_only_linear): CUDA without fp8
  kFp8,         // CUDA sm_89+: e4m3 weights and per-token activations, at::_scaled_mm row-wise
};

// "native", "fp32-copies", "int8", "int8-weight-only", "fp8".
const char* matmul_mode_name(MatmulMode mode);
// Whether `mode` quantizes (and releases) the weight.
bool is_quantized(MatmulMode mode);

// How bf16 linear layers run on the CPU. Without native bf16 dot products (AVX512-BF16, AMX,
// Arm BF16), LibTorch's bf16 matmul is emulated and ~3x slower than fp32; the same products
// (exact bf16 operands, fp32 accumulation, one rounding of the output to bf16) then run faster
// as fp32 matmuls of the upcast operands. Results differ from the native kernel only in
// accumulation order (at most an ulp of bf16 here and there).
// kNative is bit-identical to transformers' bf16 on the same machine. Over 24 layers two valid
// bf16 computations drift apart about as far as bf16 is from fp32 (~3e-2 of the largest value on
// random weights), so kFloat32 is an opt-in (PolicyOptions picks kAuto).
enum class CpuBf16Matmul {
  kNative,   // LibTorch's bf16 matmul (MatmulMode::kNative)
  kFloat32,  // upcast operands, fp32 matmul, round to bf16 (MatmulMode::kFp32Copies)
  kAuto,     // kFloat32 on a CPU without native bf16 dot products, else kNative
};

// Whether the first CPU's flags in /proc/cpuinfo ("flags" on x86, "Features" on Arm) include any
// of `wanted`; `if_unknown` when there is no such line.
bool cpu_has_any_flag(std::initializer_list<const char*> wanted, bool if_unknown);

// True when this CPU has native bf16 dot-product instructions (read once from /proc/cpuinfo;
// true when unknown).
bool cpu_has_native_bf16();

// The MatmulMode a CpuBf16Matmul asks for (kAuto resolved by this CPU).
MatmulMode matmul_mode_for(CpuBf16Matmul mode);

// Whether linear layers with weights of `dtype` on `device` multiply as fp32 copies under `mode`:
// bf16 on the CPU, and kFloat32 (or kAuto on a CPU without native bf16). For reporting which
// mode ran; set_cpu_bf16_matmul is what sets it.
bool bf16_matmul_in_fp32(CpuBf16Matmul mode, torch::ScalarType dtype, const torch::Device& device);

// Sets `mode` on every nn::Linear under `root` (itself included), and on every nn::FusedLinear
// (its fused weight: one set of derived tensors, the parts viewing their rows). The derived
// tensors are made now from the current weights: call it after loading (a later in-place load
// does not update them; Module::to() re-makes them for the new dtype / device). Each Linear
// keeps its mode across Module::to(): fp32 copies exist exactly while its weight is bf16 on the
// CPU. Quantized layers (weight released) keep their mode. Returns how many of the tree's
// Linears now multiply in `mode` (for kFp32Copies: those with bf16 CPU weights).
int64_t set_matmul_mode(torch::nn::Module& root, MatmulMode mode);

// set_matmul_mode on the layers `select` picks: select(path, layer) with each nn::Linear's and
// nn::FusedLinear's module path under `root` ("blocks.3.mlp.fc1", "layers.0.self_attn.qkv_proj");
// the parts of a fused block go with their block (they are not asked on their own). Returns how
// many Linears (a fused block's parts counted) now multiply in `mode`. The quantized plan of a
// policy (policy.cpp) is one call per component.
class LinearImpl;
int64_t set_matmul_mode(torch::nn::Module& root, MatmulMode mode,
                        const std::function<bool(const std::string& path, const LinearImpl& layer)>& select);

// set_matmul_mode(root, matmul_mode_for(mode)): bf16 linear layers on the CPU as fp32 copies
// (kFloat32, or kAuto on a CPU without native bf16) or LibTorch's kernels. Weights of other
// dtypes or devices get no copies. Returns how many Linears multiply as fp32 copies.
int64_t set_cpu_bf16_matmul(torch::nn::Module& root, CpuBf16Matmul mode);

}  // namespace focusvla::nn
