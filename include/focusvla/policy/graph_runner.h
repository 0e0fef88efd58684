#pragma once
// How one act runs on the device: per input shape, buffers made once and reused (fixed addresses
// for a CUDA graph, no per-call allocation of activations); on CUDA the first call of a shape
// runs eagerly, the second is captured as a CUDA graph, later calls replay it; stage times from
// CUDA events (host clocks on the CPU); one wait per call, for the actions coming back.

#include <torch/torch.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "focusvla/core/cuda_graph.h"
#include "focusvla/llm/qwen2.h"
#include "focusvla/policy/action_head.h"

namespace focusvla::policy {

// What makes two calls the same shape: batch size, cameras, each sample's prompt length.
struct ShapeKey {
  int64_t batch = 0, cameras = 0;
  std::vector<int64_t> prompt_lengths;
  bool operator==(const ShapeKey& o) const {
    return batch == o.batch && cameras == o.cameras && prompt_lengths == o.prompt_lengths;
  }
};

// The buffers of one input shape. The host ones are pinned with CUDA; on the CPU the device
// twins are the host buffers themselves.
struct ShapeBuffers {
  std::vector<int64_t> lengths;         // full sequence length of each sample
  torch::Tensor staging, images;        // uint8 images, preprocessor->staging_shape(B, N): host, device
  torch::Tensor ids_host, ids;          // (B, longest prompt) int64 token ids, right-padded with 0
  torch::Tensor proprio_host, proprio;  // (B, P) float32, normalized
  llm::AttentionMask mask;              // padding mask of a right-padded batch (causal only otherwise)
  torch::Tensor hidden;                 // (layers + 1, B, L, D); hidden[0] holds the input embeddings
  torch::Tensor output, output_host;    // (B, chunk, action_dim) float32: device, host
  HeadDiagnostics diagnostics;
};

class GraphRunner {
 public:
  struct Options {
    torch::Device device = torch::kCPU;
    bool cuda_graphs = true;  // ignored on the CPU
    int max_shapes = 8;       // buffers (and graphs) kept; the least recently used goes first
  };
  // Fills the buffers of a new shape.
  using Allocate = std::function<void(const ShapeKey&, ShapeBuffers&)>;
  // The device half of one call: device work only (capturable), from the staged inputs to
  // buffers.output; calls timer->mark() between stages when a timer is given.
  using Forward = std::function<void(ShapeBuffers&, StageTimer* timer)>;

  struct Result {
    std::vector<double> stage_ms;  // one interval per stage; empty stages when replayed
    double device_ms = 0;          // their sum
    bool replayed = false;
  };

  explicit GraphRunner(Options options);
  ~GraphRunner();

  // The buffers of `key`, allocated on its first use (evicting the least recently used shape).
  ShapeBuffers& buffers(const ShapeKey& key, const Allocate& allocate);
  // Runs `forward` on the buffers of `key` (buffers() first): eager, captured or replayed (unless
  // `eager`: taps read host-side values, which a graph cannot), then copies the output to the
  // host and waits for it.
  Result run(const ShapeKey& key, const Forward& forward, bool eager = false);
  // How the last run went: "none", "cpu", "cuda-eager" or "cuda-graph".
  const std::string& last_execution() const { return last_execution_; }
  // Shapes whose buffers (and graphs) are kept now; any thread, also while a call runs.
  int64_t cached_shapes() const { return cached_.load(); }

 private:
  struct Shape;
  Shape& find(const ShapeKey& key);

  Options options_;
  std::vector<std::unique_ptr<Shape>> shapes_;
  uint64_t calls_ = 0;
  std::atomic<int64_t> cached_{0};  // shapes_.size(), for readers without the policy's lock
  std::string last_execution_ = "none";
};

}  // namespace focusvla::policy
