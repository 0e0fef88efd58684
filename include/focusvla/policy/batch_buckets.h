#pragma once
// The batch sizes a call is padded up to (PolicyOptions::batch_buckets): with CUDA graphs keyed by
// input shape, traffic of mixed batch sizes would capture a graph per size; padded to a few
// buckets it replays a few. Rows added by the padding repeat the call's last observation and are
// dropped from the result.

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace focusvla::policy {

// The buckets a policy pads to: `requested` sorted, duplicates dropped (Error naming
// PolicyOptions::batch_buckets for an entry < 1); when empty, {1, 2, 4, 8} on CUDA with CUDA
// graphs and none elsewhere (padding costs compute, and without graphs it saves nothing).
std::vector<int64_t> resolve_batch_buckets(const std::vector<int64_t>& requested, const torch::Device& device,
                                           bool cuda_graphs);

// The batch size a call of `rows` observations runs at: the smallest bucket >= rows, or rows when
// no bucket holds it (or there are none).
int64_t padded_batch(const std::vector<int64_t>& buckets, int64_t rows);

}  // namespace focusvla::policy
