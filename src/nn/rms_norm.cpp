// The RMSNorm passes of nn/rms_norm.h. Compiled without fused multiply-add contraction
// (CMakeLists.txt): each product rounds as the expression's ops do.
#include "focusvla/nn/rms_norm.h"

#include <ATen/Parallel.h>

#include <string>

#include "float_bits.h"
#include "focusvla/core/error.h"
#include "focusvla/io/state_dict.h"

namespace focusvla::nn {
namespace {

using bits::bf16_to_float;
using bits::float_to_bf16;
using bits::grain;
using bits::to_float;

// h^2 of rows [begin, end): pow(h, 2) is h * h in float.
template <typename T>
inline void square_rows(const T* x, float* out, int64_t dim, int64_t begin, int64_t end) {
  for (int64_t i = begin * dim; i < end * dim; ++i) {
    const float h = to_float(x[i]);
    out[i] = h * h;
  }
}

// out = weight * (h * r).to(dtype) for rows [begin, end), r = rsqrt(variance + eps) per row.
inline void scale_rows(const float* x, const float* r, const float* w, float* out, int64_t dim, int64_t begin,
                       int64_t end) {
  for (int64_t m = begin; m < end; ++m)
    for (int64_t j = 0; j < dim; ++j) {
      const float h = x[m * dim + j] * r[m];
      out[m * dim + j] = w[j] * h;
    }
}

inline void scale_rows(const uint16_t* x, const float* r, const uint16_t* w, uint16_t* out, int64_t dim,
                       int64_t begin, int64_t end) {
  for (int64_t m = begin; m < end; ++m)
    for (int64_t j = 0; j < dim; ++j) {
      const float h = bf16_to_float(float_to_bf16(bf16_to_float(x[m * dim + j]) * r[m]));
      out[m * dim + j] = float_to_bf16(bf16_to_float(w[j]) * h);
    }
}

FOCUSVLA_CPU_CLONES
void square_f32(const float* x, float* out, int64_t dim, int64_t begin, int64_t end) {
  square_rows(x, out, dim, begin, end);
}

FOCUSVLA_CPU_CLONES
void square_bf16(const uint16_t* x, float* out, int64_t dim, int64_t begin, int64_t end) {
  square_rows(x, out, dim, begin, end);
}

FOCUSVLA_CPU_CLONES
void scale_f32(const float* x, const float* r, const float* w, float* out, int64_t dim, int64_t begin, int64_t end) {
  scale_rows(x, r, w, out, dim, begin, end);
}

FOCUSVLA_CPU_CLONES
void scale_bf16(const uint16_t* x, const float* r, const uint16_t* w, uint16_t* out, int64_t dim, int64_t begin,
                int64_t end) {
  scale_rows(x, r, w, out, dim, begin, end);
}

void check_shapes(const torch::Tensor& x, const torch::Tensor& weight) {
  const std::string what = "RMSNorm";
  check(x.defined() && x.dim() >= 1, what, "expected an input with at least one dimension");
  check(weight.defined() && weight.dim() == 1 && weight.size(0) == x.size(-1), what,
        "the weight must be (" + std::to_string(x.size(-1)) + ") for an input " + io::shape_string(x.sizes()) +
            ", got " + (weight.defined() ? io::shape_string(weight.sizes()) : std::string("none")));
}


}  // namespace

torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  check_shapes(x, weight);
  const auto h = x.to(torch::kFloat32);
  const auto variance = h.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (h * torch::rsqrt(variance + eps)).to(x.scalar_type());
}

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  check_shapes(x, weight);
  const auto dtype = x.scalar_type();
  // Contiguous x only: the expression's mean reads the float copy in x's own layout.
  const bool fused = x.is_cpu() && weight.is_cpu() && x.is_contiguous() &&
                     (dtype == torch::kFloat32 || dtype == torch::kBFloat16) && weight.scalar_type() == dtype;
  if (!fused) return rms_norm_reference(x, weight, eps);
  const torch::Tensor w = weight.contiguous();
  const int64_t dim = x.size(-1), rows = dim == 0 ? 0 : x.numel() / dim;
  torch::Tensor squares = torch::empty(x.sizes(), x.options().dtype(torch::kFloat32));
  at::parallel_for(0, rows, grain(dim), [&](int64_t begin, int64_t end) {
    if (dtype == torch::kFloat32)
      square_f32(x.const_data_ptr<float>(), squares.data_ptr<float>(), dim, begin, end);
    else
      square_bf16(static_cast<const uint16_t*>(x.const_data_ptr()), squares.data_ptr<float>(), dim, begin, end);
  });
  // LibTorch's mean and rsqrt (the reduction order is its kernel's).
  const torch::Tensor r = torch::rsqrt(squares.mean(-1, /*keepdim=*/true) + eps).contiguous();
  torch::Tensor out = torch::empty(x.sizes(), x.options());
  at::parallel_for(0, rows, grain(dim), [&](int64_t begin, int64_t end) {
    if (dtype == torch::kFloat32)
      scale_f32(x.const_data_ptr<float>(), r.const_data_ptr<float>(), w.const_data_ptr<float>(), out.data_ptr<float>(),
                dim, begin, end);
    else
      scale_bf16(static_cast<const uint16_t*>(x.const_data_ptr()), r.const_data_ptr<float>(),
                 static_cast<const uint16_t*>(w.const_data_ptr()), static_cast<uint16_t*>(out.data_ptr()), dim, begin,
                 end);
  });
  return out;
}

}  // namespace focusvla::nn
