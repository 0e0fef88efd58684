#include "focusvla/policy/batch_buckets.h"

#include <algorithm>
#include <string>

#include "focusvla/core/error.h"

namespace focusvla::policy {

std::vector<int64_t> resolve_batch_buckets(const std::vector<int64_t>& requested, const torch::Device& device,
                                           bool cuda_graphs) {
  for (const int64_t b : requested)
    check(b >= 1, "PolicyOptions::batch_buckets", "entry " + std::to_string(b) + " is not a batch size (>= 1)");
  std::vector<int64_t> buckets = requested;
  if (buckets.empty() && device.is_cuda() && cuda_graphs) buckets = {1, 2, 4, 8};
  std::sort(buckets.begin(), buckets.end());
  buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
  return buckets;
}

int64_t padded_batch(const std::vector<int64_t>& buckets, int64_t rows) {
  const auto bucket = std::lower_bound(buckets.begin(), buckets.end(), rows);
  return bucket == buckets.end() ? rows : *bucket;
}

}  // namespace focusvla::policy
