#include "focusvla/vision/preprocess.h"

#include <algorithm>
#include <cmath>

#include "focusvla/core/error.h"
#include "focusvla/vision/jpeg.h"
#include "resample_host.h"

namespace focusvla::vision {

using detail::host_batch;
using detail::pil_resize_host;
using detail::shape_of;
using detail::tf_crop_host;
using detail::tf_resize_host;

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

std::vector<EncoderInput> EncoderInput::from_config(const io::PreprocessorConfig& config) {
  const std::string what = "preprocessor_config.json";
  check(config.image_resize_strategy == "resize-naive", what,
        "image_resize_strategy '" + config.image_resize_strategy + "' is not supported (resize-naive)");
  std::vector<EncoderInput> out;
  for (const auto& b : config.backbones) {
    check(b.input_size[0] == 3 && b.input_size[1] == b.input_size[2] && b.input_size[1] > 0, what,
          "input_sizes entries must be [3, S, S]");
    EncoderInput input{b.input_size[1], parse_pil_filter(b.interpolation), {}};
    for (size_t c = 0; c < 3; ++c) {
      input.normalization.mean[c] = static_cast<float>(b.mean[c]);
      input.normalization.std[c] = static_cast<float>(b.std[c]);
    }
    out.push_back(input);
  }
  return out;
}

EncoderInput EncoderInput::of(const ImageEncoder& encoder) {
  return EncoderInput{encoder.image_size(), PilFilter::bicubic, encoder.normalization()};
}

ImagePreprocessor::ImagePreprocessor(const io::PreprocessorConfig& config, PreprocessOptions options)
    : ImagePreprocessor(EncoderInput::from_config(config), options) {}

ImagePreprocessor::ImagePreprocessor(std::vector<EncoderInput> encoders, PreprocessOptions options)
    : encoders_(std::move(encoders)), options_(options) {
  const std::string what = "ImagePreprocessor";
  check(!encoders_.empty(), what, "no encoders (preprocessor_config.json lists no backbone)");
  size_ = encoders_.front().size;
  for (const EncoderInput& e : encoders_) {
    check(e.size > 0, what, "encoder input size must be positive, got " + std::to_string(e.size));
    check(e.size == size_, what,
          "the encoders must use one input size, got " + std::to_string(size_) + " and " + std::to_string(e.size));
    for (size_t c = 0; c < 3; ++c)
      check(std::isfinite(e.normalization.mean[c]) && std::isfinite(e.normalization.std[c]) &&
                e.normalization.std[c] != 0.0f,
            what, "normalization mean / std must be finite with std != 0");
  }
  check(options_.crop_scale > 0 && options_.crop_scale <= 1, "PreprocessOptions", "crop_scale must be in (0, 1]");
  device_statistics_ = statistics(options_.device);
}

ImagePreprocessor::Statistics ImagePreprocessor::statistics(torch::Device device) const {
  std::vector<float> mean, std;
  for (const EncoderInput& e : encoders_) {
    mean.insert(mean.end(), e.normalization.mean.begin(), e.normalization.mean.end());
    std.insert(std.end(), e.normalization.std.begin(), e.normalization.std.end());
  }
  const auto n = num_encoders();
  return Statistics{torch::tensor(mean).view({n, 1, 1, 3}).to(device), torch::tensor(std).view({n, 1, 1, 3}).to(device),
                    torch::full({1}, 255.0f, torch::kFloat32).to(device)};
}

void ImagePreprocessor::stage(const std::vector<torch::Tensor>& images, const torch::Tensor& out) const {
  const std::string what = "ImagePreprocessor::stage";
  check(!images.empty(), what, "no camera images (zero cameras)");
  const auto n = static_cast<int64_t>(images.size());
  const int64_t nb = num_encoders();
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
    const std::vector<torch::Tensor> resized = encoder_images(host_batch(images[static_cast<size_t>(i)]));
    for (int64_t k = 0; k < nb; ++k) out[i][k].copy_(resized[static_cast<size_t>(k)][0]);
  }
}

torch::Tensor ImagePreprocessor::normalize(const torch::Tensor& staged, torch::ScalarType dtype) const {
  const std::string what = "ImagePreprocessor::normalize";
  const int64_t nb = num_encoders();
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
  const torch::Tensor x = staged.to(torch::kFloat32).div_(s.scale).sub_(s.mean).div_(s.std);  // (..., E, S, S, 3)
  // (..., encoder, y, x, c) -> (..., encoder, c, y, x) -> (..., 3 * encoders, S, S)
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
  // The reference's prepare_images_for_vla resizes only images that are not already the model's
  // size, and its resize_image_for_policy JPEG-compresses them first (as the RLDS builder did with
  // the training frames).
  if (options_.libero_resize && (x.size(1) != size_ || x.size(2) != size_)) {
    if (options_.jpeg_roundtrip) x = jpeg_roundtrip(x);
    x = tf_resize_host(x, size_, size_);
  }
  if (options_.center_crop) x = tf_crop_host(x, options_.crop_scale, size_, size_);
  return x;
}

std::vector<int64_t> ImagePreprocessor::staging_shape(int64_t batch, int64_t cameras) const {
  return {batch, cameras, num_encoders(), size_, size_, 3};
}

torch::Tensor ImagePreprocessor::encoder_input(const torch::Tensor& images, size_t index) const {
  check_images(images, "ImagePreprocessor");
  check(index < encoders_.size(), "ImagePreprocessor", "no encoder " + std::to_string(index));
  const EncoderInput& e = encoders_[index];
  const torch::Tensor out = pil_resize_host(libero_steps(host_batch(images)), e.size, e.size, e.filter,
                                            options_.pil_order);
  return out.to(images.device());
}

std::vector<torch::Tensor> ImagePreprocessor::encoder_images(const torch::Tensor& batch) const {
  const torch::Tensor prepared = libero_steps(batch);
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < encoders_.size(); ++i) {
    const EncoderInput& e = encoders_[i];
    // Shared by consecutive encoders with the same resize (all have one size).
    out.push_back(i > 0 && e.filter == encoders_[i - 1].filter
                      ? out.back()
                      : pil_resize_host(prepared, e.size, e.size, e.filter, options_.pil_order));
  }
  return out;
}

void ImagePreprocessor::process(const torch::Tensor& batch, float* out) const {
  const int64_t plane = size_ * size_;
  const std::vector<torch::Tensor> images = encoder_images(batch);
  for (size_t i = 0; i < encoders_.size(); ++i) {
    const Normalization& norm = encoders_[i].normalization;
    const torch::Tensor& resized = images[i];
    // torchvision: to_tensor (u8 -> float / 255), then normalize: (x - mean) / std, in float32.
    const uint8_t* src = resized.data_ptr<uint8_t>();
    for (int64_t n = 0; n < resized.size(0); ++n) {
      float* dst = out + (n * channels() + 3 * static_cast<int64_t>(i)) * plane;
      const uint8_t* image = src + n * plane * 3;
      for (int64_t c = 0; c < 3; ++c) {
        const float mean = norm.mean[static_cast<size_t>(c)], std = norm.std[static_cast<size_t>(c)];
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