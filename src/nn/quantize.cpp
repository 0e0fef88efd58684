// The int8 / fp8 arithmetic of nn/quantize.h. The two CPU loops (per-token quantization, the
// epilogue) are compiled without fused multiply-add contraction (CMakeLists.txt), so that each
// float operation rounds as its PyTorch counterpart does and the tests can compare exactly.
#include "focusvla/nn/quantize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "focusvla/core/error.h"

#ifdef FOCUSVLA_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace focusvla::nn {
namespace {

constexpr float kFp8Max = 448.0f;  // the largest finite float8 e4m3fn

// Rows of x (M, K) -> int8 values and a float32 scale per row (see quantize_tokens_int8).
template <typename T>
void quantize_rows_cpu(const T* x, int64_t rows, int64_t k, int8_t* values, float* scales) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const T* row = x + m * k;
      float amax = 0.0f, probe = 0.0f;  // probe: NaN when the row holds NaN or Inf
      for (int64_t i = 0; i < k; ++i) {
        const float v = static_cast<float>(row[i]);
        const float a = std::fabs(v);
        amax = a > amax ? a : amax;
        probe += v * 0.0f;
      }
      float scale = amax / 127.0f;
      float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
      if (!(probe == 0.0f)) {
        scale = std::numeric_limits<float>::quiet_NaN();
        inverse = 0.0f;
      }
      scales[m] = scale;
      int8_t* out = values + m * k;
      for (int64_t i = 0; i < k; ++i) {
        const float q = std::nearbyint(static_cast<float>(row[i]) * inverse);
        out[i] = static_cast<int8_t>(q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : (q == q ? q : 0.0f)));
      }
    }
  });
}

// out (M, N) = float(acc) * x_scale[m] * w_scale[n] (+ bias[n]), rounded once to T.
template <typename T>
void epilogue_cpu(const int32_t* acc, int64_t rows, int64_t n, const float* x_scales, const float* w_scales,
                  const float* bias, T* out) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float xs = x_scales[m];
      const int32_t* a = acc + m * n;
      T* y = out + m * n;
      if (bias != nullptr) {
        for (int64_t j = 0; j < n; ++j) y[j] = static_cast<T>(static_cast<float>(a[j]) * xs * w_scales[j] + bias[j]);
      } else {
        for (int64_t j = 0; j < n; ++j) y[j] = static_cast<T>(static_cast<float>(a[j]) * xs * w_scales[j]);
      }
    }
  });
}

void check_float_input(const torch::Tensor& x, const std::string& what) {
  check(x.defined() && x.dim() >= 1, what, "expected a tensor with at least one dimension");
  const auto t = x.scalar_type();
  check(t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16, what,
        std::string("dtype ") + c10::toString(t) + " is not float32, bfloat16 or float16");
}

void check_weight(const torch::Tensor& x, const QuantizedWeight& w, torch::ScalarType values_dtype,
                  const std::string& what) {
  check(w.values.defined() && w.values.dim() == 2 && w.values.scalar_type() == values_dtype, what,
        std::string("weight values must be (N, K) ") + c10::toString(values_dtype));
  check(w.scales.defined() && w.scales.numel() == w.values.size(0) && w.scales.scalar_type() == torch::kFloat32, what,
        "weight scales must be float32, one per output row");
  check(x.size(-1) == w.values.size(1), what,
        "input has " + std::to_string(x.size(-1)) + " features, the weight takes " + std::to_string(w.values.size(1)));
}

// Whether /proc/cpuinfo's first flags line holds any of `wanted` (false when unreadable).
bool cpu_flags_have(std::initializer_list<const char*> wanted) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0 && line.rfind("Features", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') == std::string::npos ? 0 : line.find(':') + 1));
    std::string word;
    while (words >> word)
      for (const char* w : wanted)
        if (word == w) return true;
    return false;  // the first CPU's flags decide
  }
  return false;
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
    return cpu_flags_have({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"});
  }();
  return has;
}

int cpu_int8_weight_max() { return cpu_has_int8_dot() ? 127 : 63; }

QuantizedWeight quantize_rows_int8(const torch::Tensor& weight, int qmax) {
  check(weight.defined() && weight.dim() == 2, "quantize_rows_int8", "expected an (N, K) weight");
  check(qmax > 0 && qmax <= 127, "quantize_rows_int8", "qmax must be in 1 .. 127");
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.to(torch::kFloat32);
  const torch::Tensor amax = w.abs().amax(1);
  QuantizedWeight q;
  q.scales = amax / static_cast<float>(qmax);
  const torch::Tensor inverse = torch::where(amax > 0, static_cast<float>(qmax) / amax, torch::zeros_like(amax));
  q.values = torch::round(w * inverse.unsqueeze(1)).clamp(-qmax, qmax).nan_to_num(0).to(torch::kInt8);
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

QuantizedWeight quantize_tokens_int8(const torch::Tensor& x) {
  check_float_input(x, "quantize_tokens_int8");
  check(x.dim() == 2 && x.is_cpu() && x.is_contiguous(), "quantize_tokens_int8", "expected a contiguous (M, K) CPU tensor");
  const int64_t m = x.size(0), k = x.size(1);
  QuantizedWeight q;
  q.values = torch::empty({m, k}, torch::kInt8);
  q.scales = torch::empty({m}, torch::kFloat32);
  int8_t* values = q.values.data_ptr<int8_t>();
  float* scales = q.scales.data_ptr<float>();
  switch (x.scalar_type()) {
    case torch::kFloat32: quantize_rows_cpu(x.const_data_ptr<float>(), m, k, values, scales); break;
    case torch::kBFloat16: quantize_rows_cpu(x.const_data_ptr<c10::BFloat16>(), m, k, values, scales); break;
    default: quantize_rows_cpu(x.const_data_ptr<c10::Half>(), m, k, values, scales); break;
  }
  return q;
}

torch::Tensor int8_linear(const torch::Tensor& x, const QuantizedWeight& weight, const torch::Tensor& bias_fp32) {
  check_float_input(x, "int8_linear");
  check_weight(x, weight, torch::kInt8, "int8_linear");
  check(x.is_cpu() && weight.values.is_cpu(), "int8_linear", "runs on the CPU (CUDA: int8 weight-only or fp8)");
  const int64_t k = x.size(-1), n = weight.values.size(0);
  check(!bias_fp32.defined() || (bias_fp32.numel() == n && bias_fp32.scalar_type() == torch::kFloat32), "int8_linear",
        "bias must be float32 with one value per output row");
  const torch::Tensor x2 = x.reshape({-1, k}).contiguous();
  const int64_t m = x2.size(0);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = n;
  torch::Tensor out = torch::empty({m, n}, x.options());
  if (m == 0) return out.view(out_shape);
  const QuantizedWeight xq = quantize_tokens_int8(x2);
  // (M, K) x (K, N): the weight's transpose is a column-major view, as oneDNN reads it.
  const torch::Tensor acc = at::_int_mm(xq.values, weight.values.t());
  const torch::Tensor ws = weight.scales.contiguous();
  const float* bias = bias_fp32.defined() ? bias_fp32.const_data_ptr<float>() : nullptr;
  switch (x.scalar_type()) {
    case torch::kFloat32:
      epilogue_cpu(acc.const_data_ptr<int32_t>(), m, n, xq.scales.const_data_ptr<float>(), ws.const_data_ptr<float>(),
                   bias, out.data_ptr<float>());
      break;
    case torch::kBFloat16:
      epilogue_cpu(acc.const_data_ptr<int32_t>(), m, n, xq.scales.const_data_ptr<float>(), ws.const_data_ptr<float>(),
                   bias, out.data_ptr<c10::BFloat16>());
      break;
    default:
      epilogue_cpu(acc.const_data_ptr<int32_t>(), m, n, xq.scales.const_data_ptr<float>(), ws.const_data_ptr<float>(),
                   bias, out.data_ptr<c10::Half>());
      break;
  }
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
