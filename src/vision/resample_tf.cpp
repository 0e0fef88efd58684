// TensorFlow's image steps of the LIBERO pipeline, transcribed in float32: the antialiased
// Lanczos-3 resize and OpenVLA's center crop (see focusvla/vision/resample.h).

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "focusvla/core/error.h"
#include "focusvla/vision/resample.h"
#include "resample_host.h"

namespace focusvla::vision {
namespace detail {
namespace {

// TensorFlow (core/kernels/image/scale_and_translate_op.cc, sampling_kernels.h), in float32.

float tf_lanczos3(float x) {
  constexpr float kPI = 3.14159265359f;
  constexpr float radius = 3.0f;
  x = std::abs(x);
  if (x > radius) return 0.0f;
  if (x <= 1e-3f) return 1.0f;
  return radius * std::sin(kPI * x) * std::sin(kPI * x / radius) / (kPI * kPI * x * x);
}

// ComputeSpansCore for scale = out / in (as tf.image.resize computes it), translation 0,
// antialias; `count` is the span GatherRows / GatherColumns visit (min(start + span, in) - start).
Taps<float> tf_lanczos3_taps(int64_t in_size, int64_t out_size) {
  const float scale = static_cast<float>(out_size) / static_cast<float>(in_size);
  const float inv_scale = static_cast<float>(1.0 / scale);
  const float inv_translate = -inv_scale * 0.0f;
  const float kernel_scale = std::max(inv_scale, 1.0f);
  const float radius = 3.0f;
  const float one_over_kernel_scale = 1.0f / kernel_scale;
  Taps<float> taps;
  taps.taps = std::min<int64_t>(2 * static_cast<int64_t>(std::ceil(radius * kernel_scale)) + 1, in_size);
  taps.weight.assign(static_cast<size_t>(out_size * taps.taps), 0.0f);
  std::vector<float> temp;
  for (int64_t x = 0; x < out_size; ++x) {
    const float col_f = static_cast<float>(x) + 0.5f;
    const float sample_f = col_f * inv_scale + inv_translate;
    int64_t span_start = 0;
    if (!(sample_f < 0 || sample_f > static_cast<float>(in_size))) {  // else an empty span (zero weights)
      span_start = static_cast<int64_t>(std::ceil(sample_f - radius * kernel_scale - 0.5f));
      auto span_end = static_cast<int64_t>(std::floor(sample_f + radius * kernel_scale - 0.5f));
      span_start = std::clamp<int64_t>(span_start, 0, in_size - 1);
      span_end = std::clamp<int64_t>(span_end, 0, in_size - 1) + 1;
      float total = 0.0f;
      temp.clear();
      for (int64_t source = span_start; source < span_end; ++source) {
        const float kernel_pos = static_cast<float>(source) + 0.5f - sample_f;
        const float w = tf_lanczos3(std::abs(kernel_pos * one_over_kernel_scale));
        total += w;
        temp.push_back(w);
      }
      if (std::abs(total) >= 1000.0f * FLT_MIN) {
        const float one_over_total = 1.0f / total;
        float* w = &taps.weight[static_cast<size_t>(x * taps.taps)];
        for (size_t t = 0; t < temp.size(); ++t) w[t] = temp[t] * one_over_total;
      }
    }
    taps.first.push_back(span_start);
    taps.count.push_back(std::min(span_start + taps.taps, in_size) - span_start);
  }
  return taps;
}

// GatherRows then GatherColumns on one uint8 image (H, W, 3) -> float (out_h, out_w, 3): each
// output accumulates w * in from 0, tap by tap.
std::vector<float> tf_scale(const uint8_t* src, int64_t h, int64_t w, int64_t out_h, int64_t out_w) {
  const Taps<float> rows = tf_lanczos3_taps(h, out_h), cols = tf_lanczos3_taps(w, out_w);
  const int64_t row_len = w * 3;
  std::vector<float> mid(static_cast<size_t>(out_h * row_len), 0.0f);
  for (int64_t y = 0; y < out_h; ++y) {
    float* out = &mid[static_cast<size_t>(y * row_len)];
    const float* k = rows.of(y);
    for (int64_t t = 0; t < rows.count[static_cast<size_t>(y)]; ++t) {
      const uint8_t* line = src + (rows.first[static_cast<size_t>(y)] + t) * row_len;
      for (int64_t i = 0; i < row_len; ++i) out[i] += k[t] * static_cast<float>(line[i]);
    }
  }
  std::vector<float> out(static_cast<size_t>(out_h * out_w * 3), 0.0f);
  for (int64_t y = 0; y < out_h; ++y) {
    const float* line = &mid[static_cast<size_t>(y * row_len)];
    for (int64_t x = 0; x < out_w; ++x) {
      float* px = &out[static_cast<size_t>((y * out_w + x) * 3)];
      const float* k = cols.of(x);
      const float* p = line + cols.first[static_cast<size_t>(x)] * 3;
      for (int64_t t = 0; t < cols.count[static_cast<size_t>(x)]; ++t, p += 3)
        for (int c = 0; c < 3; ++c) px[c] += k[t] * p[c];
    }
  }
  return out;
}

}  // namespace

torch::Tensor tf_resize_host(const torch::Tensor& batch, int64_t height, int64_t width) {
  const int64_t n = batch.size(0), h = batch.size(1), w = batch.size(2);
  auto out = torch::empty({n, height, width, 3}, batch.options());
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<float> x = tf_scale(batch[i].data_ptr<uint8_t>(), h, w, height, width);
    uint8_t* dst = out[i].data_ptr<uint8_t>();
    // tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8); tf.round is half to even.
    for (size_t k = 0; k < x.size(); ++k) dst[k] = static_cast<uint8_t>(std::clamp(std::nearbyint(x[k]), 0.0f, 255.0f));
  }
  return out;
}

torch::Tensor tf_crop_host(const torch::Tensor& batch, double crop_scale, int64_t height, int64_t width) {
  const int64_t n = batch.size(0), image_h = batch.size(1), image_w = batch.size(2);
  // The box, as OpenVLA's crop_and_resize computes it in float32: side sqrt(scale), centered.
  const float side = std::clamp(std::sqrt(static_cast<float>(crop_scale)), 0.0f, 1.0f);
  const float offset = (1.0f - side) / 2.0f;
  const float y1 = offset, x1 = offset, y2 = offset + side, x2 = offset + side;

  // CropAndResize (bilinear): source coordinate, floor / ceil neighbours and lerp per output row
  // and column. The box lies inside the image, so there is no extrapolation.
  struct Axis {
    std::vector<int64_t> low, high;
    std::vector<float> lerp;
  };
  auto axis = [](float lo, float hi, int64_t in_size, int64_t out_size) {
    Axis a;
    const float scale =
        out_size > 1 ? (hi - lo) * static_cast<float>(in_size - 1) / static_cast<float>(out_size - 1) : 0.0f;
    for (int64_t i = 0; i < out_size; ++i) {
      const float in = out_size > 1 ? lo * static_cast<float>(in_size - 1) + static_cast<float>(i) * scale
                                    : static_cast<float>(0.5 * (lo + hi) * static_cast<double>(in_size - 1));
      const auto low = static_cast<int64_t>(std::floor(in));
      a.low.push_back(std::clamp<int64_t>(low, 0, in_size - 1));
      a.high.push_back(std::clamp<int64_t>(static_cast<int64_t>(std::ceil(in)), 0, in_size - 1));
      a.lerp.push_back(in - static_cast<float>(low));
    }
    return a;
  };
  const Axis ys = axis(y1, y2, image_h, height), xs = axis(x1, x2, image_w, width);
  // convert_image_dtype(uint8 -> float32) multiplies by float(1 / 255).
  const float to_unit = static_cast<float>(1.0 / 255.0);
  auto out = torch::empty({n, height, width, 3}, batch.options());
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* src = batch[i].data_ptr<uint8_t>();
    uint8_t* dst = out[i].data_ptr<uint8_t>();
    auto at = [&](int64_t y, int64_t x, int c) { return static_cast<float>(src[(y * image_w + x) * 3 + c]) * to_unit; };
    for (int64_t y = 0; y < height; ++y) {
      const auto yi = static_cast<size_t>(y);
      for (int64_t x = 0; x < width; ++x) {
        const auto xi = static_cast<size_t>(x);
        for (int c = 0; c < 3; ++c) {
          const float top_left = at(ys.low[yi], xs.low[xi], c), top_right = at(ys.low[yi], xs.high[xi], c);
          const float bottom_left = at(ys.high[yi], xs.low[xi], c), bottom_right = at(ys.high[yi], xs.high[xi], c);
          const float top = top_left + (top_right - top_left) * xs.lerp[xi];
          const float bottom = bottom_left + (bottom_right - bottom_left) * xs.lerp[xi];
          const float v = std::clamp(top + (bottom - top) * ys.lerp[yi], 0.0f, 1.0f);
          // convert_image_dtype(float32 -> uint8, saturate=True): saturate_cast(x * 255.5).
          dst[(y * width + x) * 3 + c] = static_cast<uint8_t>(std::clamp(v * 255.5f, 0.0f, 255.0f));
        }
      }
    }
  }
  return out;
}

}  // namespace detail

torch::Tensor tf_resize_lanczos3(const torch::Tensor& images, int64_t height, int64_t width) {
  check_images(images, "tf_resize_lanczos3");
  detail::check_size(height, width, "tf_resize_lanczos3");
  return detail::like_input(detail::tf_resize_host(detail::host_batch(images), height, width), images);
}

torch::Tensor tf_center_crop(const torch::Tensor& images, double crop_scale, int64_t height, int64_t width) {
  check_images(images, "tf_center_crop");
  detail::check_size(height, width, "tf_center_crop");
  check(crop_scale > 0 && crop_scale <= 1, "tf_center_crop", "crop_scale must be in (0, 1]");
  return detail::like_input(detail::tf_crop_host(detail::host_batch(images), crop_scale, height, width), images);
}

}  // namespace focusvla::vision
