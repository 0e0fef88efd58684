#include "focusvla/vision/preprocess.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "focusvla/core/error.h"

namespace focusvla::vision {
namespace {

std::string shape_of(const torch::Tensor& t) { return c10::str(t.sizes()); }

// Separable resampling along one axis: output i is the weighted sum of inputs
// first[i] .. first[i] + count[i] - 1, with weights weight[i * taps ...].
template <typename W>
struct Taps {
  int64_t taps = 0;
  std::vector<int64_t> first;
  std::vector<int64_t> count;
  std::vector<W> weight;  // (out, taps)
  const W* of(int64_t i) const { return &weight[static_cast<size_t>(i * taps)]; }
};

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------

// (H, W, 3) -> (1, H, W, 3) contiguous on the CPU; (N, H, W, 3) likewise.
torch::Tensor host_batch(const torch::Tensor& images) {
  return (images.dim() == 3 ? images.unsqueeze(0) : images).to(torch::kCPU).contiguous();
}
// The result with the input's rank and device.
torch::Tensor like_input(const torch::Tensor& out, const torch::Tensor& images) {
  return (images.dim() == 3 ? out.squeeze(0) : out).to(images.device());
}

void check_size(int64_t height, int64_t width, const std::string& what) {
  check(height > 0 && width > 0, what,
        "output size must be positive, got " + std::to_string(height) + "x" + std::to_string(width));
}

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

}  // namespace

PilFilter parse_pil_filter(const std::string& name) {
  if (name == "bicubic") return PilFilter::bicubic;
  if (name == "bilinear") return PilFilter::bilinear;
  if (name == "lanczos") return PilFilter::lanczos;
  throw Error("interpolation '" + name + "': not supported (bicubic, bilinear, lanczos)");
}

void check_images(const torch::Tensor& images, const std::string& what) {
  check(images.defined(), what, "image tensor is undefined");
  check(images.scalar_type() == torch::kUInt8, what,
        std::string("expected uint8 image data, got ") + c10::toString(images.scalar_type()));
  check(images.dim() == 3 || images.dim() == 4, what,
        "expected an image of shape [H, W, 3] or images [N, H, W, 3], got " + shape_of(images));
  check(images.size(-1) == 3, what,
        "expected 3 channels (RGB, channels last), got " + std::to_string(images.size(-1)) + " in " +
            shape_of(images));
  check(images.size(-3) > 0 && images.size(-2) > 0, what,
        "empty image (" + std::to_string(images.size(-3)) + "x" + std::to_string(images.size(-2)) + ")");
  check(images.dim() == 3 || images.size(0) > 0, what, "no images (N = 0)");
}

torch::Tensor pil_resize(const torch::Tensor& images, int64_t height, int64_t width, PilFilter filter,
                         PilPassOrder order) {
  check_images(images, "pil_resize");
  check_size(height, width, "pil_resize");
  if (images.size(-3) == height && images.size(-2) == width) return images;
  return like_input(pil_resize_host(host_batch(images), height, width, filter, order), images);
}

torch::Tensor tf_resize_lanczos3(const torch::Tensor& images, int64_t height, int64_t width) {
  check_images(images, "tf_resize_lanczos3");
  check_size(height, width, "tf_resize_lanczos3");
  return like_input(tf_resize_host(host_batch(images), height, width), images);
}

torch::Tensor tf_center_crop(const torch::Tensor& images, double crop_scale, int64_t height, int64_t width) {
  check_images(images, "tf_center_crop");
  check_size(height, width, "tf_center_crop");
  check(crop_scale > 0 && crop_scale <= 1, "tf_center_crop", "crop_scale must be in (0, 1]");
  return like_input(tf_crop_host(host_batch(images), crop_scale, height, width), images);
}

torch::Tensor to_tensor(const ImageView& image, torch::Device device) {
  const std::string what = "image buffer";
  check(image.data != nullptr || image.height * image.width == 0, what, "data pointer is null");
  check(image.channels == 3, what,
        "expected 3 channels (RGB, interleaved), got " + std::to_string(image.channels));
  check(image.height > 0 && image.width > 0, what,
        "empty image (" + std::to_string(image.height) + "x" + std::to_string(image.width) + ")");
  const int64_t packed = image.width * image.channels;
  const int64_t stride = image.row_stride == 0 ? packed : image.row_stride;
  check(stride >= packed, what,
        "row_stride " + std::to_string(stride) + " is shorter than a row (" + std::to_string(packed) + " bytes)");
  const auto view = torch::from_blob(const_cast<uint8_t*>(image.data), {image.height, image.width, image.channels},
                                     {stride, image.channels, 1}, torch::kUInt8);
  return view.to(device, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

#ifdef FOCUSVLA_WITH_OPENCV
torch::Tensor to_tensor(const cv::Mat& image, torch::Device device) {
  const std::string what = "cv::Mat image";
  check(!image.empty(), what, "empty image (0x0)");
  check(image.dims <= 2, what, "expected a 2-D image, got " + std::to_string(image.dims) + " dimensions");
  check(image.depth() == CV_8U, what,
        "expected uint8 data (CV_8U), got OpenCV depth " + std::to_string(image.depth()) +
            " (convert with Mat::convertTo)");
  check(image.channels() == 3, what,
        "expected 3 channels (RGB), got " + std::to_string(image.channels()));
  ImageView view;
  view.data = image.ptr<uint8_t>(0);
  view.height = image.rows;
  view.width = image.cols;
  view.channels = 3;
  view.row_stride = static_cast<int64_t>(image.step[0]);
  return to_tensor(view, device);
}
#endif

// ---------------------------------------------------------------------------------------------

ImagePreprocessor::ImagePreprocessor(const io::PreprocessorConfig& config, PreprocessOptions options)
    : options_(options) {
  const std::string what = "preprocessor_config.json";
  check(config.backbones.size() == 2, what,
        "expected two backbones (DINOv2, SigLIP: a fused vision backbone), found " +
            std::to_string(config.backbones.size()));
  check(config.image_resize_strategy == "resize-naive", what,
        "image_resize_strategy '" + config.image_resize_strategy + "' is not supported (resize-naive)");
  for (const auto& b : config.backbones) {
    check(b.input_size[0] == 3 && b.input_size[1] == b.input_size[2] && b.input_size[1] > 0, what,
          "input_sizes entries must be [3, S, S]");
    Backbone backbone{b.input_size[1], parse_pil_filter(b.interpolation), {}, {}};
    for (size_t c = 0; c < 3; ++c) {
      backbone.mean[c] = static_cast<float>(b.mean[c]);
      backbone.std[c] = static_cast<float>(b.std[c]);
    }
    backbones_.push_back(backbone);
  }
  check(backbones_[0].size == backbones_[1].size, what, "the two backbones must use one input size");
  size_ = backbones_[0].size;
  check(options_.crop_scale > 0 && options_.crop_scale <= 1, "PreprocessOptions", "crop_scale must be in (0, 1]");
  device_statistics_ = statistics(options_.device);
}

ImagePreprocessor::Statistics ImagePreprocessor::statistics(torch::Device device) const {
  std::vector<float> mean, std;
  for (const Backbone& b : backbones_) {
    mean.insert(mean.end(), b.mean.begin(), b.mean.end());
    std.insert(std.end(), b.std.begin(), b.std.end());
  }
  const auto n = static_cast<int64_t>(backbones_.size());
  return Statistics{torch::tensor(mean).view({n, 1, 1, 3}).to(device), torch::tensor(std).view({n, 1, 1, 3}).to(device),
                    torch::full({1}, 255.0f, torch::kFloat32).to(device)};
}

void ImagePreprocessor::stage(const std::vector<torch::Tensor>& images, const torch::Tensor& out) const {
  const std::string what = "ImagePreprocessor::stage";
  check(!images.empty(), what, "no camera images (zero cameras)");
  const auto n = static_cast<int64_t>(images.size());
  const auto nb = static_cast<int64_t>(backbones_.size());
  check(out.defined() && out.scalar_type() == torch::kUInt8 && out.is_cpu() && out.is_contiguous() && out.dim() == 5 &&
            out.size(0) == n && out.size(1) == nb && out.size(2) == size_ && out.size(3) == size_ && out.size(4) == 3,
        what,
        "output buffer must be a contiguous host uint8 tensor of shape [" + std::to_string(n) + ", " +
            std::to_string(nb) + ", " + std::to_string(size_) + ", " + std::to_string(size_) + ", 3], got " +
            (out.defined() ? std::string(c10::toString(out.scalar_type())) + " " + shape_of(out) + " on " +
                                 out.device().str()
                           : "undefined"));
  for (int64_t i = 0; i < n; ++i) {
    const torch::Tensor& image = images[static_cast<size_t>(i)];
    check_images(image, what + ": image " + std::to_string(i));
    check(image.dim() == 3, what + ": image " + std::to_string(i),
          "expected one image [H, W, 3] per camera, got " + shape_of(image));
  }
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<torch::Tensor> resized = backbone_images(host_batch(images[static_cast<size_t>(i)]));
    for (int64_t k = 0; k < nb; ++k) out[i][k].copy_(resized[static_cast<size_t>(k)][0]);
  }
}

torch::Tensor ImagePreprocessor::normalize(const torch::Tensor& staged, torch::ScalarType dtype) const {
  const std::string what = "ImagePreprocessor::normalize";
  const auto nb = static_cast<int64_t>(backbones_.size());
  check(staged.defined() && staged.scalar_type() == torch::kUInt8 && staged.dim() >= 4 &&
            staged.size(-4) == nb && staged.size(-3) == size_ && staged.size(-2) == size_ && staged.size(-1) == 3,
        what, "expected staged uint8 images (..., " + std::to_string(nb) + ", " + std::to_string(size_) + ", " +
                  std::to_string(size_) + ", 3), got " +
                  (staged.defined() ? std::string(c10::toString(staged.scalar_type())) + " " + shape_of(staged)
                                    : "undefined"));
  // Compared with the statistics' own device, which has its index even when options_.device
  // was plain "cuda".
  const Statistics s = staged.device() == device_statistics_.mean.device() ? device_statistics_ : statistics(staged.device());
  // Tensor (not scalar) divisors: CUDA turns division by a host scalar into a multiplication by
  // its reciprocal, which rounds differently from the host pipeline's float division.
  const torch::Tensor x = staged.to(torch::kFloat32).div_(s.scale).sub_(s.mean).div_(s.std);  // (..., 2, S, S, 3)
  // (..., backbone, y, x, c) -> (..., backbone, c, y, x) -> (..., 3 * backbones, S, S)
  std::vector<int64_t> order;
  const int64_t lead = staged.dim() - 4;
  for (int64_t d = 0; d < lead; ++d) order.push_back(d);
  for (int64_t d : {lead, lead + 3, lead + 1, lead + 2}) order.push_back(d);
  std::vector<int64_t> shape(staged.sizes().begin(), staged.sizes().begin() + lead);
  for (int64_t d : {3 * nb, size_, size_}) shape.push_back(d);
  return x.permute(order).reshape(shape).to(dtype);
}

torch::Tensor ImagePreprocessor::libero_steps(const torch::Tensor& batch) const {
  torch::Tensor x = batch;
  if (options_.libero_resize && (x.size(1) != size_ || x.size(2) != size_)) x = tf_resize_host(x, size_, size_);
  if (options_.center_crop) x = tf_crop_host(x, options_.crop_scale, size_, size_);
  return x;
}

torch::Tensor ImagePreprocessor::backbone_input(const torch::Tensor& images, size_t backbone) const {
  check_images(images, "ImagePreprocessor");
  check(backbone < backbones_.size(), "ImagePreprocessor", "no backbone " + std::to_string(backbone));
  const Backbone& b = backbones_[backbone];
  const torch::Tensor out = pil_resize_host(libero_steps(host_batch(images)), b.size, b.size, b.filter,
                                            options_.pil_order);
  return out.to(images.device());
}

std::vector<torch::Tensor> ImagePreprocessor::backbone_images(const torch::Tensor& batch) const {
  const torch::Tensor prepared = libero_steps(batch);
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < backbones_.size(); ++i) {
    const Backbone& b = backbones_[i];
    // Shared by consecutive backbones with the same resize.
    out.push_back(i > 0 && b.filter == backbones_[i - 1].filter
                      ? out.back()
                      : pil_resize_host(prepared, b.size, b.size, b.filter, options_.pil_order));
  }
  return out;
}

void ImagePreprocessor::process(const torch::Tensor& batch, float* out) const {
  const int64_t plane = size_ * size_;
  const std::vector<torch::Tensor> images = backbone_images(batch);
  for (size_t i = 0; i < backbones_.size(); ++i) {
    const Backbone& b = backbones_[i];
    const torch::Tensor& resized = images[i];
    // torchvision: to_tensor (u8 -> float / 255), then normalize: (x - mean) / std, in float32.
    const uint8_t* src = resized.data_ptr<uint8_t>();
    for (int64_t n = 0; n < resized.size(0); ++n) {
      float* dst = out + (n * channels() + 3 * static_cast<int64_t>(i)) * plane;
      const uint8_t* image = src + n * plane * 3;
      for (int64_t c = 0; c < 3; ++c) {
        const float mean = b.mean[static_cast<size_t>(c)], std = b.std[static_cast<size_t>(c)];
        float* channel = dst + c * plane;
        for (int64_t p = 0; p < plane; ++p) channel[p] = (static_cast<float>(image[p * 3 + c]) / 255.0f - mean) / std;
      }
    }
  }
}

torch::Tensor ImagePreprocessor::operator()(const torch::Tensor& images) const {
  check_images(images, "ImagePreprocessor");
  const torch::Tensor batch = host_batch(images);
  auto out = torch::empty({batch.size(0), channels(), size_, size_}, torch::kFloat32);
  process(batch, out.data_ptr<float>());
  return out.to(images.device());
}

torch::Tensor ImagePreprocessor::operator()(const std::vector<torch::Tensor>& images) const {
  check(!images.empty(), "ImagePreprocessor", "no camera images (zero cameras)");
  check_images(images.front(), "ImagePreprocessor: image 0");
  auto out = torch::empty({static_cast<int64_t>(images.size()), channels(), size_, size_}, torch::kFloat32);
  into(images, out);
  return out.to(images.front().device());
}

void ImagePreprocessor::into(const std::vector<torch::Tensor>& images, const torch::Tensor& out) const {
  const std::string what = "ImagePreprocessor";
  check(!images.empty(), what, "no camera images (zero cameras)");
  const auto n = static_cast<int64_t>(images.size());
  check(out.defined() && out.scalar_type() == torch::kFloat32 && out.dim() == 4 && out.size(0) == n &&
            out.size(1) == channels() && out.size(2) == size_ && out.size(3) == size_,
        what,
        "output buffer must be float32 of shape [" + std::to_string(n) + ", " + std::to_string(channels()) + ", " +
            std::to_string(size_) + ", " + std::to_string(size_) + "], got " +
            (out.defined() ? std::string(c10::toString(out.scalar_type())) + " " + shape_of(out) : "undefined"));
  for (int64_t i = 0; i < n; ++i) {
    const torch::Tensor& image = images[static_cast<size_t>(i)];
    check_images(image, what + ": image " + std::to_string(i));
    check(image.dim() == 3, what + ": image " + std::to_string(i),
          "expected one image [H, W, 3] per camera, got " + shape_of(image));
  }
  // Computed on the host (the uint8 stages are Pillow's / TF's scalar arithmetic), straight into
  // `out` when it is a contiguous CPU tensor.
  const bool direct = out.is_cpu() && out.is_contiguous();
  const torch::Tensor host = direct ? out : torch::empty(out.sizes(), torch::kFloat32);
  const int64_t per_image = channels() * size_ * size_;
  for (int64_t i = 0; i < n; ++i)
    process(host_batch(images[static_cast<size_t>(i)]), host.data_ptr<float>() + i * per_image);
  if (!direct) out.copy_(host);
}

torch::Tensor ImagePreprocessor::operator()(const ImageView& image) const {
  return (*this)(to_tensor(image)).to(options_.device);
}

torch::Tensor ImagePreprocessor::operator()(const std::vector<ImageView>& images) const {
  std::vector<torch::Tensor> tensors;
  tensors.reserve(images.size());
  for (const auto& image : images) tensors.push_back(to_tensor(image));
  return (*this)(tensors).to(options_.device);
}

torch::Tensor ImagePreprocessor::batch(const std::vector<std::vector<torch::Tensor>>& samples) const {
  const std::string what = "ImagePreprocessor::batch";
  check(!samples.empty(), what, "no samples (B = 0)");
  const size_t cameras = samples.front().size();
  check(cameras > 0, what, "sample 0 has no camera images (zero cameras)");
  std::vector<torch::Tensor> all;
  for (size_t b = 0; b < samples.size(); ++b) {
    check(samples[b].size() == cameras, what,
          "sample " + std::to_string(b) + " has " + std::to_string(samples[b].size()) + " camera images, sample 0 has " +
              std::to_string(cameras));
    all.insert(all.end(), samples[b].begin(), samples[b].end());
  }
  const torch::Tensor flat = (*this)(all);
  return flat.view({static_cast<int64_t>(samples.size()), static_cast<int64_t>(cameras), channels(), size_, size_});
}

#ifdef FOCUSVLA_WITH_OPENCV
torch::Tensor ImagePreprocessor::operator()(const cv::Mat& image) const {
  return (*this)(to_tensor(image)).to(options_.device);
}

torch::Tensor ImagePreprocessor::operator()(const std::vector<cv::Mat>& images) const {
  std::vector<torch::Tensor> tensors;
  tensors.reserve(images.size());
  for (const auto& image : images) tensors.push_back(to_tensor(image));
  return (*this)(tensors).to(options_.device);
}
#endif

}  // namespace focusvla::vision
