// Policy::warm_up: the shapes a server will see, run before its first request (policy.h).

#include <chrono>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "focusvla/policy/policy.h"

namespace focusvla {

double Policy::warm_up(const std::string& instruction, int64_t cameras) const {
  const auto start = std::chrono::steady_clock::now();
  check(cameras >= 0, "warm_up: cameras", std::to_string(cameras) + " is negative");
  if (cameras == 0) {
    check(num_images() > 0, "warm_up: cameras",
          "the camera count of this checkpoint follows each call (config.json has no num_images_in_input): give it");
    cameras = num_images();
  }
  Observation blank;
  const torch::Tensor black = torch::zeros({image_size(), image_size(), 3}, torch::kUInt8);
  blank.images.assign(static_cast<size_t>(cameras), black);
  blank.instruction = instruction;
  blank.proprio.assign(static_cast<size_t>(proprio_dim()), 0.0);
  blank = prepare(std::move(blank));  // a bad instruction or count fails here, before any forward

  std::vector<int64_t> sizes = settings().batch_buckets;
  if (sizes.empty()) sizes = {1};
  if (static_cast<int64_t>(sizes.size()) > options().max_cached_shapes)
    log_warn("warm_up: " + std::to_string(sizes.size()) + " batch buckets, but only " +
             std::to_string(options().max_cached_shapes) + " shapes are cached (max_cached_shapes): the first ones " +
             "are evicted again");
  // On CUDA a shape's first act runs eagerly and its second captures the graph.
  const int passes = options().device.is_cuda() && options().cuda_graphs ? 2 : 1;
  for (const int64_t size : sizes)
    for (int pass = 0; pass < passes; ++pass) (void)act_batch(std::vector<Observation>(static_cast<size_t>(size), blank));
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace focusvla
