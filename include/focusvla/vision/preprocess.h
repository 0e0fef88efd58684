#pragma once
// Camera images -> the 6-channel pixels the vision tower reads (SPEC section 3).
//
//   uint8 RGB image (H, W, 3)
//   -> [optional, LIBERO eval pipeline] TF Lanczos-3 antialiased resize to 224 when not 224x224
//   -> [optional, LIBERO eval pipeline] TF center crop of `crop_scale` area, bilinear, back to 224
//   -> per backbone: Pillow bicubic resize to the backbone's size (identity at that size),
//      x = u8 / 255, (x - mean) / std with the checkpoint's statistics
//   -> (6, 224, 224) float: channels 0-2 for DINOv2, 3-5 for SigLIP
//
// Each step reproduces the reference's arithmetic, not just its idea: the Pillow resize is the
// fixed-point two-pass convolution of Pillow's ImagingResample (22-bit coefficients, rounding to
// uint8 between the passes, the passes in Pillow's order), bit for bit; the TF steps transcribe
// TensorFlow's ScaleAndTranslate (lanczos3, antialias) and CropAndResize (bilinear) kernels in
// float32, with TF's `convert_image_dtype` conversions (u8 * float(1/255) in, saturate_cast of
// x * 255.5 out). Not reproduced: the LIBERO pipeline's JPEG encode/decode round trip before its
// Lanczos resize (a lossy codec step that only applies to images that are not already 224x224).
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

// ----- The resamplers. `images` is uint8 (H, W, 3) or (N, H, W, 3) on any device; the result has
// the same rank and device (the arithmetic runs on the host).

enum class PilFilter { bilinear, bicubic, lanczos };
// Parses a Pillow / preprocessor_config interpolation name ("bicubic", "bilinear", "lanczos");
// throws Error otherwise.
PilFilter parse_pil_filter(const std::string& name);

// Which of Pillow's two passes runs first (they round to uint8 in between, so the order shows by
// up to a few levels on detailed images resized by different factors per axis).
enum class PilPassOrder {
  pillow13,          // Pillow 13: vertical first when it removes > 2x the columns removed
  horizontal_first,  // Pillow <= 12
};

// Pillow's `Image.resize((width, height), filter)` of an 8-bit image. Returns `images` itself when
// the size is unchanged (Pillow copies).
torch::Tensor pil_resize(const torch::Tensor& images, int64_t height, int64_t width,
                         PilFilter filter = PilFilter::bicubic, PilPassOrder order = PilPassOrder::pillow13);

// The LIBERO / RLDS resize: `tf.image.resize(img, (height, width), method="lanczos3",
// antialias=True)`, then `tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)`.
torch::Tensor tf_resize_lanczos3(const torch::Tensor& images, int64_t height, int64_t width);

// OpenVLA's `center_crop_image` / `crop_and_resize`: the centered box of side sqrt(crop_scale)
// (relative), resized to (height, width) with `tf.image.crop_and_resize` (bilinear) on
// x = u8 / 255, clipped to [0, 1] and converted back with `convert_image_dtype(saturate=True)`.
torch::Tensor tf_center_crop(const torch::Tensor& images, double crop_scale = 0.9, int64_t height = 224,
                             int64_t width = 224);

// ----- The full pipeline.

struct PreprocessOptions {
  // SPEC 3.1, as VLA-Adapter's LIBERO evaluation: Lanczos-3 resize to the model size when an image
  // is not already that size (without the JPEG round trip, see above) ...
  bool libero_resize = false;
  // ... and the center crop of `crop_scale` area that released LIBERO models expect.
  bool center_crop = false;
  double crop_scale = 0.9;
  // Pillow's pass order (see PilPassOrder): the Pillow 13 that tests compare with, or Pillow <= 12.
  PilPassOrder pil_order = PilPassOrder::pillow13;
  // Where the result of host inputs (ImageView, cv::Mat) goes; for tensors, their own device.
  torch::Device device = torch::kCPU;
};

class ImagePreprocessor {
 public:
  // Normalization and sizes from preprocessor_config.json (see io::PreprocessorConfig: the
  // `tvf_normalize_params` when present). Needs exactly two backbones (DINOv2, SigLIP).
  explicit ImagePreprocessor(const io::PreprocessorConfig& config, PreprocessOptions options = {});

  // One image (H, W, 3) or N images of one size (N, H, W, 3), uint8
  // -> (N, 6, S, S) float32 on the tensor's device.
  torch::Tensor operator()(const torch::Tensor& images) const;
  // N camera images, sizes may differ -> (N, 6, S, S).
  torch::Tensor operator()(const std::vector<torch::Tensor>& images) const;
  torch::Tensor operator()(const ImageView& image) const;
  torch::Tensor operator()(const std::vector<ImageView>& images) const;
  // B samples of N cameras each -> (B, N, 6, S, S); every sample must have the same camera count.
  torch::Tensor batch(const std::vector<std::vector<torch::Tensor>>& samples) const;
#ifdef FOCUSVLA_WITH_OPENCV
  // CV_8UC3 images in RGB order (convert OpenCV's BGR with cv::cvtColor(..., cv::COLOR_BGR2RGB)).
  torch::Tensor operator()(const cv::Mat& image) const;
  torch::Tensor operator()(const std::vector<cv::Mat>& images) const;
#endif

  // Writes the result into a caller's float32 buffer `out` of shape (N, 6, S, S), on any device
  // (e.g. one allocated once for a fixed camera count).
  void into(const std::vector<torch::Tensor>& images, const torch::Tensor& out) const;

  // The pipeline in two halves, for callers that keep buffers (the policy's GPU path):
  //   stage:     N camera images -> `out`, a contiguous uint8 host tensor (N, 2, S, S, 3) (e.g.
  //              pinned memory): the LIBERO steps and each backbone's Pillow resize, on the host;
  //   normalize: staged uint8 (..., 2, S, S, 3) on any device -> (..., 6, S, S) in `dtype`:
  //              x / 255, (x - mean) / std in float32 on that device, then the cast.
  // normalize(stage(images)) equals operator()(images) bit for bit (true IEEE division on both
  // sides). normalize launches device work only, once the statistics are on that device (they
  // are made for PreprocessOptions::device at construction), so it can run in a CUDA graph.
  void stage(const std::vector<torch::Tensor>& images, const torch::Tensor& out) const;
  torch::Tensor normalize(const torch::Tensor& staged, torch::ScalarType dtype = torch::kFloat32) const;

  // The uint8 image each backbone sees before normalization: (N, S, S, 3) for backbone 0 or 1.
  torch::Tensor backbone_input(const torch::Tensor& images, size_t backbone) const;

  int64_t image_size() const { return size_; }
  int64_t channels() const { return 3 * static_cast<int64_t>(backbones_.size()); }
  const PreprocessOptions& options() const { return options_; }

 private:
  struct Backbone {
    int64_t size;
    PilFilter filter;
    std::array<float, 3> mean;
    std::array<float, 3> std;
  };
  // The LIBERO steps on a contiguous host batch (N, H, W, 3) uint8.
  torch::Tensor libero_steps(const torch::Tensor& batch) const;
  // A contiguous host batch (N, H, W, 3) uint8 -> the uint8 (N, S, S, 3) each backbone sees.
  std::vector<torch::Tensor> backbone_images(const torch::Tensor& batch) const;
  // A contiguous host batch (N, H, W, 3) uint8 -> normalized into `out`, (N, 6, S, S) float32.
  void process(const torch::Tensor& batch, float* out) const;

  // mean, std (2, 1, 1, 3) and 255 (1) as float32 tensors on `device`.
  struct Statistics {
    torch::Tensor mean, std, scale;
  };
  Statistics statistics(torch::Device device) const;

  std::vector<Backbone> backbones_;
  int64_t size_ = 224;
  PreprocessOptions options_;
  Statistics device_statistics_;  // on options_.device
};

// Checks one uint8 image tensor (H, W, C) or batch (N, H, W, C): dtype, rank, 3 channels, non-empty.
// Throws Error naming `what` and the problem.
void check_images(const torch::Tensor& images, const std::string& what);
// A tensor owning a copy of `image` (H, W, C) on `device`, after the same checks.
torch::Tensor to_tensor(const ImageView& image, torch::Device device = torch::kCPU);
#ifdef FOCUSVLA_WITH_OPENCV
torch::Tensor to_tensor(const cv::Mat& image, torch::Device device = torch::kCPU);
#endif

}  // namespace focusvla::vision
