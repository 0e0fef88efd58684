#include "focusvla/core/cuda_graph.h"

#include <chrono>
#include <map>
#include <mutex>
#include <string>

#include "focusvla/core/error.h"

#ifdef FOCUSVLA_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace focusvla {
namespace {

using Clock = std::chrono::steady_clock;

#ifdef FOCUSVLA_WITH_CUDA
// One graph memory pool per device, shared by every CudaGraph (see the header).
at::cuda::MempoolId_t shared_pool(c10::DeviceIndex device) {
  static std::mutex mutex;
  static std::map<c10::DeviceIndex, at::cuda::MempoolId_t> pools;
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = pools.find(device);
  if (it == pools.end()) it = pools.emplace(device, at::cuda::graph_pool_handle()).first;
  return it->second;
}
#endif

}  // namespace

// ---------------------------------------------------------------------------------------------
// CudaGraph

struct CudaGraph::State {
  torch::Device device;
#ifdef FOCUSVLA_WITH_CUDA
  std::unique_ptr<at::cuda::CUDAGraph> graph;
#endif
};

CudaGraph::CudaGraph(torch::Device device) : state_(new State{device}) {}
CudaGraph::~CudaGraph() = default;

#ifdef FOCUSVLA_WITH_CUDA

bool cuda_graphs_compiled() { return true; }

void CudaGraph::capture(const std::function<void()>& work) {
  const torch::Device device = state_->device;
  check(device.is_cuda(), "CudaGraph", "device " + device.str() + " is not a CUDA device");
  check(torch::cuda::is_available(), "CudaGraph", "CUDA is not available");
  const c10::cuda::CUDAGuard device_guard(device);
  const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  at::cuda::CUDAEvent inputs_ready;
  inputs_ready.record(current);
  inputs_ready.block(side);
  auto graph = std::make_unique<at::cuda::CUDAGraph>();
  {
    const c10::cuda::CUDAStreamGuard stream_guard(side);
    try {
      // Thread-local mode: other threads of the application may keep using CUDA meanwhile.
      graph->capture_begin(shared_pool(side.device_index()), cudaStreamCaptureModeThreadLocal);
      work();
      graph->capture_end();
    } catch (const std::exception& e) {
      // End the capture (capture_end also gives the allocator back its normal pools), then clear
      // CUDA's last error so that the eager fallback starts clean.
      try {
        graph->capture_end();
      } catch (const std::exception&) {
      }
      cudaGraph_t dangling = nullptr;
      cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
      if (cudaStreamIsCapturing(side.stream(), &status) == cudaSuccess && status != cudaStreamCaptureStatusNone &&
          cudaStreamEndCapture(side.stream(), &dangling) == cudaSuccess && dangling != nullptr)
        cudaGraphDestroy(dangling);
      (void)cudaGetLastError();
      throw Error(std::string("CudaGraph: capture failed: ") + e.what());
    }
  }
  at::cuda::CUDAEvent captured;
  captured.record(side);
  captured.block(current);
  state_->graph = std::move(graph);
}

void CudaGraph::replay() {
  check(captured(), "CudaGraph", "replay() before a successful capture()");
  const c10::cuda::CUDAGuard device_guard(state_->device);
  state_->graph->replay();
}

bool CudaGraph::captured() const { return state_->graph != nullptr; }

void synchronize_stream(torch::Device device) {
  if (device.is_cuda()) c10::cuda::getCurrentCUDAStream(device.index()).synchronize();
}

#else  // no CUDA in this build

bool cuda_graphs_compiled() { return false; }

void CudaGraph::capture(const std::function<void()>&) {
  throw Error("CudaGraph: this build of focusvla has no CUDA (LibTorch without CUDA)");
}
void CudaGraph::replay() { throw Error("CudaGraph: replay() before a successful capture()"); }
bool CudaGraph::captured() const { return false; }
void synchronize_stream(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

#endif

// ---------------------------------------------------------------------------------------------
// StageTimer

struct StageTimer::State {
  torch::Device device;
  std::vector<Clock::time_point> host;
#ifdef FOCUSVLA_WITH_CUDA
  std::vector<std::unique_ptr<at::cuda::CUDAEvent>> events;  // events[0, marks) hold this call's marks
  size_t marks = 0;
#endif
};

StageTimer::StageTimer(torch::Device device) : state_(new State{device, {}}) {}
StageTimer::~StageTimer() = default;

void StageTimer::mark() {
#ifdef FOCUSVLA_WITH_CUDA
  if (state_->device.is_cuda()) {
    if (state_->marks == state_->events.size())
      state_->events.push_back(std::make_unique<at::cuda::CUDAEvent>(cudaEventDefault));  // timing enabled
    state_->events[state_->marks++]->record(c10::cuda::getCurrentCUDAStream(state_->device.index()));
    return;
  }
#endif
  state_->host.push_back(Clock::now());
}

void StageTimer::restart() {
  state_->host.clear();
#ifdef FOCUSVLA_WITH_CUDA
  state_->marks = 0;
#endif
}

std::vector<double> StageTimer::intervals_ms() const {
  std::vector<double> out;
#ifdef FOCUSVLA_WITH_CUDA
  if (state_->device.is_cuda()) {
    for (size_t i = 1; i < state_->marks; ++i)
      out.push_back(state_->events[i - 1]->elapsed_time(*state_->events[i]));
    return out;
  }
#endif
  for (size_t i = 1; i < state_->host.size(); ++i)
    out.push_back(std::chrono::duration<double, std::milli>(state_->host[i] - state_->host[i - 1]).count());
  return out;
}

}  // namespace focusvla
