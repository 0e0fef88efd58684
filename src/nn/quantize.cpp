// The int8 / fp8 arithmetic of nn/quantize.h. The two CPU loops (per-token quantization, the
// epilogue) are compiled without fused multiply-add contraction (CMakeLists.txt), so that each
// float operation rounds as its PyTorch counterpart does and the tests can compare exactly.
#include "focusvla/nn/quantize.h"

#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/nn/matmul.h"
#include "float_bits.h"

#ifdef FOCUSVLA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace focusvla::nn {
namespace {

constexpr float kFp8Max = 448.0f;  // the largest finite float8 e4m3fn

// The CPU loops, written so that the compiler vectorizes them (no libm calls, no branches),
// compiled for AVX512 and AVX2 besides the baseline (FOCUSVLA_CPU_CLONES, float_bits.h). Each
// float operation rounds as PyTorch's does.

// Round to nearest, ties to even, for |v| < 2^22 (the values here are within +-127): adding and
// subtracting 1.5 * 2^23 leaves the integer part in the mantissa (the FPU's default rounding).
inline float round_half_even(float v) {
  constexpr float kMagic = 12582912.0f;
  return (v + kMagic) - kMagic;
}

using bits::bf16_to_float;
using bits::float_bits;
using bits::float_to_bf16;
using bits::grain;

// One row of x -> int8 values; returns its scale (see quantize_tokens_int8). `load` reads
// element i as float. The absmax is an integer max over the bit patterns without the sign (they
// order like the magnitudes, Inf and NaN above every finite value): a reduction the compiler
// vectorizes, where a float max would need -ffast-math.
template <typename Out, typename Load>
inline float quantize_row(const Load& load, int64_t k, int32_t offset, Out* out, int32_t qmax = 127) {
  uint32_t amax_bits = 0;
  for (int64_t i = 0; i < k; ++i) {
    const uint32_t a = float_bits(load(i)) & 0x7FFFFFFFu;
    amax_bits = a > amax_bits ? a : amax_bits;
  }
  if (amax_bits >= 0x7F800000u) {  // a NaN or Inf in the row
    for (int64_t i = 0; i < k; ++i) out[i] = static_cast<Out>(offset);
    return std::numeric_limits<float>::quiet_NaN();
  }
  float amax;
  std::memcpy(&amax, &amax_bits, sizeof amax);
  const float limit = static_cast<float>(qmax);
  const float inverse = amax > 0.0f ? limit / amax : 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    int32_t q = static_cast<int32_t>(round_half_even(load(i) * inverse));
    q = q > qmax ? qmax : q;
    q = q < -qmax ? -qmax : q;
    out[i] = static_cast<Out>(q + offset);
  }
  return amax / limit;
}

// Rows [begin, end) of x (M, K) -> values (int8, or uint8 with offset 128) and scales.
FOCUSVLA_CPU_CLONES
void quantize_rows_f32(const float* x, int64_t k, int32_t offset, void* values, float* scales, int64_t begin,
                       int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    const float* row = x + m * k;
    const auto load = [row](int64_t i) { return row[i]; };
    scales[m] = offset == 0 ? quantize_row(load, k, 0, static_cast<int8_t*>(values) + m * k)
                            : quantize_row(load, k, offset, static_cast<uint8_t*>(values) + m * k);
  }
}

FOCUSVLA_CPU_CLONES
void quantize_rows_bf16(const uint16_t* x, int64_t k, int32_t offset, void* values, float* scales, int64_t begin,
                        int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    const uint16_t* row = x + m * k;
    const auto load = [row](int64_t i) { return bf16_to_float(row[i]); };
    scales[m] = offset == 0 ? quantize_row(load, k, 0, static_cast<int8_t*>(values) + m * k)
                            : quantize_row(load, k, offset, static_cast<uint8_t*>(values) + m * k);
  }
}

// Weight rows [begin, end) -> int8 values in [-qmax, qmax] and scales. A row holding NaN or Inf
// gets scale NaN and values 0 (every output of that row NaN).
FOCUSVLA_CPU_CLONES
void quantize_weight_rows_f32(const float* w, int64_t k, int32_t qmax, int8_t* values, float* scales, int64_t begin,
                              int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    const float* row = w + m * k;
    scales[m] = quantize_row([row](int64_t i) { return row[i]; }, k, 0, values + m * k, qmax);
  }
}

FOCUSVLA_CPU_CLONES
void quantize_weight_rows_bf16(const uint16_t* w, int64_t k, int32_t qmax, int8_t* values, float* scales,
                               int64_t begin, int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    const uint16_t* row = w + m * k;
    scales[m] = quantize_row([row](int64_t i) { return bf16_to_float(row[i]); }, k, 0, values + m * k, qmax);
  }
}

// In place, y (M, N) = float(y) * x_scale[m] + bias[n], rounded once (after the packed GEMM).
FOCUSVLA_CPU_CLONES
void rescale_f32(float* y, int64_t n, const float* x_scales, const float* bias, int64_t begin, int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    const float xs = x_scales[m];
    float* row = y + m * n;
    if (bias != nullptr) {
      for (int64_t j = 0; j < n; ++j) row[j] = row[j] * xs + bias[j];
    } else {
      for (int64_t j = 0; j < n; ++j) row[j] = row[j] * xs;
    }
  }
}

FOCUSVLA_CPU_CLONES
void rescale_bf16(uint16_t* y, int64_t n, const float* x_scales, const float* bias, int64_t begin, int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    const float xs = x_scales[m];
    uint16_t* row = y + m * n;
    if (bias != nullptr) {
      for (int64_t j = 0; j < n; ++j) row[j] = float_to_bf16(bf16_to_float(row[j]) * xs + bias[j]);
    } else {
      for (int64_t j = 0; j < n; ++j) row[j] = float_to_bf16(bf16_to_float(row[j]) * xs);
    }
  }
}

// out (M, N) bf16 = bf16(t * x_scale[m] + bias[n]) for a float32 t (the packed GEMM's output
// where it cannot write bf16 fast: int8_gemm_writes_bf16).
FOCUSVLA_CPU_CLONES
void rescale_f32_to_bf16(const float* t, int64_t n, const float* x_scales, const float* bias, uint16_t* out,
                         int64_t begin, int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    const float xs = x_scales[m];
    const float* row = t + m * n;
    uint16_t* y = out + m * n;
    if (bias != nullptr) {
      for (int64_t j = 0; j < n; ++j) y[j] = float_to_bf16(row[j] * xs + bias[j]);
    } else {
      for (int64_t j = 0; j < n; ++j) y[j] = float_to_bf16(row[j] * xs);
    }
  }
}

// out row m = float(acc) * x_scale[m] * w_scale[n] (+ bias[n]), rounded once to the output type.
FOCUSVLA_CPU_CLONES
void epilogue_f32(const int32_t* acc, int64_t n, const float* x_scales, const float* w_scales, const float* bias,
                  float* out, int64_t begin, int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    const float xs = x_scales[m];
    const int32_t* a = acc + m * n;
    float* y = out + m * n;
    if (bias != nullptr) {
      for (int64_t j = 0; j < n; ++j) y[j] = static_cast<float>(a[j]) * xs * w_scales[j] + bias[j];
    } else {
      for (int64_t j = 0; j < n; ++j) y[j] = static_cast<float>(a[j]) * xs * w_scales[j];
    }
  }
}

FOCUSVLA_CPU_CLONES
void epilogue_bf16(const int32_t* acc, int64_t n, const float* x_scales, const float* w_scales, const float* bias,
                   uint16_t* out, int64_t begin, int64_t end) {
  for (int64_t m = begin; m < end; ++m) {
    const float xs = x_scales[m];
    const int32_t* a = acc + m * n;
    uint16_t* y = out + m * n;
    if (bias != nullptr) {
      for (int64_t j = 0; j < n; ++j) y[j] = float_to_bf16(static_cast<float>(a[j]) * xs * w_scales[j] + bias[j]);
    } else {
      for (int64_t j = 0; j < n; ++j) y[j] = float_to_bf16(static_cast<float>(a[j]) * xs * w_scales[j]);
    }
  }
}

// Row sums of an int8 (N, K) block, rows [begin, end), in int32 (|sum| <= 127 * K: exact).
FOCUSVLA_CPU_CLONES
void row_sums_int8(const int8_t* values, int64_t k, int32_t* sums, int64_t begin, int64_t end) {
  for (int64_t n = begin; n < end; ++n) {
    const int8_t* row = values + n * k;
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += row[i];
    sums[n] = sum;
  }
}

void check_float_input(const torch::Tensor& x, const std::string& what) {
  check(x.defined() && x.dim() >= 1, what, "expected a tensor with at least one dimension");
  const auto t = x.scalar_type();
  check(t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16, what,
        std::string("dtype ") + c10::toString(t) + " is not float32, bfloat16 or float16");
}

void check_weight(const torch::Tensor& x, const QuantizedWeight& w, torch::ScalarType values_dtype,
                  const std::string& what) {
  check(!w.zero_point_term.defined() || (w.packed.defined() && w.scales.defined() &&
                                          w.zero_point_term.numel() == w.scales.numel() &&
                                          w.zero_point_term.scalar_type() == torch::kFloat32),
        what, "zero_point_term must be float32, one per output row, beside a packed weight");
  if (w.packed.defined() && !w.values.defined()) {  // packed only: the packed tensor has the shape
    check(w.packed.dim() == 2, what, "packed weight must be 2-D");
    check(w.scales.defined() && w.scales.scalar_type() == torch::kFloat32, what, "weight scales must be float32");
    const int64_t k = w.packed.size(0) == w.scales.numel() ? w.packed.size(1) : w.packed.size(0);
    check(x.size(-1) == k, what,
          "input has " + std::to_string(x.size(-1)) + " features, the weight takes " + std::to_string(k));
    return;
  }
  check(w.values.defined() && w.values.dim() == 2 && w.values.scalar_type() == values_dtype, what,
        std::string("weight values must be (N, K) ") + c10::toString(values_dtype));
  check(w.scales.defined() && w.scales.numel() == w.values.size(0) && w.scales.scalar_type() == torch::kFloat32, what,
        "weight scales must be float32, one per output row");
  check(x.size(-1) == w.values.size(1), what,
        "input has " + std::to_string(x.size(-1)) + " features, the weight takes " + std::to_string(w.values.size(1)));
}

}  // namespace

Quantize parse_quantize(const std::string& text, const std::string& what) {
  if (text == "none" || text == "off") return Quantize::kNone;
  if (text == "int8" || text == "w8a8") return Quantize::kInt8;
  if (text == "fp8" || text == "float8" || text == "e4m3") return Quantize::kFp8;
  throw Error(what + " '" + text + "': not none, int8 or fp8");
}

std::string quantize_name(Quantize quantize) {
  switch (quantize) {
    case Quantize::kNone: return "none";
    case Quantize::kInt8: return "int8";
    case Quantize::kFp8: return "fp8";
  }
  return "none";
}

bool cpu_has_int8_dot() {
  // FOCUSVLA_CPU_INT8_DOT=0 / 1 overrides (to test the 7-bit path where the CPU has VNNI).
  static const bool has = [] {
    if (const char* force = std::getenv("FOCUSVLA_CPU_INT8_DOT"); force != nullptr && *force != '\0')
      return std::string(force) != "0";
    return cpu_has_any_flag({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"}, /*if_unknown=*/false);
  }();
  return has;
}

int cpu_int8_weight_max() { return cpu_has_int8_dot() ? 127 : 63; }

QuantizedWeight quantize_rows_int8(const torch::Tensor& weight, int qmax) {
  check(weight.defined() && weight.dim() == 2, "quantize_rows_int8", "expected an (N, K) weight");
  check(qmax > 0 && qmax <= 127, "quantize_rows_int8", "qmax must be in 1 .. 127");
  check(weight.is_floating_point(), "quantize_rows_int8", "expected a float weight");
  torch::NoGradGuard no_grad;
  // One pass over the weight on the host (a load-time step): bf16 read as is, others as float32.
  const torch::Tensor w = (weight.scalar_type() == torch::kBFloat16 ? weight : weight.to(torch::kFloat32))
                              .to(torch::kCPU)
                              .contiguous();
  const int64_t n = w.size(0), k = w.size(1);
  QuantizedWeight q;
  q.values = torch::empty({n, k}, torch::kInt8);
  q.scales = torch::empty({n}, torch::kFloat32);
  int8_t* values = q.values.data_ptr<int8_t>();
  float* scales = q.scales.data_ptr<float>();
  const bool bf16 = w.scalar_type() == torch::kBFloat16;
  const void* data = w.const_data_ptr();
  at::parallel_for(0, n, grain(k), [&](int64_t begin, int64_t end) {
    if (bf16)
      quantize_weight_rows_bf16(static_cast<const uint16_t*>(data), k, qmax, values, scales, begin, end);
    else
      quantize_weight_rows_f32(static_cast<const float*>(data), k, qmax, values, scales, begin, end);
  });
  if (!weight.is_cpu()) {
    q.values = q.values.to(weight.device());
    q.scales = q.scales.to(weight.device());
  }
  return q;
}

QuantizedWeight quantize_rows_fp8(const torch::Tensor& weight) {
  check(weight.defined() && weight.dim() == 2, "quantize_rows_fp8", "expected an (N, K) weight");
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.to(torch::kFloat32);
  const torch::Tensor amax = w.abs().amax(1);
  QuantizedWeight q;
  q.scales = amax / kFp8Max;
  const torch::Tensor inverse = torch::where(amax > 0, kFp8Max / amax, torch::zeros_like(amax));
  q.values = (w * inverse.unsqueeze(1)).clamp(-kFp8Max, kFp8Max).to(torch::kFloat8_e4m3fn);
  return q;
}

QuantizedWeight quantize_tokens_int8(const torch::Tensor& x, int offset) {
  check_float_input(x, "quantize_tokens_int8");
  check(x.dim() == 2 && x.is_cpu() && x.is_contiguous(), "quantize_tokens_int8", "expected a contiguous (M, K) CPU tensor");
  check(offset == 0 || offset == 128, "quantize_tokens_int8", "offset must be 0 (int8) or 128 (uint8)");
  const int64_t m = x.size(0), k = x.size(1);
  QuantizedWeight q;
  q.values = torch::empty({m, k}, offset == 0 ? torch::kInt8 : torch::kUInt8);
  q.scales = torch::empty({m}, torch::kFloat32);
  void* values = q.values.data_ptr();
  float* scales = q.scales.data_ptr<float>();
  const torch::Tensor xs = x.scalar_type() == torch::kFloat16 ? x.to(torch::kFloat32) : x;
  const bool bf16 = xs.scalar_type() == torch::kBFloat16;
  const void* data = xs.const_data_ptr();
  at::parallel_for(0, m, grain(k), [&](int64_t begin, int64_t end) {
    if (bf16)
      quantize_rows_bf16(static_cast<const uint16_t*>(data), k, offset, values, scales, begin, end);
    else
      quantize_rows_f32(static_cast<const float*>(data), k, offset, values, scales, begin, end);
  });
  return q;
}

namespace {

// LibTorch's oneDNN int8 linear ops (PyTorch's x86 int8 path), called boxed: no C++ signature of
// ours to drift from theirs. Null when this LibTorch has none.
const c10::OperatorHandle* onednn_op(const char* name) {
  const auto handle = c10::Dispatcher::singleton().findSchema({name, ""});
  if (!handle || !handle->hasKernelForDispatchKey(c10::DispatchKey::CPU)) return nullptr;
  static std::mutex mutex;
  static std::vector<std::unique_ptr<c10::OperatorHandle>> kept;
  std::lock_guard<std::mutex> lock(mutex);
  kept.push_back(std::make_unique<c10::OperatorHandle>(*handle));
  return kept.back().get();
}

const c10::OperatorHandle* qlinear_prepack_op() {
  static const c10::OperatorHandle* op = onednn_op("onednn::qlinear_prepack");
  return op;
}

const c10::OperatorHandle* qlinear_op() {
  static const c10::OperatorHandle* op = onednn_op("onednn::qlinear_pointwise");
  return op;
}

}  // namespace

bool int8_packed_gemm_available() { return qlinear_prepack_op() != nullptr && qlinear_op() != nullptr; }

bool int8_gemm_writes_bf16() {
  static const bool writes = [] {
    if (!cpu_has_native_bf16()) return false;
    for (const char* name : {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"}) {
      const char* cap = std::getenv(name);
      if (cap == nullptr) continue;
      std::string isa(cap);
      for (auto& c : isa) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      // oneDNN's ISA names below AVX512_CORE_BF16 (docs: dev_guide_cpu_dispatcher_control).
      for (const char* below : {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})
        if (isa == below) return false;
    }
    return true;
  }();
  return writes;
}

bool int8_gemm_folds_zero_point() { return !cpu_has_int8_dot() && !int8_gemm_writes_bf16(); }

namespace {

// -128 * sum_k values[n, k] * scales[n] for each row n, in float64 and rounded once to float32.
torch::Tensor zero_point_term(const torch::Tensor& values, const torch::Tensor& scales) {
  const torch::Tensor v = values.contiguous();
  const int64_t n = v.size(0), k = v.size(1);
  torch::Tensor sums = torch::empty({n}, torch::kInt32);
  int32_t* out = sums.data_ptr<int32_t>();
  at::parallel_for(0, n, grain(k), [&](int64_t begin, int64_t end) {
    row_sums_int8(v.const_data_ptr<int8_t>(), k, out, begin, end);
  });
  return (sums.to(torch::kFloat64) * -128.0 * scales.to(torch::kFloat64)).to(torch::kFloat32);
}

}  // namespace

QuantizedWeight pack_int8(QuantizedWeight weight, int64_t tokens) {
  check(weight.values.defined() && weight.values.dim() == 2 && weight.values.scalar_type() == torch::kInt8 &&
            weight.values.is_cpu(),
        "pack_int8", "expected an (N, K) int8 CPU weight");
  check(weight.scales.defined() && weight.scales.numel() == weight.values.size(0), "pack_int8",
        "expected one scale per weight row");
  if (!int8_packed_gemm_available()) return weight;
  torch::jit::Stack stack{weight.values.contiguous(), std::vector<int64_t>{tokens, weight.values.size(1)}};
  qlinear_prepack_op()->callBoxed(&stack);
  weight.packed = stack.at(0).toTensor();
  if (int8_gemm_folds_zero_point()) weight.zero_point_term = zero_point_term(weight.values, weight.scales);
  return weight;
}

namespace {

// t = qlinear(u8 values (zero point 128, scale 1), packed weight, w_scale) in `dtype`; with a
// zero_point_term, zero point 0 and that term as the bias (the same sum: see pack_int8).
torch::Tensor packed_gemm(const torch::Tensor& xu8, const QuantizedWeight& w, torch::ScalarType dtype) {
  const int64_t n = w.scales.size(0);
  const bool folded = w.zero_point_term.defined();
  torch::jit::Stack stack{xu8,
                          1.0,
                          int64_t{folded ? 0 : 128},
                          w.packed,
                          w.scales,
                          torch::zeros({n}, torch::kInt32),
                          folded ? c10::IValue(w.zero_point_term) : c10::IValue(),
                          1.0,
                          int64_t{0},
                          c10::IValue(dtype),
                          std::string("none"),
                          c10::List<std::optional<c10::Scalar>>(),
                          std::string("")};
  qlinear_op()->callBoxed(&stack);
  return stack.at(0).toTensor();
}

}  // namespace

torch::Tensor int8_linear(const torch::Tensor& x, const QuantizedWeight& weight, const torch::Tensor& bias_fp32) {
  check_float_input(x, "int8_linear");
  check_weight(x, weight, torch::kInt8, "int8_linear");
  check(x.is_cpu() && weight.scales.is_cpu(), "int8_linear", "runs on the CPU (CUDA: int8 weight-only or fp8)");
  const int64_t k = x.size(-1), n = weight.scales.numel();
  check(!bias_fp32.defined() || (bias_fp32.numel() == n && bias_fp32.scalar_type() == torch::kFloat32), "int8_linear",
        "bias must be float32 with one value per output row");
  const torch::Tensor x2 = x.reshape({-1, k}).contiguous();
  const int64_t m = x2.size(0);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = n;
  if (m == 0) return torch::empty(out_shape, x.options());
  const float* bias = bias_fp32.defined() ? bias_fp32.const_data_ptr<float>() : nullptr;
  if (weight.packed.defined()) {
    // oneDNN: t = acc * w_scale in the output dtype (fp16: float32, converted at the end).
    const QuantizedWeight xq = quantize_tokens_int8(x2, /*offset=*/128);
    const bool bf16 = x.scalar_type() == torch::kBFloat16;
    const auto dtype = bf16 && int8_gemm_writes_bf16() ? torch::kBFloat16 : torch::kFloat32;
    torch::Tensor t = packed_gemm(xq.values, weight, dtype);
    check(t.sizes() == torch::IntArrayRef({m, n}) && t.is_contiguous() && t.scalar_type() == dtype, "int8_linear",
          "unexpected output of onednn::qlinear_pointwise");
    const float* x_scales = xq.scales.const_data_ptr<float>();
    if (bf16 && dtype == torch::kFloat32) {
      torch::Tensor out = torch::empty({m, n}, x.options());
      at::parallel_for(0, m, grain(n), [&](int64_t begin, int64_t end) {
        rescale_f32_to_bf16(t.const_data_ptr<float>(), n, x_scales, bias, static_cast<uint16_t*>(out.data_ptr()), begin,
                            end);
      });
      return out.view(out_shape);
    }
    at::parallel_for(0, m, grain(n), [&](int64_t begin, int64_t end) {
      if (dtype == torch::kBFloat16)
        rescale_bf16(static_cast<uint16_t*>(t.data_ptr()), n, x_scales, bias, begin, end);
      else
        rescale_f32(t.data_ptr<float>(), n, x_scales, bias, begin, end);
    });
    return (x.scalar_type() == torch::kFloat16 ? t.to(torch::kFloat16) : t).view(out_shape);
  }
  const QuantizedWeight xq = quantize_tokens_int8(x2);
  // (M, K) x (K, N): the weight's transpose is a column-major view, as oneDNN reads it.
  const torch::Tensor acc = at::_int_mm(xq.values, weight.values.t());
  const torch::Tensor ws = weight.scales.contiguous();
  torch::Tensor out = torch::empty({m, n}, x.options());
  // fp16 inputs: a float32 epilogue, then one conversion.
  torch::Tensor y = x.scalar_type() == torch::kFloat16 ? torch::empty({m, n}, x.options().dtype(torch::kFloat32)) : out;
  const int32_t* a = acc.const_data_ptr<int32_t>();
  const float* x_scales = xq.scales.const_data_ptr<float>();
  const float* w_scales = ws.const_data_ptr<float>();
  at::parallel_for(0, m, grain(n), [&](int64_t begin, int64_t end) {
    if (y.scalar_type() == torch::kBFloat16)
      epilogue_bf16(a, n, x_scales, w_scales, bias, static_cast<uint16_t*>(y.data_ptr()), begin, end);
    else
      epilogue_f32(a, n, x_scales, w_scales, bias, y.data_ptr<float>(), begin, end);
  });
  if (x.scalar_type() == torch::kFloat16) out.copy_(y);
  return out.view(out_shape);
}

torch::Tensor int8_weight_only_linear(const torch::Tensor& x, const QuantizedWeight& weight, const torch::Tensor& bias) {
  check_float_input(x, "int8_weight_only_linear");
  check_weight(x, weight, torch::kInt8, "int8_weight_only_linear");
  torch::Tensor y = torch::linear(x, weight.values.to(x.scalar_type())) * weight.scales.to(x.scalar_type());
  if (bias.defined()) y.add_(bias.to(x.scalar_type()));
  return y;
}

QuantizedWeight quantize_tokens_fp8(const torch::Tensor& x) {
  check_float_input(x, "quantize_tokens_fp8");
  check(x.dim() == 2, "quantize_tokens_fp8", "expected an (M, K) tensor");
  const torch::Tensor xf = x.to(torch::kFloat32);
  const torch::Tensor amax = xf.abs().amax(1, /*keepdim=*/true);
  QuantizedWeight q;
  q.scales = amax / kFp8Max;
  const torch::Tensor inverse = torch::where(amax > 0, kFp8Max / amax, torch::zeros_like(amax));
  q.values = (xf * inverse).clamp(-kFp8Max, kFp8Max).to(torch::kFloat8_e4m3fn);
  return q;
}

torch::Tensor fp8_linear(const torch::Tensor& x, const QuantizedWeight& weight, const torch::Tensor& bias) {
  check_float_input(x, "fp8_linear");
  check_weight(x, weight, torch::kFloat8_e4m3fn, "fp8_linear");
  std::string why;
  check(fp8_supported(x.device(), &why), "fp8_linear", why);
  const int64_t k = x.size(-1), n = weight.values.size(0);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = n;
  const QuantizedWeight xq = quantize_tokens_fp8(x.reshape({-1, k}));
  // Row-wise scaling: scale_a (M, 1), scale_b (1, N), both float32, bf16 output.
  torch::Tensor y = at::_scaled_mm(xq.values, weight.values.t(), xq.scales, weight.scales.view({1, n}), std::nullopt,
                                   std::nullopt, torch::kBFloat16, /*use_fast_accum=*/true);
  y = y.to(x.scalar_type());
  if (bias.defined()) y.add_(bias.to(x.scalar_type()));
  return y.view(out_shape);
}

bool fp8_supported(const torch::Device& device, std::string* why) {
  const auto say = [&](const std::string& reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (!device.is_cuda()) return say("fp8 needs a CUDA GPU of compute capability 8.9 or later (this is " + device.str() + ")");
#ifdef FOCUSVLA_WITH_CUDA
  const auto* properties = at::cuda::getDeviceProperties(device.has_index() ? device.index() : 0);
  const int major = properties->major, minor = properties->minor;
  if (major * 10 + minor < 89)
    return say("fp8 needs compute capability 8.9 or later (Ada, Hopper); " + device.str() + " has " +
               std::to_string(major) + "." + std::to_string(minor));
  return true;
#else
  return say("this build of focusvla has no CUDA");
#endif
}

}  // namespace focusvla::nn
