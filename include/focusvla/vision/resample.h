#pragma once
// The resamplers of the image pipeline (SPEC section 3), each reproducing the reference's
// arithmetic: Pillow's fixed-point two-pass resize (src/vision/resample_pillow.cpp) and
// TensorFlow's Lanczos-3 ScaleAndTranslate and CropAndResize as the LIBERO pipeline runs them
// (src/vision/resample_tf.cpp). See preprocess.h for the pipeline around them.

#include <torch/torch.h>

#include <cstdint>
#include <string>

namespace focusvla::vision {

// `images` is uint8 (H, W, 3) or (N, H, W, 3) on any device; the result has
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

// Checks one uint8 image tensor (H, W, C) or batch (N, H, W, C): dtype, rank, 3 channels, non-empty.
// Throws Error naming `what` and the problem.
void check_images(const torch::Tensor& images, const std::string& what);

}  // namespace focusvla::vision
