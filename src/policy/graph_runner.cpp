#include "focusvla/policy/graph_runner.h"

#include <algorithm>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"

namespace focusvla::policy {

struct GraphRunner::Shape {
  ShapeKey key;
  ShapeBuffers buffers;
  std::unique_ptr<StageTimer> timer;  // its CUDA events are made on the first call, then reused
  std::unique_ptr<CudaGraph> graph;
  bool graph_failed = false;
  int64_t runs = 0;
  uint64_t last_use = 0;
};

GraphRunner::GraphRunner(Options options) : options_(options) {}
GraphRunner::~GraphRunner() = default;

ShapeBuffers& GraphRunner::buffers(const ShapeKey& key, const Allocate& allocate) {
  ++calls_;
  for (auto& s : shapes_) {
    if (s->key == key) {
      s->last_use = calls_;
      return s->buffers;
    }
  }
  if (static_cast<int64_t>(shapes_.size()) >= std::max(1, options_.max_shapes)) {
    const auto lru = std::min_element(shapes_.begin(), shapes_.end(),
                                      [](const auto& a, const auto& b) { return a->last_use < b->last_use; });
    shapes_.erase(lru);
    cached_ = static_cast<int64_t>(shapes_.size());
  }
  auto s = std::make_unique<Shape>();
  s->key = key;
  s->last_use = calls_;
  allocate(key, s->buffers);
  s->timer = std::make_unique<StageTimer>(options_.device);
  shapes_.push_back(std::move(s));
  cached_ = static_cast<int64_t>(shapes_.size());
  return shapes_.back()->buffers;
}

GraphRunner::Shape& GraphRunner::find(const ShapeKey& key) {
  for (auto& s : shapes_)
    if (s->key == key) return *s;
  throw Error("GraphRunner::run: no buffers for this shape (call buffers() first)");
}

GraphRunner::Result GraphRunner::run(const ShapeKey& key, const Forward& forward, bool eager) {
  Shape& s = find(key);
  ShapeBuffers& b = s.buffers;
  const bool cuda = options_.device.is_cuda();
  StageTimer& timer = *s.timer;
  timer.restart();
  timer.mark();
  bool replayed = false;
  // Eager on the first call of a shape (and always on the CPU), captured on the second,
  // replayed from then on.
  if (cuda && options_.cuda_graphs && !eager && !s.graph_failed && s.runs >= 1) {
    if (!s.graph) {
      auto graph = std::make_unique<CudaGraph>(options_.device);
      try {
        graph->capture([&] { forward(b, nullptr); });
        s.graph = std::move(graph);
      } catch (const Error& e) {
        s.graph_failed = true;
        log_warn(std::string("act: CUDA graph capture failed for this input shape, running it eagerly: ") + e.what());
      }
    }
    if (s.graph) {
      s.graph->replay();
      replayed = true;
    }
  }
  if (!replayed) forward(b, &timer);
  ++s.runs;
  if (cuda) b.output_host.copy_(b.output, /*non_blocking=*/true);
  timer.mark();
  synchronize_stream(options_.device);  // the one wait for the device
  last_execution_ = !cuda ? "cpu" : replayed ? "cuda-graph" : "cuda-eager";

  Result r;
  r.stage_ms = timer.intervals_ms();
  r.replayed = replayed;
  for (const double ms : r.stage_ms) r.device_ms += ms;
  return r;
}

}  // namespace focusvla::policy
