#pragma once
// Camera images -> the pixels the vision tower reads (SPEC section 3): 3 channels per encoder of
// the tower, in the tower's encoder order (6 for the released DINOv2 + SigLIP backbone).
//
//   uint8 RGB image (H, W, 3)
//   -> [optional, LIBERO eval pipeline] when not 224x224: TF's JPEG encode / decode round trip
//      (jpeg.h; on by default with the resize), then TF's Lanczos-3 antialiased resize to 224
//   -> [optional, LIBERO eval pipeline] TF center crop of `crop_scale` area, bilinear, back to 224
//   -> per encoder: Pillow bicubic resize to the encoder's size (identity at that size),
//      x = u8 / 255, (x - mean) / std with the checkpoint's statistics for that encoder
//   -> (3 * encoders, 224, 224) float: channels 0-2 for DINOv2, 3-5 for SigLIP
//
// Each step reproduces the reference's arithmetic, not just its idea (resample.h): the Pillow resize is the
// fixed-point two-pass convolution of Pillow's ImagingResample (22-bit coefficients, rounding to
// uint8 between the passes, the passes in Pillow's order), bit for bit; the TF steps transcribe
// TensorFlow's ScaleAndTranslate (lanczos3, antialias) and CropAndResize (bilinear) kernels in
// float32, with TF's `convert_image_dtype` conversions (u8 * float(1/255) in, saturate_cast of
// x * 255.5 out); the JPEG round trip runs libjpeg with TensorFlow's settings, byte for byte (jpeg.h).
// Images already 224x224 skip the round trip and the resize, as in the reference.
//
// The uint8 stages are Pillow's and TF's scalar arithmetic, run on the host (single-threaded
// loops: a camera image takes milliseconds, and small parallel tensor ops cost more than they
// save); the float result is placed on the input tensor's device, or PreprocessOptions::device
// for host inputs (raw buffers, cv::Mat). Images in one call may differ in size.

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#ifdef FOCUSVLA_WITH_OPENCV
#include <opencv2/core.hpp>
#endif

#include "focusvla/io/checkpoint_config.h"
#include "focusvla/vision/image_encoder.h"
#include "focusvla/vision/resample.h"

namespace focusvla::vision {

// A borrowed uint8 image in row-major interleaved layout (RGB): `height` rows of `width * channels`
// bytes, `row_stride` bytes apart (0: packed rows).
struct ImageView {
  const uint8_t* data = nullptr;
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 3;
  int64_t row_stride = 0;
};

// ----- The full pipeline.

struct PreprocessOptions {
  // SPEC 3.1, as VLA-Adapter's LIBERO evaluation: Lanczos-3 resize to the model size when an image
  // is not already that size ...
  bool libero_resize = false;
  // ... preceded, as in the reference's `resize_image_for_policy`, by TF's JPEG encode / decode
  // round trip (jpeg.h); off for policies whose training frames were never JPEG-compressed.
  // Only with libero_resize, and only for images that are resized.
  bool jpeg_roundtrip = true;
  // ... and the center crop of `crop_scale` area that released LIBERO models expect.
  bool center_crop = false;
  double crop_scale = 0.9;
  // Pillow's pass order (see PilPassOrder): the Pillow 13 that tests compare with, or Pillow <= 12.
  PilPassOrder pil_order = PilPassOrder::pillow13;
  // Where the result of host inputs (ImageView, cv::Mat) goes; for tensors, their own device.
  torch::Device device = torch::kCPU;
};

// What one encoder of the tower reads: its image size, Pillow filter and normalization.
struct EncoderInput {
  int64_t size = 224;
  PilFilter filter = PilFilter::bicubic;
  Normalization normalization;

  // One per backbone of preprocessor_config.json, in order (the `tvf_normalize_params` when
  // present: what the reference applies). Throws Error for an unsupported entry.
  static std::vector<EncoderInput> from_config(const io::PreprocessorConfig& config);
  // From an encoder itself: its size and the normalization it was trained with, bicubic.
  static EncoderInput of(const ImageEncoder& encoder);
};

// Below, C = 3 * num_encoders() channels (6 for the released models) and S = image_size().
class ImagePreprocessor {
 public:
  // Normalization and sizes from preprocessor_config.json (see io::PreprocessorConfig: the
  // `tvf_normalize_params` when present): one encoder per backbone entry (one or more).
  explicit ImagePreprocessor(const io::PreprocessorConfig& config, PreprocessOptions options = {});
  // One or more encoders, in the tower's order; all of one input size.
  explicit ImagePreprocessor(std::vector<EncoderInput> encoders, PreprocessOptions options = {});

  // One image (H, W, 3) or N images of one size (N, H, W, 3), uint8
  // -> (N, C, S, S) float32 on the tensor's device.
  torch::Tensor operator()(const torch::Tensor& images) const;
  // N camera images, sizes may differ -> (N, C, S, S).
  torch::Tensor operator()(const std::vector<torch::Tensor>& images) const;
  torch::Tensor operator()(const ImageView& image) const;
  torch::Tensor operator()(const std::vector<ImageView>& images) const;
  // B samples of N cameras each -> (B, N, C, S, S); every sample must have the same camera count.
  torch::Tensor batch(const std::vector<std::vector<torch::Tensor>>& samples) const;
#ifdef FOCUSVLA_WITH_OPENCV
  // CV_8UC3 images in RGB order (convert OpenCV's BGR with cv::cvtColor(..., cv::COLOR_BGR2RGB)).
  torch::Tensor operator()(const cv::Mat& image) const;
  torch::Tensor operator()(const std::vector<cv::Mat>& images) const;
#endif

  // Writes the result into a caller's float32 buffer `out` of shape (N, C, S, S), on any device
  // (e.g. one allocated once for a fixed camera count).
  void into(const std::vector<torch::Tensor>& images, const torch::Tensor& out) const;

  // The pipeline in two halves, for callers that keep buffers (the policy's GPU path):
  //   stage:     N camera images -> `out`, a contiguous uint8 host tensor (N, E, S, S, 3), E =
  //              num_encoders() (e.g. pinned memory, shaped by staging_shape): the LIBERO steps
  //              and each encoder's Pillow resize, on the host;
  //   normalize: staged uint8 (..., E, S, S, 3) on any device -> (..., C, S, S) in `dtype`:
  //              x / 255, (x - mean) / std in float32 on that device, then the cast.
  // normalize(stage(images)) equals operator()(images) bit for bit (true IEEE division on both
  // sides). normalize launches device work only, once the statistics are on that device (they
  // are made for PreprocessOptions::device at construction), so it can run in a CUDA graph.
  void stage(const std::vector<torch::Tensor>& images, const torch::Tensor& out) const;
  torch::Tensor normalize(const torch::Tensor& staged, torch::ScalarType dtype = torch::kFloat32) const;
  // The staging buffer of B samples of `cameras` images: {B, cameras, E, S, S, 3} (stage writes
  // sample b into out[b]).
  std::vector<int64_t> staging_shape(int64_t batch, int64_t cameras) const;

  // The uint8 image encoder `index` sees before normalization: (N, S, S, 3).
  torch::Tensor encoder_input(const torch::Tensor& images, size_t index) const;

  int64_t image_size() const { return size_; }
  int64_t num_encoders() const { return static_cast<int64_t>(encoders_.size()); }
  int64_t channels() const { return 3 * num_encoders(); }
  const std::vector<EncoderInput>& encoders() const { return encoders_; }
  const PreprocessOptions& options() const { return options_; }

 private:
  // The LIBERO steps on a contiguous host batch (N, H, W, 3) uint8.
  torch::Tensor libero_steps(const torch::Tensor& batch) const;
  // A contiguous host batch (N, H, W, 3) uint8 -> the uint8 (N, S, S, 3) each encoder sees.
  std::vector<torch::Tensor> encoder_images(const torch::Tensor& batch) const;
  // A contiguous host batch (N, H, W, 3) uint8 -> normalized into `out`, (N, C, S, S) float32.
  void process(const torch::Tensor& batch, float* out) const;

  // mean, std (E, 1, 1, 3) and 255 (1) as float32 tensors on `device`.
  struct Statistics {
    torch::Tensor mean, std, scale;
  };
  Statistics statistics(torch::Device device) const;

  std::vector<EncoderInput> encoders_;
  int64_t size_ = 224;
  PreprocessOptions options_;
  Statistics device_statistics_;  // on options_.device
};

// A tensor owning a copy of `image` (H, W, C) on `device`, after the same checks.
torch::Tensor to_tensor(const ImageView& image, torch::Device device = torch::kCPU);
#ifdef FOCUSVLA_WITH_OPENCV
torch::Tensor to_tensor(const cv::Mat& image, torch::Device device = torch::kCPU);
#endif

}  // namespace focusvla::vision
