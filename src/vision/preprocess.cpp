#include "focusvla/vision/preprocess.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "focusvla/core/error.h"

namespace focusvla::vision {
namespace {

std::string shape_of(const torch::Tensor& t) { return c10::str(t.sizes()); }

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

// Taps of a separable resampling along one axis: output i reads input index(i, t) with weight
// weight(i, t); taps past the filter's extent have weight 0 (and a clamped index).
struct AxisTaps {
  torch::Tensor index;   // (out, taps) int64
  torch::Tensor weight;  // (out, taps) int32 fixed point (Pillow) or float32 (TF)
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box [0, in_size).
AxisTaps pillow_taps(int64_t in_size, int64_t out_size, PilFilter filter) {
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = pil_filter_support(filter) * filterscale;
  const int ksize = static_cast<int>(std::ceil(support)) * 2 + 1;

  auto index = torch::zeros({out_size, ksize}, torch::kInt64);
  auto weight = torch::zeros({out_size, ksize}, torch::kInt32);
  auto idx = index.accessor<int64_t, 2>();
  auto wgt = weight.accessor<int32_t, 2>();
  std::vector<double> k(static_cast<size_t>(ksize));
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
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) k[x] /= ww;
    for (int x = 0; x < ksize; ++x) {
      idx[xx][x] = std::min<int64_t>(xmin + x, in_size - 1);
      if (x >= xmax) continue;
      const double scaled = k[x] * (1 << kPillowPrecisionBits);
      wgt[xx][x] = static_cast<int32_t>(k[x] < 0 ? -0.5 + scaled : 0.5 + scaled);
    }
  }
  return {index, weight};
}

// Reshapes a per-output vector for broadcasting along `dim` of an (N, H, W, C) tensor.
torch::Tensor along(const torch::Tensor& v, int64_t dim) {
  std::vector<int64_t> shape(4, 1);
  shape[static_cast<size_t>(dim)] = v.size(0);
  return v.view(shape);
}

// One Pillow pass along `dim` (1: rows / vertical, 2: columns / horizontal) of int32 pixels.
torch::Tensor pillow_pass(const torch::Tensor& pixels, int64_t dim, const AxisTaps& taps) {
  const auto index = taps.index.to(pixels.device());
  const auto weight = taps.weight.to(pixels.device());
  torch::Tensor acc;
  for (int64_t t = 0; t < index.size(1); ++t) {
    torch::Tensor term = pixels.index_select(dim, index.select(1, t)).mul_(along(weight.select(1, t), dim));
    acc = t == 0 ? term.add_(1 << (kPillowPrecisionBits - 1)) : acc.add_(term);
  }
  return acc.bitwise_right_shift_(kPillowPrecisionBits).clamp_(0, 255);
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

// ComputeSpansCore for scale = out / in (as tf.image.resize computes it), translation 0, antialias.
AxisTaps tf_lanczos3_taps(int64_t in_size, int64_t out_size) {
  const float scale = static_cast<float>(out_size) / static_cast<float>(in_size);
  const float inv_scale = static_cast<float>(1.0 / scale);
  const float inv_translate = -inv_scale * 0.0f;
  const float kernel_scale = std::max(inv_scale, 1.0f);
  const float radius = 3.0f;
  const int span_size = std::min(2 * static_cast<int>(std::ceil(radius * kernel_scale)) + 1, static_cast<int>(in_size));
  const float one_over_kernel_scale = 1.0f / kernel_scale;

  auto index = torch::zeros({out_size, span_size}, torch::kInt64);
  auto weight = torch::zeros({out_size, span_size}, torch::kFloat32);
  auto idx = index.accessor<int64_t, 2>();
  auto wgt = weight.accessor<float, 2>();
  std::vector<float> temp;
  for (int64_t x = 0; x < out_size; ++x) {
    const float col_f = static_cast<float>(x) + 0.5f;
    const float sample_f = col_f * inv_scale + inv_translate;
    if (sample_f < 0 || sample_f > static_cast<float>(in_size)) continue;  // empty span: zero weights
    auto span_start = static_cast<int64_t>(std::ceil(sample_f - radius * kernel_scale - 0.5f));
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
    for (int t = 0; t < span_size; ++t) idx[x][t] = std::min<int64_t>(span_start + t, in_size - 1);
    if (std::abs(total) >= 1000.0f * FLT_MIN) {
      const float one_over_total = 1.0f / total;
      for (size_t t = 0; t < temp.size(); ++t) wgt[x][static_cast<int64_t>(t)] = temp[t] * one_over_total;
    }
  }
  return {index, weight};
}

// One float pass along `dim`, accumulated tap by tap from the first as TF's GatherRows/Columns do.
torch::Tensor float_pass(const torch::Tensor& pixels, int64_t dim, const AxisTaps& taps) {
  const auto index = taps.index.to(pixels.device());
  const auto weight = taps.weight.to(pixels.device());
  torch::Tensor acc;
  for (int64_t t = 0; t < index.size(1); ++t) {
    torch::Tensor term = pixels.index_select(dim, index.select(1, t)).mul_(along(weight.select(1, t), dim));
    acc = t == 0 ? term : acc.add_(term);
  }
  return acc;
}

// (H, W, C) -> (1, H, W, C); (N, H, W, C) unchanged.
torch::Tensor as_batch(const torch::Tensor& images) { return images.dim() == 3 ? images.unsqueeze(0) : images; }
torch::Tensor like_input(const torch::Tensor& out, const torch::Tensor& images) {
  return images.dim() == 3 ? out.squeeze(0) : out;
}

void check_size(int64_t height, int64_t width, const std::string& what) {
  check(height > 0 && width > 0, what,
        "output size must be positive, got " + std::to_string(height) + "x" + std::to_string(width));
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
  const torch::Tensor batch = as_batch(images);
  const int64_t in_h = batch.size(1), in_w = batch.size(2);
  if (in_h == height && in_w == width) return images;
  torch::Tensor x = batch.to(torch::kInt32);
  auto horizontal = [&] {
    if (in_w != width) x = pillow_pass(x, 2, pillow_taps(in_w, width, filter));
  };
  auto vertical = [&] {
    if (in_h != height) x = pillow_pass(x, 1, pillow_taps(in_h, height, filter));
  };
  // The two passes round to uint8 in between, so their order shows in the result. Pillow <= 12
  // always runs the horizontal pass first; Pillow 13 runs the vertical one first when it removes
  // more than twice as many rows as the horizontal pass removes columns (determined against
  // Pillow 13.0.0 on random sizes; see tests/vision/test_preprocess.cpp).
  const bool vertical_first =
      order == PilPassOrder::pillow13 && (in_h - height) > std::max<int64_t>(0, 2 * (in_w - width));
  if (vertical_first) {
    vertical();
    horizontal();
  } else {
    horizontal();
    vertical();
  }
  return like_input(x.to(torch::kUInt8), images);
}

torch::Tensor tf_resize_lanczos3(const torch::Tensor& images, int64_t height, int64_t width) {
  check_images(images, "tf_resize_lanczos3");
  check_size(height, width, "tf_resize_lanczos3");
  const torch::Tensor batch = as_batch(images);
  torch::Tensor x = batch.to(torch::kFloat32);
  x = float_pass(x, 1, tf_lanczos3_taps(batch.size(1), height));  // rows first (GatherRows)
  x = float_pass(x, 2, tf_lanczos3_taps(batch.size(2), width));   // then columns
  return like_input(x.round_().clamp_(0, 255).to(torch::kUInt8), images);
}

torch::Tensor tf_center_crop(const torch::Tensor& images, double crop_scale, int64_t height, int64_t width) {
  check_images(images, "tf_center_crop");
  check_size(height, width, "tf_center_crop");
  check(crop_scale > 0 && crop_scale <= 1, "tf_center_crop", "crop_scale must be in (0, 1]");
  const torch::Tensor batch = as_batch(images);
  const int64_t image_h = batch.size(1), image_w = batch.size(2);

  // The box, as OpenVLA's crop_and_resize computes it in float32: side sqrt(scale), centered.
  const float side = std::clamp(std::sqrt(static_cast<float>(crop_scale)), 0.0f, 1.0f);
  const float offset = (1.0f - side) / 2.0f;
  const float y1 = offset, x1 = offset, y2 = offset + side, x2 = offset + side;

  // CropAndResize (bilinear): source coordinate, floor / ceil neighbours and lerp per output row
  // and column. The box lies inside the image, so there is no extrapolation.
  auto axis = [](float lo, float hi, int64_t in_size, int64_t out_size) {
    auto index = torch::empty({2, out_size}, torch::kInt64);
    auto lerp = torch::empty({out_size}, torch::kFloat32);
    auto idx = index.accessor<int64_t, 2>();
    auto frac = lerp.accessor<float, 1>();
    const float scale =
        out_size > 1 ? (hi - lo) * static_cast<float>(in_size - 1) / static_cast<float>(out_size - 1) : 0.0f;
    for (int64_t i = 0; i < out_size; ++i) {
      const float in = out_size > 1 ? lo * static_cast<float>(in_size - 1) + static_cast<float>(i) * scale
                                    : static_cast<float>(0.5 * (lo + hi) * static_cast<double>(in_size - 1));
      const auto low = static_cast<int64_t>(std::floor(in));
      idx[0][i] = std::clamp<int64_t>(low, 0, in_size - 1);
      idx[1][i] = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(in)), 0, in_size - 1);
      frac[i] = in - static_cast<float>(low);
    }
    return std::make_pair(index, lerp);
  };
  const auto device = images.device();
  auto [rows, y_lerp] = axis(y1, y2, image_h, height);
  auto [cols, x_lerp] = axis(x1, x2, image_w, width);
  rows = rows.to(device), cols = cols.to(device);
  y_lerp = along(y_lerp.to(device), 1), x_lerp = along(x_lerp.to(device), 2);

  // convert_image_dtype(uint8 -> float32): u8 * float(1 / 255).
  const torch::Tensor x = batch.to(torch::kFloat32).mul_(static_cast<float>(1.0 / 255.0));
  const torch::Tensor top = x.index_select(1, rows[0]), bottom = x.index_select(1, rows[1]);
  auto lerp_columns = [&](const torch::Tensor& r) {
    const torch::Tensor left = r.index_select(2, cols[0]);
    return left + (r.index_select(2, cols[1]) - left) * x_lerp;
  };
  const torch::Tensor t = lerp_columns(top);
  const torch::Tensor crop = t + (lerp_columns(bottom) - t) * y_lerp;
  // clip to [0, 1], then convert_image_dtype(float32 -> uint8, saturate): saturate_cast(x * 255.5).
  const torch::Tensor out = crop.clamp(0.0f, 1.0f).mul_(255.5f).clamp_(0.0f, 255.0f).to(torch::kUInt8);
  return like_input(out, images);
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
  check(image.dims <= 2, what, "expected a 2-D image, got " + std::to_string(image.dims) + " dimensions");
  check(image.depth() == CV_8U, what,
        "expected uint8 data (CV_8U), got OpenCV depth " + std::to_string(image.depth()) +
            " (convert with Mat::convertTo)");
  check(image.channels() == 3, what,
        "expected 3 channels (RGB), got " + std::to_string(image.channels()));
  check(!image.empty(), what, "empty image (0x0)");
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
}

torch::Tensor ImagePreprocessor::libero_steps(const torch::Tensor& images) const {
  torch::Tensor x = images;
  if (options_.libero_resize && (x.size(1) != size_ || x.size(2) != size_)) x = tf_resize_lanczos3(x, size_, size_);
  if (options_.center_crop) x = tf_center_crop(x, options_.crop_scale, size_, size_);
  return x;
}

torch::Tensor ImagePreprocessor::backbone_input(const torch::Tensor& images, size_t backbone) const {
  check_images(images, "ImagePreprocessor");
  check(backbone < backbones_.size(), "ImagePreprocessor", "no backbone " + std::to_string(backbone));
  const Backbone& b = backbones_[backbone];
  return pil_resize(libero_steps(as_batch(images)), b.size, b.size, b.filter);
}

void ImagePreprocessor::process(const torch::Tensor& images, const torch::Tensor& out) const {
  const torch::Tensor prepared = libero_steps(images);
  torch::Tensor resized;  // shared by the backbones when their resize is the same
  for (size_t i = 0; i < backbones_.size(); ++i) {
    const Backbone& b = backbones_[i];
    if (i == 0 || b.filter != backbones_[i - 1].filter) resized = pil_resize(prepared, b.size, b.size, b.filter);
    // torchvision: to_tensor (u8 -> float / 255), then normalize (x - mean) / std, in float32.
    const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(images.device());
    const auto mean = torch::tensor({b.mean[0], b.mean[1], b.mean[2]}, options).view({1, 3, 1, 1});
    const auto std = torch::tensor({b.std[0], b.std[1], b.std[2]}, options).view({1, 3, 1, 1});
    const torch::Tensor x = resized.permute({0, 3, 1, 2}).to(torch::kFloat32).div_(255);
    out.slice(1, 3 * static_cast<int64_t>(i), 3 * static_cast<int64_t>(i) + 3).copy_(x.sub_(mean).div_(std));
  }
}

torch::Tensor ImagePreprocessor::operator()(const torch::Tensor& images) const {
  check_images(images, "ImagePreprocessor");
  const torch::Tensor batch = as_batch(images);
  auto out = torch::empty({batch.size(0), channels(), size_, size_},
                          torch::TensorOptions().dtype(torch::kFloat32).device(images.device()));
  process(batch, out);
  return out;
}

torch::Tensor ImagePreprocessor::operator()(const std::vector<torch::Tensor>& images) const {
  check(!images.empty(), "ImagePreprocessor", "no camera images (zero cameras)");
  check_images(images.front(), "ImagePreprocessor: image 0");
  auto out = torch::empty({static_cast<int64_t>(images.size()), channels(), size_, size_},
                          torch::TensorOptions().dtype(torch::kFloat32).device(images.front().device()));
  into(images, out);
  return out;
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
  // Images of one size and device run as one batch; the others one by one.
  const auto& first = images.front();
  const bool uniform = std::all_of(images.begin(), images.end(), [&](const torch::Tensor& t) {
    return t.sizes() == first.sizes() && t.device() == first.device();
  });
  if (uniform) {
    const torch::Tensor batch = torch::stack(images).to(out.device());
    if (out.is_contiguous()) return process(batch, out);
    const auto tmp = torch::empty_like(out, at::MemoryFormat::Contiguous);
    process(batch, tmp);
    out.copy_(tmp);
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    process(images[static_cast<size_t>(i)].to(out.device()).unsqueeze(0), out.slice(0, i, i + 1));
}

torch::Tensor ImagePreprocessor::operator()(const ImageView& image) const {
  return (*this)(to_tensor(image, options_.device));
}

torch::Tensor ImagePreprocessor::operator()(const std::vector<ImageView>& images) const {
  std::vector<torch::Tensor> tensors;
  tensors.reserve(images.size());
  for (const auto& image : images) tensors.push_back(to_tensor(image, options_.device));
  return (*this)(tensors);
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
  return (*this)(to_tensor(image, options_.device));
}

torch::Tensor ImagePreprocessor::operator()(const std::vector<cv::Mat>& images) const {
  std::vector<torch::Tensor> tensors;
  tensors.reserve(images.size());
  for (const auto& image : images) tensors.push_back(to_tensor(image, options_.device));
  return (*this)(tensors);
}
#endif

}  // namespace focusvla::vision
