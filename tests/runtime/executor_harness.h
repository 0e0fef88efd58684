#pragma once
// The chunk executor tests' scripted policy, simulated clock harness and chunk values
// (test_chunk_executor.cpp, test_chunk_executor_ensemble.cpp): call n of a scripted policy returns
// chunk n + 1, whose row i column j is 100 (n + 1) + i + 0.01 j, so an executed value names its
// chunk and row; background calls wait until the test releases them.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "focusvla/runtime/chunk_executor.h"
#include "test_util.h"

namespace focusvla::runtime {

using Matrix = ActionChunk::Matrix;
using testing::expect_error;

constexpr double kPeriod = 0.05;  // 20 Hz, the default rate

inline Matrix scripted_chunk(int64_t id, int64_t rows = 8, int64_t cols = 7) {
  Matrix m(rows, cols);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) m(i, j) = 100.0 * static_cast<double>(id) + static_cast<double>(i) + 0.01 * j;
  return m;
}

// The value row `row` of chunk `id` puts in column 0.
inline double value(int64_t id, int64_t row) { return 100.0 * static_cast<double>(id) + static_cast<double>(row); }

// The observation of tick `tick`: the tick travels in proprio[0].
inline Observation observation_at(int64_t tick, torch::Tensor image = {}) {
  Observation o;
  o.instruction = "stack the blocks";
  o.proprio = {static_cast<double>(tick)};
  if (image.defined()) o.images.push_back(image);
  return o;
}

// Call n (from 0) waits until the test has released more than n calls, then runs `on_call(n)`
// (which may advance the clock or throw) and returns `make(n)` (default: scripted_chunk(n + 1)).
// It records the observation's tick and the first image's mean, read after the release.
class GatedPolicy {
 public:
  struct State {
    std::mutex mutex;
    std::condition_variable changed;
    int64_t started = 0, released = 0;
    std::vector<int64_t> observation_ticks;
    std::vector<double> image_means;
    std::function<void(int64_t)> on_call;
    std::function<Matrix(int64_t)> make = [](int64_t n) { return scripted_chunk(n + 1); };
  };

  InferFn fn() const {
    auto s = state_;
    return [s](const Observation& o) {
      int64_t n;
      {
        std::unique_lock<std::mutex> lock(s->mutex);
        n = s->started++;
        s->observation_ticks.push_back(o.proprio.empty() ? -1 : static_cast<int64_t>(o.proprio[0]));
        s->changed.notify_all();
        s->changed.wait(lock, [&] { return s->released > n; });
        s->image_means.push_back(o.images.empty() ? -1.0 : o.images[0].to(torch::kFloat64).mean().item<double>());
      }
      if (s->on_call) s->on_call(n);
      return s->make(n);
    };
  }

  void release(int64_t calls = 1) {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->released += calls;
    state_->changed.notify_all();
  }
  void release_all() { release(1 << 30); }

  // Blocks until `calls` calls have started (fails the test after 20 s of wall time).
  void wait_started(int64_t calls) {
    std::unique_lock<std::mutex> lock(state_->mutex);
    const bool ok = state_->changed.wait_for(lock, std::chrono::seconds(20), [&] { return state_->started >= calls; });
    if (!ok) ADD_FAILURE() << "the executor did not start inference call " << calls - 1;
  }

  int64_t started() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->started;
  }
  std::vector<int64_t> observation_ticks() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->observation_ticks;
  }
  std::vector<double> image_means() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->image_means;
  }
  State& state() { return *state_; }

 private:
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

struct Harness {
  std::shared_ptr<SimulatedClock> clock = std::make_shared<SimulatedClock>();
  GatedPolicy policy;

  ExecutorOptions options(ExecutionMode mode) const {
    ExecutorOptions o;
    o.mode = mode;
    o.clock = clock;
    return o;
  }
  // The caller's loop at 20 Hz: tick k starts at k * period (the clock is set before the tick).
  Eigen::VectorXd tick(ChunkExecutor& executor, int64_t k) {
    clock->set(static_cast<double>(k) * kPeriod);
    return executor.tick(observation_at(k));
  }
  // Lets the background call finish at time `seconds` and waits for it (it lands at the next tick).
  void finish_background_call_at(ChunkExecutor& executor, int64_t call, double seconds) {
    policy.wait_started(call + 1);
    clock->set(seconds);
    policy.release();
    ASSERT_TRUE(executor.wait_for_inference(20.0));
  }
};

}  // namespace focusvla::runtime
