#pragma once
// Internal to src/vision: the host-side pieces the resamplers (resample_pillow.cpp,
// resample_tf.cpp) and the pipeline (preprocess.cpp) share. Inputs are contiguous host batches
// (N, H, W, 3) uint8; the public, checked entry points are in focusvla/vision/resample.h.

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/vision/resample.h"

namespace focusvla::vision::detail {

inline std::string shape_of(const torch::Tensor& t) { return c10::str(t.sizes()); }

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

// (H, W, 3) -> (1, H, W, 3) contiguous on the CPU; (N, H, W, 3) likewise.
inline torch::Tensor host_batch(const torch::Tensor& images) {
  return (images.dim() == 3 ? images.unsqueeze(0) : images).to(torch::kCPU).contiguous();
}
// The result with the input's rank and device.
inline torch::Tensor like_input(const torch::Tensor& out, const torch::Tensor& images) {
  return (images.dim() == 3 ? out.squeeze(0) : out).to(images.device());
}

inline void check_size(int64_t height, int64_t width, const std::string& what) {
  check(height > 0 && width > 0, what,
        "output size must be positive, got " + std::to_string(height) + "x" + std::to_string(width));
}

// Pillow's resize (both passes, in `order`) of a host batch.
torch::Tensor pil_resize_host(const torch::Tensor& batch, int64_t height, int64_t width, PilFilter filter,
                              PilPassOrder order);
// TF's antialiased Lanczos-3 resize of a host batch, rounded back to uint8.
torch::Tensor tf_resize_host(const torch::Tensor& batch, int64_t height, int64_t width);
// OpenVLA's TF center crop of a host batch, resized to (height, width).
torch::Tensor tf_crop_host(const torch::Tensor& batch, double crop_scale, int64_t height, int64_t width);

}  // namespace focusvla::vision::detail
