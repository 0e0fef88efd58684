#pragma once
// The CUDA pieces of the GPU path, behind a header without CUDA types: the library builds, and
// every caller's logic runs, against a CPU-only LibTorch too. CMake defines FOCUSVLA_WITH_CUDA
// when LibTorch has CUDA; without it (or without a GPU) capture() throws and callers run eagerly.
//
//   CudaGraph graph(device);
//   graph.capture([&] { forward(static_inputs, static_outputs); });  // records, runs nothing
//   graph.replay();                                                  // runs it on the current stream
//
// Capture runs on a side stream (CUDA forbids capturing the legacy default stream) that first
// waits for the current one; tensors allocated during capture come from a memory pool shared by
// every graph of the process's CudaGraph objects, which is safe because the policy replays one
// graph at a time and copies its outputs out before the next replay.

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <vector>

namespace focusvla {

// True when this build has the CUDA implementation (LibTorch with CUDA).
bool cuda_graphs_compiled();

class CudaGraph {
 public:
  explicit CudaGraph(torch::Device device);
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Records the kernels `work` launches. Throws Error when this is not a CUDA device or build,
  // or when capture fails (an op that synchronizes or copies from pageable host memory, ...);
  // the stream is usable afterwards and nothing is kept.
  void capture(const std::function<void()>& work);
  // Launches the recorded work on the current stream. Throws Error when nothing was captured.
  void replay();
  bool captured() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Blocks the host until the current stream of `device` has finished its work (no-op on the CPU).
void synchronize_stream(torch::Device device);

// Time between marks of one call: host clocks on the CPU (where work is synchronous), CUDA events
// on the current stream on a GPU (no synchronization; read intervals after the stream has been
// synchronized, e.g. after the result was copied back). One timer serves many calls: restart()
// forgets the marks and keeps the events, so a call creates none once the first has run.
class StageTimer {
 public:
  explicit StageTimer(torch::Device device);
  ~StageTimer();
  StageTimer(const StageTimer&) = delete;
  StageTimer& operator=(const StageTimer&) = delete;
  void mark();
  void restart();
  // Milliseconds from each mark to the next (marks - 1 values).
  std::vector<double> intervals_ms() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace focusvla
