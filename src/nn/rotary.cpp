// The rotary embedding loop of nn/rotary.h. Compiled without fused multiply-add contraction
// (CMakeLists.txt): each product and the sum round as the unfused ops' do.
#include "focusvla/nn/rotary.h"

#include <ATen/Parallel.h>

#include <string>
#include <vector>

#include "float_bits.h"
#include "focusvla/core/error.h"
#include "focusvla/io/state_dict.h"

namespace focusvla::nn {
namespace {

using bits::bf16_to_float;
using bits::float_to_bf16;
using bits::grain;
using bits::to_float;

// Where the rows are: x (d0, d1, d2, D) with unit stride in D; row r = (i0, i1, i2) row-major;
// its position is i1 or i2.
struct Rows {
  int64_t d1, d2, s0, s1, s2, dim, position_dim;
  int64_t offset(int64_t r) const { return (r / (d1 * d2)) * s0 + ((r / d2) % d1) * s1 + (r % d2) * s2; }
  int64_t position(int64_t r) const { return position_dim == 1 ? (r / d2) % d1 : r % d2; }
};

// One output element: round(round(a * c) + round(b * s)), `round` to the tensor's dtype; b is the
// rotated partner (negated or not), exact in float.
inline float rotate(float a, float c, float b, float s) {
  const float p = a * c;
  const float q = b * s;
  return p + q;
}

inline uint16_t rotate(uint16_t a, uint16_t c, float b, uint16_t s) {
  const float p = bf16_to_float(float_to_bf16(bf16_to_float(a) * bf16_to_float(c)));
  const float q = bf16_to_float(float_to_bf16(b * bf16_to_float(s)));
  return float_to_bf16(p + q);
}

// Rows [begin, end) of x -> out; T is float or the bits of bf16.
template <typename T>
inline void rotate_rows(const T* x, const T* cos, const T* sin, T* out, const Rows& g, RotaryPairs pairs,
                        int64_t begin, int64_t end) {
  const int64_t half = g.dim / 2;
  for (int64_t r = begin; r < end; ++r) {
    const T* a = x + g.offset(r);
    const T* c = cos + g.position(r) * g.dim;
    const T* s = sin + g.position(r) * g.dim;
    T* y = out + r * g.dim;
    if (pairs == RotaryPairs::kHalves) {
      for (int64_t i = 0; i < half; ++i) y[i] = rotate(a[i], c[i], -to_float(a[i + half]), s[i]);
      for (int64_t i = half; i < g.dim; ++i) y[i] = rotate(a[i], c[i], to_float(a[i - half]), s[i]);
    } else {
      for (int64_t i = 0; i + 1 < g.dim; i += 2) {
        y[i] = rotate(a[i], c[i], -to_float(a[i + 1]), s[i]);
        y[i + 1] = rotate(a[i + 1], c[i + 1], to_float(a[i]), s[i + 1]);
      }
    }
  }
}

FOCUSVLA_CPU_CLONES
void rows_f32(const float* x, const float* cos, const float* sin, float* out, const Rows& g, RotaryPairs pairs,
              int64_t begin, int64_t end) {
  rotate_rows(x, cos, sin, out, g, pairs, begin, end);
}

FOCUSVLA_CPU_CLONES
void rows_bf16(const uint16_t* x, const uint16_t* cos, const uint16_t* sin, uint16_t* out, const Rows& g,
               RotaryPairs pairs, int64_t begin, int64_t end) {
  rotate_rows(x, cos, sin, out, g, pairs, begin, end);
}

void check_shapes(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int64_t position_dim) {
  const std::string what = "rotary embedding";
  check(x.defined() && x.dim() == 4, what, "expected x of rank 4, got " + (x.defined() ? io::shape_string(x.sizes()) : std::string("none")));
  check(position_dim == 1 || position_dim == 2, what, "the position dimension must be 1 or 2, got " + std::to_string(position_dim));
  check(x.size(3) % 2 == 0, what, "the last dimension must be even, got " + std::to_string(x.size(3)));
  const std::vector<int64_t> table{x.size(position_dim), x.size(3)};
  for (const auto* t : {&cos, &sin})
    check(t->defined() && t->sizes() == torch::IntArrayRef(table), what,
          "cos / sin must be " + io::shape_string(table) + " for x " + io::shape_string(x.sizes()) + ", got " +
              (t->defined() ? io::shape_string(t->sizes()) : std::string("none")));
}


}  // namespace

torch::Tensor rotary_reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                               int64_t position_dim, RotaryPairs pairs) {
  check_shapes(x, cos, sin, position_dim);
  const int64_t dim = x.size(3);
  const auto table = [&](const torch::Tensor& t) {
    return position_dim == 1 ? t.view({1, t.size(0), 1, dim}) : t.view({1, 1, t.size(0), dim});
  };
  torch::Tensor rotated;
  if (pairs == RotaryPairs::kHalves) {
    rotated = torch::cat({x.narrow(3, dim / 2, dim / 2).neg(), x.narrow(3, 0, dim / 2)}, 3);
  } else {
    const auto p = x.unflatten(-1, {-1, 2});
    rotated = torch::stack({-p.select(-1, 1), p.select(-1, 0)}, -1).flatten(-2);
  }
  return x * table(cos) + rotated * table(sin);
}

torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int64_t position_dim,
                     RotaryPairs pairs) {
  check_shapes(x, cos, sin, position_dim);
  const auto dtype = x.scalar_type();
  const bool fused = x.is_cpu() && (dtype == torch::kFloat32 || dtype == torch::kBFloat16) &&
                     cos.scalar_type() == dtype && sin.scalar_type() == dtype && cos.is_cpu() && sin.is_cpu();
  if (!fused) return rotary_reference(x, cos, sin, position_dim, pairs);
  const torch::Tensor xs = x.stride(3) == 1 ? x : x.contiguous();
  const torch::Tensor c = cos.contiguous(), s = sin.contiguous();
  torch::Tensor out = torch::empty(x.sizes(), x.options().memory_format(torch::MemoryFormat::Contiguous));
  const Rows g{xs.size(1), xs.size(2), xs.stride(0), xs.stride(1), xs.stride(2), xs.size(3), position_dim};
  const int64_t rows = xs.size(0) * xs.size(1) * xs.size(2);
  at::parallel_for(0, rows, grain(g.dim), [&](int64_t begin, int64_t end) {
    if (dtype == torch::kFloat32)
      rows_f32(xs.const_data_ptr<float>(), c.const_data_ptr<float>(), s.const_data_ptr<float>(), out.data_ptr<float>(),
               g, pairs, begin, end);
    else
      rows_bf16(static_cast<const uint16_t*>(xs.const_data_ptr()), static_cast<const uint16_t*>(c.const_data_ptr()),
                static_cast<const uint16_t*>(s.const_data_ptr()), static_cast<uint16_t*>(out.data_ptr()), g, pairs,
                begin, end);
  });
  return out;
}

}  // namespace focusvla::nn
