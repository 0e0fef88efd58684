#pragma once
// Quantized linear layers: the arithmetic of the int8 and fp8 MatmulModes (nn/matmul.h) that
// nn::Linear runs (nn/linear.h owns when; this header is how). docs/QUANTIZATION.md has the plan
// (which layers, why) and the measured errors.
//
//   int8 W8A8 (CPU)  weights: int8, symmetric, one scale per output row (absmax / qmax);
//                    activations: int8, symmetric, one scale per token (absmax / 127), made per call;
//                    oneDNN's int8 matmul (AMX / AVX512-VNNI / AVX-VNNI dot products, int32
//                    accumulation) on weights packed once at load, through LibTorch's
//                    onednn::qlinear_pointwise (the op PyTorch's own x86 int8 path runs): the
//                    activations go in as u8 = q + 128 with zero point 128 and scale 1, the
//                    weight scales in its epilogue (t = acc * w_scale, in x's dtype); then one
//                    pass here: y = t * x_scale + bias. On CPUs without int8 dot products
//                    oneDNN's GEMM (gemm:jit) works out the zero point's term (128 * the
//                    weight's row sums) on every call; there it gets zero point 0 and that
//                    term, made once at packing, as its bias (int8_gemm_folds_zero_point).
//                    Without that op: at::_int_mm and y = acc * x_scale * w_scale + bias (same
//                    integer products).
//                    qmax is 127 where the CPU has int8 dot products (VNNI / AMX) and 63 elsewhere:
//                    AVX2's and AVX512's u8 x s8 instruction (vpmaddubsw) adds pairs of products
//                    in int16 and saturates with 8-bit weights (measured: 20% wrong sums), exact
//                    with 7-bit ones (oneDNN's documented workaround).
//   int8 weight-only weights as above (qmax 127), activations in the compute dtype:
//                    y = (x W_q^T) * w_scale + bias (CUDA without fp8, where _int_mm is not used).
//   fp8 (CUDA sm_89+) weights: float8 e4m3, one scale per row (absmax / 448); activations e4m3, one
//                    scale per token, made per call; at::_scaled_mm with row-wise scales, bf16 out.
//
// Every function takes and returns tensors; nothing here keeps state. A row (token) that is all
// zeros gets scale 0 (its output is the bias); a row holding NaN or Inf gets a NaN scale, so the
// NaN reaches the output as it would through a float matmul.

#include <torch/torch.h>

#include <string>

namespace focusvla::nn {

// What PolicyOptions::quantize asks for: which linear layers become int8 / fp8 is the policy's
// plan (docs/QUANTIZATION.md); how is this header.
enum class Quantize {
  kNone,  // weights in the compute dtype (the default)
  kInt8,  // CPU: W8A8 (dynamic per-token activations); CUDA: int8 weight-only
  kFp8,   // CUDA sm_89 / sm_90: e4m3 weights and activations, row-wise scales
};

// "none", "int8", "fp8" (and the aliases "off", "w8a8", "float8", "e4m3"); anything else is an
// Error naming `what` and the accepted values.
Quantize parse_quantize(const std::string& text, const std::string& what = "quantize");
std::string quantize_name(Quantize quantize);

// True when this CPU has int8 dot-product instructions that do not saturate: AVX512-VNNI,
// AVX-VNNI or AMX-INT8 (x86), or Arm's dotprod/i8mm (read once from /proc/cpuinfo). Without them
// the int8 weights are 7-bit (see above) and int8 is slower relative to float.
bool cpu_has_int8_dot();
// The largest int8 weight magnitude on this CPU: 127 with int8 dot products, else 63.
int cpu_int8_weight_max();

// A weight, quantized per output row.
struct QuantizedWeight {
  torch::Tensor values;  // (N, K) int8 or float8_e4m3fn (may be dropped once `packed` exists)
  torch::Tensor scales;  // (N) float32: row n = values[n] * scales[n]
  torch::Tensor packed;  // int8 on the CPU: the values packed for oneDNN (opaque), or undefined
  // With `packed` where int8_gemm_folds_zero_point(): (N) float32, -128 * sum_k values[n, k] *
  // scales[n] (rounded once), the packed GEMM's bias; else undefined.
  torch::Tensor zero_point_term;
};

// Symmetric per-row int8: scale = absmax / qmax, values = round(w / scale) in [-qmax, qmax]
// (round half to even, as torch.round). On w's device.
QuantizedWeight quantize_rows_int8(const torch::Tensor& weight, int qmax);
// Per-row e4m3: scale = absmax / 448, values = (w / scale) as e4m3 (round to nearest even).
QuantizedWeight quantize_rows_fp8(const torch::Tensor& weight);

// x (M, K) float32 / bfloat16 / float16, contiguous, on the CPU -> int8 values (M, K) and float32
// scales (M): scale = absmax / 127, values = round(x * (127 / absmax)). `offset` 128 gives the
// values as uint8 q + 128 (what the packed GEMM reads); the tensor is then uint8.
QuantizedWeight quantize_tokens_int8(const torch::Tensor& x, int offset = 0);

// Packs an int8 weight (CPU) for oneDNN's GEMM (onednn::qlinear_prepack; `tokens` is a hint of
// the row count it will multiply). Returns `weight` with `packed` set, or unchanged when this
// LibTorch has no such op. Whether it does: int8_packed_gemm_available().
// Sets `zero_point_term` too where int8_gemm_folds_zero_point().
QuantizedWeight pack_int8(QuantizedWeight weight, int64_t tokens = 512);
bool int8_packed_gemm_available();
// Whether the packed GEMM takes the activations' zero point as a precomputed bias (zero point 0,
// bias = zero_point_term) instead of as oneDNN's zero point: on CPUs without int8 dot products
// (!cpu_has_int8_dot()), where oneDNN's AVX2 GEMM recomputes the weight's row sums on every call
// (measured: 4 - 12% of the GEMM, 3 - 5% of an act); with VNNI / AMX oneDNN packs them with the
// weight, so the zero point costs nothing there and stays oneDNN's (bit for bit as before). Not
// where the GEMM writes bf16 (int8_gemm_writes_bf16: a native-bf16 CPU, so one with VNNI / AMX
// kernels, whose 7-bit path was only forced by FOCUSVLA_CPU_INT8_DOT=0): nothing to save there.
bool int8_gemm_folds_zero_point();
// Whether the packed GEMM writes bf16 for a bf16 x: only where oneDNN has a fast kernel for it
// (native bf16: AVX512-BF16 / AMX, and oneDNN not capped below it by ONEDNN_MAX_CPU_ISA /
// DNNL_MAX_CPU_ISA). Elsewhere (AVX2, AVX512 without BF16) oneDNN's only int8 GEMM with bf16
// output is its reference kernel (`ref_int8`: measured ~1,000x slower than its `gemm:jit` on the
// decoder's gate/up block), so it writes float32 and the rescale rounds to bf16 once.
bool int8_gemm_writes_bf16();

// W8A8 on the CPU: x (..., K) float -> (..., N) in x's dtype. weight: int8 (N, K) with scales
// (N), packed or not; bias (N) float32 or undefined. Packed (see above): t = x's dtype(float(acc)
// * w_scale) from oneDNN (float32 for bf16 x where !int8_gemm_writes_bf16(); with a
// zero_point_term, t = float(acc + 128 * row sum) * w_scale + zero_point_term), then
// y = x's dtype(float(t) * x_scale + bias). Not packed: at::_int_mm,
// then y = float(acc) * x_scale * w_scale + bias, rounded once. Float32 operations in that order,
// no fused multiply-add.
torch::Tensor int8_linear(const torch::Tensor& x, const QuantizedWeight& weight, const torch::Tensor& bias_fp32);

// Weight-only int8 (any device): y = (x W_q^T) * w_scale + bias in x's dtype; the int8 values are
// exact in bf16 / fp16 / fp32.
torch::Tensor int8_weight_only_linear(const torch::Tensor& x, const QuantizedWeight& weight,
                                      const torch::Tensor& bias);

// fp8 on CUDA: per-token e4m3 activations, at::_scaled_mm with scales (M, 1) and (1, N), bf16
// output, bias added in x's dtype; the result in x's dtype. Throws Error off CUDA.
torch::Tensor fp8_linear(const torch::Tensor& x, const QuantizedWeight& weight, const torch::Tensor& bias);
// Per-token e4m3 activations as fp8_linear makes them (any device; CUDA in fp8_linear):
// values (M, K) e4m3, scales (M, 1) float32.
QuantizedWeight quantize_tokens_fp8(const torch::Tensor& x);

// Whether `device` runs fp8_linear: CUDA with compute capability 8.9 or later. `why` gets the
// reason when not.
bool fp8_supported(const torch::Device& device, std::string* why = nullptr);

}  // namespace focusvla::nn
