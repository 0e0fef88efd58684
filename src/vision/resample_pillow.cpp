// Pillow's resize (src/libImaging/Resample.c), bit for bit: see focusvla/vision/resample.h.

#include <algorithm>
#include <cmath>

#include "focusvla/core/error.h"
#include "focusvla/vision/resample.h"
#include "resample_host.h"

namespace focusvla::vision {
namespace detail {
namespace {

// Pillow (src/libImaging/Resample.c): filters in double precision, coefficients normalized to
// sum 1 and then stored as 22-bit fixed point; each pass accumulates in int32 from 1 << 21 and
// keeps bits 22.. clipped to [0, 255].

constexpr int kPillowPrecisionBits = 32 - 8 - 2;

double pil_filter_support(PilFilter filter) {
  switch (filter) {
    case PilFilter::bilinear: return 1.0;
    case PilFilter::bicubic: return 2.0;
    case PilFilter::lanczos: return 3.0;
  }
  return 0.0;
}

double pil_sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}

double pil_filter(PilFilter filter, double x) {
  switch (filter) {
    case PilFilter::bilinear:
      x = std::abs(x);
      return x < 1.0 ? 1.0 - x : 0.0;
    case PilFilter::bicubic: {
      constexpr double a = -0.5;
      x = std::abs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    }
    case PilFilter::lanczos:
      return (-3.0 <= x && x < 3.0) ? pil_sinc(x) * pil_sinc(x / 3) : 0.0;
  }
  return 0.0;
}

// precompute_coeffs + normalize_coeffs_8bpc for the box [0, in_size).
Taps<int32_t> pillow_taps(int64_t in_size, int64_t out_size, PilFilter filter) {
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = pil_filter_support(filter) * filterscale;
  Taps<int32_t> taps;
  taps.taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  taps.weight.assign(static_cast<size_t>(out_size * taps.taps), 0);
  std::vector<double> k(static_cast<size_t>(taps.taps));
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (static_cast<double>(xx) + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = static_cast<int>(in_size);
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = pil_filter(filter, (x + xmin - center + 0.5) * ss);
      k[static_cast<size_t>(x)] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) k[static_cast<size_t>(x)] /= ww;
    int32_t* fixed = &taps.weight[static_cast<size_t>(xx * taps.taps)];
    for (int x = 0; x < xmax; ++x) {
      const double v = k[static_cast<size_t>(x)];
      const double scaled = v * (1 << kPillowPrecisionBits);
      fixed[x] = static_cast<int32_t>(v < 0 ? -0.5 + scaled : 0.5 + scaled);
    }
    taps.first.push_back(xmin);
    taps.count.push_back(std::max(xmax, 0));
  }
  return taps;
}

inline uint8_t pillow_clip8(int32_t sum) {
  const int32_t v = sum >> kPillowPrecisionBits;  // arithmetic shift: floor
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// One pass over uint8 (N, H, W, 3) contiguous CPU images, along the width
// (ImagingResampleHorizontal_8bpc) or the height (ImagingResampleVertical_8bpc).
torch::Tensor pillow_pass(const torch::Tensor& in, bool vertical, int64_t out_size, PilFilter filter) {
  const int64_t n = in.size(0), h = in.size(1), w = in.size(2);
  const Taps<int32_t> taps = pillow_taps(vertical ? h : w, out_size, filter);
  auto out = torch::empty({n, vertical ? out_size : h, vertical ? w : out_size, 3}, in.options());
  const uint8_t* src = in.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  constexpr int32_t half = 1 << (kPillowPrecisionBits - 1);
  if (!vertical) {
    for (int64_t row = 0; row < n * h; ++row) {
      const uint8_t* line = src + row * w * 3;
      uint8_t* out_line = dst + row * out_size * 3;
      for (int64_t xx = 0; xx < out_size; ++xx) {
        const int32_t* k = taps.of(xx);
        const uint8_t* p = line + taps.first[static_cast<size_t>(xx)] * 3;
        int32_t s0 = half, s1 = half, s2 = half;
        for (int64_t x = 0; x < taps.count[static_cast<size_t>(xx)]; ++x, p += 3) {
          s0 += p[0] * k[x];
          s1 += p[1] * k[x];
          s2 += p[2] * k[x];
        }
        out_line[xx * 3 + 0] = pillow_clip8(s0);
        out_line[xx * 3 + 1] = pillow_clip8(s1);
        out_line[xx * 3 + 2] = pillow_clip8(s2);
      }
    }
    return out;
  }
  // Vertical: whole rows at a time (integer sums, so the order of the terms does not matter).
  const int64_t row_len = w * 3;
  std::vector<int32_t> acc(static_cast<size_t>(row_len));
  for (int64_t img = 0; img < n; ++img) {
    for (int64_t yy = 0; yy < out_size; ++yy) {
      const int32_t* k = taps.of(yy);
      std::fill(acc.begin(), acc.end(), half);
      for (int64_t y = 0; y < taps.count[static_cast<size_t>(yy)]; ++y) {
        const uint8_t* line = src + (img * h + taps.first[static_cast<size_t>(yy)] + y) * row_len;
        const int32_t ky = k[y];
        for (int64_t i = 0; i < row_len; ++i) acc[static_cast<size_t>(i)] += line[i] * ky;
      }
      uint8_t* out_line = dst + (img * out_size + yy) * row_len;
      for (int64_t i = 0; i < row_len; ++i) out_line[i] = pillow_clip8(acc[static_cast<size_t>(i)]);
    }
  }
  return out;
}

}  // namespace

// Pillow's resize on a host batch (N, H, W, 3).
torch::Tensor pil_resize_host(const torch::Tensor& batch, int64_t height, int64_t width, PilFilter filter,
                              PilPassOrder order) {
  const int64_t in_h = batch.size(1), in_w = batch.size(2);
  torch::Tensor x = batch;
  // The two passes round to uint8 in between, so their order shows in the result. Pillow <= 12
  // always runs the horizontal pass first; Pillow 13 runs the vertical one first when it removes
  // more than twice as many rows as the horizontal pass removes columns (determined against
  // Pillow 13.0.0 on random sizes; see tests/vision/test_preprocess.cpp).
  const bool vertical_first =
      order == PilPassOrder::pillow13 && (in_h - height) > std::max<int64_t>(0, 2 * (in_w - width));
  auto horizontal = [&] {
    if (in_w != width) x = pillow_pass(x, false, width, filter);
  };
  auto vertical = [&] {
    if (in_h != height) x = pillow_pass(x, true, height, filter);
  };
  if (vertical_first) {
    vertical();
    horizontal();
  } else {
    horizontal();
    vertical();
  }
  return x;
}

}  // namespace detail

PilFilter parse_pil_filter(const std::string& name) {
  if (name == "bicubic") return PilFilter::bicubic;
  if (name == "bilinear") return PilFilter::bilinear;
  if (name == "lanczos") return PilFilter::lanczos;
  throw Error("interpolation '" + name + "': not supported (bicubic, bilinear, lanczos)");
}

torch::Tensor pil_resize(const torch::Tensor& images, int64_t height, int64_t width, PilFilter filter,
                         PilPassOrder order) {
  check_images(images, "pil_resize");
  detail::check_size(height, width, "pil_resize");
  if (images.size(-3) == height && images.size(-2) == width) return images;
  return detail::like_input(detail::pil_resize_host(detail::host_batch(images), height, width, filter, order), images);
}

}  // namespace focusvla::vision
