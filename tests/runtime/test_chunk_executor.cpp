// runtime/chunk_executor.h: the three modes and their edges, deterministically. Policies are
// scripted (call n returns chunk n + 1, whose row i column j is 100 (n + 1) + i + 0.01 j, so an
// executed value names its chunk and row), background calls wait until the test releases them,
// and time is a SimulatedClock that the test (or the scripted latency) advances. Expected values
// are derived by hand from the definitions in chunk_executor.h, step by step in the comments; the
// temporal ensemble is also checked against a transcription of ACT's own loop.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <limits>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/runtime/chunk_executor.h"
#include "test_util.h"

namespace focusvla::runtime {
namespace {

using Matrix = ActionChunk::Matrix;
using testing::expect_error;

constexpr double kPeriod = 0.05;  // 20 Hz, the default rate

Matrix scripted_chunk(int64_t id, int64_t rows = 8, int64_t cols = 7) {
  Matrix m(rows, cols);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) m(i, j) = 100.0 * static_cast<double>(id) + static_cast<double>(i) + 0.01 * j;
  return m;
}

// The value row `row` of chunk `id` puts in column 0.
double value(int64_t id, int64_t row) { return 100.0 * static_cast<double>(id) + static_cast<double>(row); }

// The observation of tick `tick`: the tick travels in proprio[0].
Observation observation_at(int64_t tick, torch::Tensor image = {}) {
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

// ---------------------------------------------------------------------------------------------
// Options

TEST(ChunkExecutorOptions, InvalidOptionsAreNamed) {
  auto infer = [](const Observation&) { return scripted_chunk(1); };
  auto with = [&](const std::function<void(ExecutorOptions&)>& edit) {
    ExecutorOptions o;
    edit(o);
    ChunkExecutor executor(infer, o);
  };
  expect_error([&] { with([](ExecutorOptions& o) { o.hz = 0; }); }, {"ExecutorOptions.hz", "positive"});
  expect_error([&] { with([](ExecutorOptions& o) { o.hz = std::nan(""); }); }, {"ExecutorOptions.hz"});
  expect_error([&] { with([](ExecutorOptions& o) { o.threshold = -1; }); }, {"ExecutorOptions.threshold", "-1"});
  expect_error([&] { with([](ExecutorOptions& o) { o.execute_steps = -2; }); }, {"ExecutorOptions.execute_steps"});
  expect_error([&] { with([](ExecutorOptions& o) { o.new_weight = 1.5; }); }, {"ExecutorOptions.new_weight", "[0, 1]"});
  expect_error([&] { with([](ExecutorOptions& o) { o.ensemble_m = INFINITY; }); }, {"ExecutorOptions.ensemble_m"});
  expect_error([&] { with([](ExecutorOptions& o) { o.ensemble_m = -1000; }); },
               {"ExecutorOptions.ensemble_m", "[-10, 10]", "-1000"});
  expect_error([&] { with([](ExecutorOptions& o) { o.ensemble_m = 10.5; }); }, {"ExecutorOptions.ensemble_m", "10.5"});
  for (const double m : {-kMaxEnsembleM, 0.0, kMaxEnsembleM}) with([m](ExecutorOptions& o) { o.ensemble_m = m; });
  expect_error([&] { with([](ExecutorOptions& o) { o.metrics_window = 0; }); }, {"ExecutorOptions.metrics_window"});
  expect_error([] { ChunkExecutor executor(InferFn{}); }, {"ChunkExecutor", "no inference function"});
}

TEST(ChunkExecutorOptions, ModeAndAggregateNames) {
  for (auto mode : {ExecutionMode::kOpenLoop, ExecutionMode::kAsync, ExecutionMode::kEnsemble})
    EXPECT_EQ(parse_mode(mode_name(mode)), mode);
  for (auto aggregate : {Aggregate::kReplace, Aggregate::kWeightedAverage})
    EXPECT_EQ(parse_aggregate(aggregate_name(aggregate)), aggregate);
  EXPECT_EQ(parse_aggregate("weighted-average"), Aggregate::kWeightedAverage);
  expect_error([] { parse_mode("sync"); }, {"mode", "'sync'", "open-loop, async or ensemble"});
  expect_error([] { parse_aggregate("max"); }, {"aggregate", "'max'", "replace or average"});
}

// ---------------------------------------------------------------------------------------------
// Open loop

TEST(ChunkExecutorOpenLoop, ExecutesTheWholeChunkThenInfersAgain) {
  Harness h;
  h.policy.release_all();
  ChunkExecutor executor(h.policy.fn(), h.options(ExecutionMode::kOpenLoop));
  // Tick t executes row t % 8 of the chunk inferred at tick 8 * (t / 8), call t / 8.
  for (int64_t t = 0; t < 20; ++t) {
    const Eigen::VectorXd action = h.tick(executor, t);
    ASSERT_EQ(action.size(), 7);
    EXPECT_DOUBLE_EQ(action[0], value(t / 8 + 1, t % 8)) << "tick " << t;
    EXPECT_DOUBLE_EQ(action[6], value(t / 8 + 1, t % 8) + 0.06);
    const TickReport r = executor.last_tick();
    EXPECT_EQ(r.tick, t);
    EXPECT_EQ(r.inferred_inline, t % 8 == 0) << "tick " << t;
    EXPECT_EQ(r.source_tick, t - t % 8);
    EXPECT_NEAR(r.staleness_ms, 1e3 * kPeriod * static_cast<double>(t % 8), 1e-9);
  }
  EXPECT_EQ(h.policy.observation_ticks(), (std::vector<int64_t>{0, 8, 16}));
  const ExecutorMetrics m = executor.metrics();
  EXPECT_EQ(m.ticks, 20);
  EXPECT_EQ(m.inferences, 3);
  EXPECT_EQ(m.deadline_misses, 0);
  EXPECT_EQ(m.staleness_max_ticks, 7);
  // Ticks 0..19 are rows 0..7, 0..7, 0..3: mean (2 * 28 + 6) / 20 = 3.1 ticks.
  EXPECT_NEAR(m.staleness_mean_ticks, 3.1, 1e-12);
}

TEST(ChunkExecutorOpenLoop, ExecutesTheFirstStepsOnly) {
  Harness h;
  h.policy.release_all();
  ExecutorOptions options = h.options(ExecutionMode::kOpenLoop);
  options.execute_steps = 3;
  ChunkExecutor executor(h.policy.fn(), options);
  for (int64_t t = 0; t < 10; ++t) {
    EXPECT_DOUBLE_EQ(h.tick(executor, t)[0], value(t / 3 + 1, t % 3)) << "tick " << t;
  }
  EXPECT_EQ(h.policy.observation_ticks(), (std::vector<int64_t>{0, 3, 6, 9}));
}

// An inference of 120 ms at 20 Hz blocks the caller for 2.4 periods: 2 deadline misses, and the
// caller's next tick comes late (jitter).
TEST(ChunkExecutorOpenLoop, SlowInlineInferenceMissesPeriods) {
  Harness h;
  h.policy.release_all();
  h.policy.state().on_call = [clock = h.clock](int64_t) { clock->advance(0.12); };
  ChunkExecutor executor(h.policy.fn(), h.options(ExecutionMode::kOpenLoop));
  // The caller ticks at k * period, or at once when the previous tick ended later.
  auto tick_at = [&](int64_t k) {
    h.clock->set(std::max(static_cast<double>(k) * kPeriod, h.clock->now()));
    return executor.tick(observation_at(k));
  };
  tick_at(0);  // 0 -> 0.12 s
  TickReport r = executor.last_tick();
  EXPECT_TRUE(r.inferred_inline);
  EXPECT_EQ(r.deadline_misses, 2);
  EXPECT_NEAR(r.staleness_ms, 120.0, 1e-9);  // observed at 0, executed at 0.12 s
  tick_at(1);  // starts at 0.12 s (late by 70 ms): row 1, observed at 0
  r = executor.last_tick();
  EXPECT_EQ(r.deadline_misses, 0);
  EXPECT_NEAR(r.staleness_ms, 120.0, 1e-9);
  for (int64_t k = 2; k <= 8; ++k) tick_at(k);  // tick 8: the next inference, 2 more misses
  const ExecutorMetrics m = executor.metrics();
  EXPECT_EQ(m.deadline_misses, 4);
  EXPECT_NEAR(m.inference_p50_ms, 120.0, 1e-9);
  // Intervals 0.12 s (jitter 70 ms), 0 (tick 2 at max(0.10, 0.12): 50 ms), 0.03 s (20 ms), then 0.05 s.
  EXPECT_NEAR(m.jitter_max_ms, 70.0, 1e-9);
}

// ---------------------------------------------------------------------------------------------
// Asynchronous

// Threshold 4, chunk 8. Tick 0 infers inline (chunk 1, A). After tick 3 four rows remain: tick 3
// hands its observation to the worker (call 1, B). Ticks 4, 5 execute A4, A5. B lands at tick 6:
// rows 0..2 (ticks 3..5) are stale and dropped; rows 3..7 are for ticks 6..10, of which 6, 7 were
// planned by A (replaced); tick 6 executes B3 and, with B4..B7 left (4), starts call 2.
TEST(ChunkExecutorAsync, FirstChunkInlineThenLatencyAwareReplace) {
  Harness h;
  h.policy.release(1);  // the inline first call
  ChunkExecutor executor(h.policy.fn(), h.options(ExecutionMode::kAsync));

  for (int64_t t = 0; t <= 3; ++t) {
    EXPECT_DOUBLE_EQ(h.tick(executor, t)[0], value(1, t));
    const TickReport r = executor.last_tick();
    EXPECT_EQ(r.inferred_inline, t == 0);
    EXPECT_EQ(r.inference_started, t == 3) << "tick " << t;
    EXPECT_NEAR(r.staleness_ms, 1e3 * kPeriod * static_cast<double>(t), 1e-9);
  }
  EXPECT_TRUE(executor.inference_in_flight());
  h.policy.wait_started(2);  // the worker records the observation when it starts the call
  EXPECT_EQ(h.policy.observation_ticks(), (std::vector<int64_t>{0, 3}));
  EXPECT_DOUBLE_EQ(h.tick(executor, 4)[0], value(1, 4));
  EXPECT_FALSE(executor.last_tick().inference_started);  // one in flight at a time
  EXPECT_DOUBLE_EQ(h.tick(executor, 5)[0], value(1, 5));
  h.finish_background_call_at(executor, 1, 0.27);  // started at 0.15 s: 120 ms

  const Eigen::VectorXd action = h.tick(executor, 6);
  EXPECT_DOUBLE_EQ(action[0], value(2, 3));
  EXPECT_DOUBLE_EQ(action[3], value(2, 3) + 0.03);
  TickReport r = executor.last_tick();
  EXPECT_TRUE(r.chunk_landed);
  EXPECT_EQ(r.landed_from_tick, 3);
  EXPECT_EQ(r.dropped_steps, 3);
  EXPECT_EQ(r.merged_steps, 2);
  EXPECT_EQ(r.source_tick, 3);
  EXPECT_NEAR(r.staleness_ms, 150.0, 1e-9);  // observed at 0.15 s, executed at 0.30 s
  EXPECT_TRUE(r.inference_started);
  h.policy.wait_started(3);
  EXPECT_EQ(h.policy.observation_ticks(), (std::vector<int64_t>{0, 3, 6}));
  for (int64_t t = 7; t <= 10; ++t) EXPECT_DOUBLE_EQ(h.tick(executor, t)[0], value(2, t - 3)) << "tick " << t;

  const ExecutorMetrics m = executor.metrics();
  EXPECT_EQ(m.ticks, 11);
  EXPECT_EQ(m.inferences, 2);
  EXPECT_EQ(m.dropped_steps, 3);
  EXPECT_EQ(m.merged_steps, 2);
  EXPECT_EQ(m.deadline_misses, 0);
  EXPECT_EQ(m.held_ticks, 0);
  // Latencies 0 ms (inline: the clock did not move) and 120 ms; nearest rank: p50 0, p99 120.
  EXPECT_NEAR(m.inference_p50_ms, 0.0, 1e-9);
  EXPECT_NEAR(m.inference_p99_ms, 120.0, 1e-9);
  h.policy.release_all();
}

// As above with kWeightedAverage, new_weight 0.7 (LeRobot's weighted_average: 0.3 old + 0.7 new):
// ticks 6 and 7 were planned by A (rows 6, 7) and B (rows 3, 4); ticks 8..10 only by B.
TEST(ChunkExecutorAsync, WeightedAverageBlendsTheOverlap) {
  Harness h;
  h.policy.release(1);
  ExecutorOptions options = h.options(ExecutionMode::kAsync);
  options.aggregate = Aggregate::kWeightedAverage;
  options.new_weight = 0.7;
  ChunkExecutor executor(h.policy.fn(), options);
  for (int64_t t = 0; t <= 5; ++t) h.tick(executor, t);
  h.finish_background_call_at(executor, 1, 0.27);
  const Eigen::VectorXd at6 = h.tick(executor, 6);
  for (int j = 0; j < 7; ++j) EXPECT_NEAR(at6[j], 0.3 * (106 + 0.01 * j) + 0.7 * (203 + 0.01 * j), 1e-12);
  EXPECT_NEAR(h.tick(executor, 7)[0], 0.3 * 107 + 0.7 * 204, 1e-12);
  EXPECT_DOUBLE_EQ(h.tick(executor, 8)[0], 205);
  EXPECT_EQ(executor.metrics().merged_steps, 2);
  h.policy.release_all();
}

// The next chunk takes longer than the rest of the current one: ticks 8..11 repeat A7 (held, one
// deadline miss each, the action growing stale). B (from tick 3) lands at tick 12, when all its
// rows are for past ticks (12 - 3 = 9 >= 8): dropped whole, tick 12 holds too and starts call 2
// at once. C (from tick 12) lands at tick 13: row 0 stale, rows 1..7 for ticks 13..19.
TEST(ChunkExecutorAsync, InferenceSlowerThanTheChunkHoldsTheLastAction) {
  Harness h;
  h.policy.release(1);
  ChunkExecutor executor(h.policy.fn(), h.options(ExecutionMode::kAsync));
  for (int64_t t = 0; t <= 7; ++t) EXPECT_DOUBLE_EQ(h.tick(executor, t)[0], value(1, t));
  for (int64_t t = 8; t <= 11; ++t) {
    EXPECT_DOUBLE_EQ(h.tick(executor, t)[0], value(1, 7)) << "tick " << t;
    const TickReport r = executor.last_tick();
    EXPECT_TRUE(r.held);
    EXPECT_EQ(r.deadline_misses, 1);
    EXPECT_EQ(r.source_tick, 0);
    EXPECT_NEAR(r.staleness_ms, 1e3 * kPeriod * static_cast<double>(t), 1e-9);
  }
  h.finish_background_call_at(executor, 1, 0.58);
  EXPECT_DOUBLE_EQ(h.tick(executor, 12)[0], value(1, 7));
  TickReport r = executor.last_tick();
  EXPECT_TRUE(r.chunk_landed);
  EXPECT_EQ(r.dropped_steps, 8);
  EXPECT_TRUE(r.held);
  EXPECT_TRUE(r.inference_started);
  h.finish_background_call_at(executor, 2, 0.64);
  EXPECT_DOUBLE_EQ(h.tick(executor, 13)[0], value(3, 1));
  r = executor.last_tick();
  EXPECT_EQ(r.dropped_steps, 1);
  EXPECT_EQ(r.source_tick, 12);
  EXPECT_FALSE(r.inference_started);  // 6 rows left
  EXPECT_DOUBLE_EQ(h.tick(executor, 14)[0], value(3, 2));
  EXPECT_EQ(h.policy.observation_ticks(), (std::vector<int64_t>{0, 3, 12}));

  const ExecutorMetrics m = executor.metrics();
  EXPECT_EQ(m.held_ticks, 5);
  EXPECT_EQ(m.deadline_misses, 5);
  EXPECT_EQ(m.dropped_steps, 9);
  EXPECT_EQ(m.inferences, 3);
  EXPECT_EQ(m.staleness_max_ticks, 12);  // A7 (tick 0's) executed at tick 12
  EXPECT_NEAR(m.inference_max_ms, 430.0, 1e-9);  // call 1: 0.15 s -> 0.58 s
  h.policy.release_all();
}

// Threshold 0: the next inference starts only when the plan is empty after a tick.
TEST(ChunkExecutorAsync, ThresholdZeroStartsWhenThePlanRunsOut) {
  Harness h;
  h.policy.release(1);
  ExecutorOptions options = h.options(ExecutionMode::kAsync);
  options.threshold = 0;
  ChunkExecutor executor(h.policy.fn(), options);
  for (int64_t t = 0; t <= 7; ++t) {
    h.tick(executor, t);
    EXPECT_EQ(executor.last_tick().inference_started, t == 7) << "tick " << t;
  }
  h.finish_background_call_at(executor, 1, 0.36);
  EXPECT_DOUBLE_EQ(h.tick(executor, 8)[0], value(2, 1));  // from tick 7: row 0 stale
  h.policy.release_all();
}

// The worker gets its own copy of the images: the caller overwrites its buffer after tick().
TEST(ChunkExecutorAsync, WorkerSeesACopyOfTheImages) {
  Harness h;
  h.policy.release(1);
  ChunkExecutor executor(h.policy.fn(), h.options(ExecutionMode::kAsync));
  torch::Tensor camera = torch::full({4, 4, 3}, 1, torch::kUInt8);
  for (int64_t t = 0; t <= 3; ++t) executor.tick(observation_at(t, camera));
  camera.fill_(2);  // the next frame, in the same buffer
  h.finish_background_call_at(executor, 1, 0.2);
  EXPECT_EQ(h.policy.image_means(), (std::vector<double>{1.0, 1.0}));
}

// A failure in the background inference is rethrown unchanged by the next tick, which does nothing
// else; the following tick executes what that tick would have and starts a new inference.
TEST(ChunkExecutorAsync, BackgroundExceptionSurfacesAtTheNextTick) {
  Harness h;
  h.policy.release(1);
  h.policy.state().on_call = [](int64_t n) {
    if (n == 1) throw Error("scripted policy: call 1 failed");
  };
  ChunkExecutor executor(h.policy.fn(), h.options(ExecutionMode::kAsync));
  for (int64_t t = 0; t <= 4; ++t) h.tick(executor, t);
  h.finish_background_call_at(executor, 1, 0.22);
  expect_error([&] { h.tick(executor, 5); }, {"scripted policy: call 1 failed"});
  ExecutorMetrics m = executor.metrics();
  EXPECT_EQ(m.failed_inferences, 1);
  EXPECT_EQ(m.ticks, 5);
  EXPECT_EQ(executor.last_tick().tick, 4);
  EXPECT_FALSE(executor.inference_in_flight());

  EXPECT_DOUBLE_EQ(h.tick(executor, 6)[0], value(1, 5));
  const TickReport r = executor.last_tick();
  EXPECT_EQ(r.tick, 5);
  EXPECT_TRUE(r.inference_started);
  h.policy.wait_started(3);
  EXPECT_EQ(h.policy.observation_ticks(), (std::vector<int64_t>{0, 3, 6}));
  h.policy.release_all();
}

TEST(ChunkExecutorAsync, BackgroundExceptionKeepsItsType) {
  Harness h;
  h.policy.release(1);
  h.policy.state().on_call = [](int64_t n) {
    if (n == 1) throw std::out_of_range("scripted out_of_range");
  };
  ChunkExecutor executor(h.policy.fn(), h.options(ExecutionMode::kAsync));
  for (int64_t t = 0; t <= 3; ++t) h.tick(executor, t);
  h.finish_background_call_at(executor, 1, 0.2);
  EXPECT_THROW(h.tick(executor, 4), std::out_of_range);
  h.policy.release_all();
}

// close() waits for the inference in flight and discards it; tick() afterwards is an Error.
TEST(ChunkExecutorAsync, CloseWaitsForTheInferenceInFlight) {
  Harness h;
  h.policy.release(1);
  ChunkExecutor executor(h.policy.fn(), h.options(ExecutionMode::kAsync));
  for (int64_t t = 0; t <= 3; ++t) h.tick(executor, t);
  h.policy.wait_started(2);
  std::atomic<bool> closed{false};
  std::thread closer([&] {
    executor.close();
    closed = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(closed.load());  // still waiting for call 1 (never a false failure under load)
  h.policy.release();
  closer.join();
  EXPECT_TRUE(closed.load());
  EXPECT_FALSE(executor.inference_in_flight());
  expect_error([&] { h.tick(executor, 4); }, {"ChunkExecutor", "tick() after close()"});
  executor.close();  // idempotent
  EXPECT_EQ(executor.metrics().inferences, 1);  // call 1 was discarded
}

TEST(ChunkExecutorAsync, DestructionWithAFailingInferenceInFlight) {
  Harness h;
  h.policy.release(1);
  h.policy.state().on_call = [](int64_t n) {
    if (n == 1) throw Error("scripted policy: failed during shutdown");
  };
  std::thread releaser;
  {
    ChunkExecutor executor(h.policy.fn(), h.options(ExecutionMode::kAsync));
    for (int64_t t = 0; t <= 3; ++t) h.tick(executor, t);
    h.policy.wait_started(2);
    releaser = std::thread([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      h.policy.release();
    });
  }  // the destructor waits for call 1, logs its error, does not throw
  releaser.join();
  EXPECT_EQ(h.policy.started(), 2);
}

TEST(ChunkExecutorAsync, BadBackgroundChunkIsAnErrorAtTheNextTick) {
  Harness h;
  h.policy.release(1);
  h.policy.state().make = [](int64_t n) {
    Matrix m = scripted_chunk(n + 1);
    if (n == 1) m(2, 3) = std::numeric_limits<double>::quiet_NaN();
    return m;
  };
  ChunkExecutor executor(h.policy.fn(), h.options(ExecutionMode::kAsync));
  for (int64_t t = 0; t <= 3; ++t) h.tick(executor, t);
  h.finish_background_call_at(executor, 1, 0.2);
  expect_error([&] { h.tick(executor, 4); }, {"ChunkExecutor", "non-finite value at row 2, column 3"});
  EXPECT_EQ(executor.metrics().failed_inferences, 1);
  h.policy.release_all();
}

// The real thread and the steady clock: a 15 ms policy under a 100 Hz loop. Only invariants that
// hold at any speed: the executed chunk never goes back to an older one (replace), every landed
// chunk lost at least its row 0, nothing failed.
TEST(ChunkExecutorAsync, RealThreadAndSteadyClock) {
  std::atomic<int64_t> calls{0};
  auto infer = [&](const Observation&) {
    const int64_t n = calls++;
    if (n > 0) std::this_thread::sleep_for(std::chrono::milliseconds(15));
    return scripted_chunk(n + 1);
  };
  ExecutorOptions options;
  options.hz = 100;
  ChunkExecutor executor(infer, options);
  auto next = std::chrono::steady_clock::now();
  double previous_chunk = 0;
  for (int t = 0; t < 60; ++t) {
    const Eigen::VectorXd action = executor.tick(observation_at(t));
    const double chunk = std::floor(action[0] / 100.0);
    EXPECT_GE(chunk, previous_chunk) << "tick " << t;
    previous_chunk = chunk;
    next += std::chrono::milliseconds(10);
    std::this_thread::sleep_until(next);
  }
  executor.close();
  const ExecutorMetrics m = executor.metrics();
  EXPECT_EQ(m.ticks, 60);
  EXPECT_EQ(m.failed_inferences, 0);
  EXPECT_GE(m.inferences, 2);
  EXPECT_GE(m.dropped_steps, m.inferences - 1);
  EXPECT_GE(m.inference_max_ms, 14.0);  // the policy sleeps 15 ms
}

// ---------------------------------------------------------------------------------------------
// Temporal ensembling

Matrix column_chunk(std::vector<double> values) {
  Matrix m(static_cast<Eigen::Index>(values.size()), 1);
  for (size_t i = 0; i < values.size(); ++i) m(static_cast<Eigen::Index>(i), 0) = values[i];
  return m;
}

// Chunks of 4 rows, 1 dim; the chunk inferred at tick k has rows 10 (k + 1) + i. With m = 0.5:
//   tick 0: {chunk 0 row 0}                                 = 10
//   tick 1: {chunk 0 row 1, chunk 1 row 0}, weights 1, e^-0.5  (oldest first)
//   tick 5: {chunk 2 row 3, chunk 3 row 2, chunk 4 row 1, chunk 5 row 0} = {33, 42, 51, 60},
//           weights e^0, e^-0.5, e^-1, e^-1.5
TEST(ChunkExecutorEnsemble, WeightsByAgeOldestFirst) {
  Harness h;
  h.policy.release_all();
  h.policy.state().make = [](int64_t k) {
    const double base = 10.0 * static_cast<double>(k + 1);
    return column_chunk({base, base + 1, base + 2, base + 3});
  };
  ExecutorOptions options = h.options(ExecutionMode::kEnsemble);
  options.ensemble_m = 0.5;
  ChunkExecutor executor(h.policy.fn(), options);
  std::vector<double> got;
  for (int64_t t = 0; t <= 5; ++t) got.push_back(h.tick(executor, t)[0]);
  const double w1 = std::exp(-0.5), w2 = std::exp(-1.0), w3 = std::exp(-1.5);
  EXPECT_DOUBLE_EQ(got[0], 10.0);
  EXPECT_NEAR(got[1], (11 + 20 * w1) / (1 + w1), 1e-12);
  EXPECT_NEAR(got[5], (33 + 42 * w1 + 51 * w2 + 60 * w3) / (1 + w1 + w2 + w3), 1e-12);
  const TickReport r = executor.last_tick();
  EXPECT_EQ(r.predictions, 4);
  EXPECT_EQ(r.source_tick, 5);
  EXPECT_TRUE(r.inferred_inline);
  EXPECT_EQ(executor.metrics().inferences, 6);
}

TEST(ChunkExecutorEnsemble, ZeroMIsAPlainMean) {
  Harness h;
  h.policy.release_all();
  h.policy.state().make = [](int64_t k) {
    const double base = 10.0 * static_cast<double>(k + 1);
    return column_chunk({base, base + 1, base + 2});
  };
  ExecutorOptions options = h.options(ExecutionMode::kEnsemble);
  options.ensemble_m = 0;
  ChunkExecutor executor(h.policy.fn(), options);
  for (int64_t t = 0; t < 2; ++t) h.tick(executor, t);
  EXPECT_NEAR(h.tick(executor, 2)[0], (12 + 21 + 30) / 3.0, 1e-12);
}

// m < 0 weights the newest prediction most: exp(-m * i), i = 0 the oldest, as for m > 0.
TEST(ChunkExecutorEnsemble, NegativeMFavoursTheNewest) {
  Harness h;
  h.policy.release_all();
  h.policy.state().make = [](int64_t k) {
    const double base = 10.0 * static_cast<double>(k + 1);
    return column_chunk({base, base + 1, base + 2});
  };
  ExecutorOptions options = h.options(ExecutionMode::kEnsemble);
  options.ensemble_m = -0.5;
  ChunkExecutor executor(h.policy.fn(), options);
  h.tick(executor, 0);
  const double w1 = std::exp(0.5);
  EXPECT_NEAR(h.tick(executor, 1)[0], (11 + 20 * w1) / (1 + w1), 1e-12);
}

// The extreme accepted m on a long chunk: exp(-m * i) itself would overflow (e^(10 * 99) is
// infinite, and the normalized action NaN); the weights relative to the heaviest stay finite.
TEST(ChunkExecutorEnsemble, ExtremeMOnALongChunkStaysFinite) {
  constexpr int64_t kRows = 100;
  for (const double m : {-kMaxEnsembleM, kMaxEnsembleM}) {
    SCOPED_TRACE(m);
    Harness h;
    h.policy.release_all();
    h.policy.state().make = [](int64_t k) {
      std::vector<double> rows;
      for (int64_t i = 0; i < kRows; ++i) rows.push_back(1000.0 * static_cast<double>(k) + static_cast<double>(i));
      return column_chunk(rows);
    };
    ExecutorOptions options = h.options(ExecutionMode::kEnsemble);
    options.ensemble_m = m;
    ChunkExecutor executor(h.policy.fn(), options);
    for (int64_t t = 0; t < kRows; ++t) {
      const double got = h.tick(executor, t)[0];
      ASSERT_TRUE(std::isfinite(got)) << "tick " << t;
      // Predictions k = 0..t (oldest first) of row t - k; the expected mean in log space.
      double top = -INFINITY, total = 0, sum = 0;
      for (int64_t k = 0; k <= t; ++k) top = std::max(top, -m * static_cast<double>(k));
      for (int64_t k = 0; k <= t; ++k) {
        const double w = std::exp(-m * static_cast<double>(k) - top);
        total += w;
        sum += w * (1000.0 * static_cast<double>(k) + static_cast<double>(t - k));
      }
      ASSERT_NEAR(got, sum / total, 1e-9 * (1 + std::abs(sum / total))) << "tick " << t;
    }
  }
}

// ACT's loop keeps the predictions for step t where all(actions != 0): a prediction with an exact
// zero (a gripper command 0) is silently left out. The executor averages every prediction.
TEST(ChunkExecutorEnsemble, PredictionsWithZerosCount) {
  Harness h;
  h.policy.release_all();
  h.policy.state().make = [](int64_t k) {
    Matrix m(2, 2);
    if (k == 0) m << 1, 1, 2, 2;
    else m << 0, 4, 5, 5;
    return m;
  };
  ChunkExecutor executor(h.policy.fn(), h.options(ExecutionMode::kEnsemble));
  h.tick(executor, 0);
  const Eigen::VectorXd action = h.tick(executor, 1);  // {(2, 2) from tick 0, (0, 4) from tick 1}
  const double w = std::exp(-0.01);
  EXPECT_NEAR(action[0], (2 + 0 * w) / (1 + w), 1e-12);
  EXPECT_NEAR(action[1], (2 + 4 * w) / (1 + w), 1e-12);
  EXPECT_EQ(executor.last_tick().predictions, 2);
}

// ACT imitate_episodes.py with --temporal_agg, transcribed on dense buffers:
//   all_time_actions[[t], t:t+num_queries] = all_actions
//   actions_for_curr_step = all_time_actions[:, t][populated]
//   exp_weights = np.exp(-k * np.arange(len(actions_for_curr_step))); exp_weights /= exp_weights.sum()
//   raw_action = (actions_for_curr_step * exp_weights).sum(dim=0)
// (populated is a flag here instead of ACT's all(!= 0)), k = 0.01, random chunks.
TEST(ChunkExecutorEnsemble, MatchesActsTemporalAggregationLoop) {
  constexpr int64_t kQueries = 8, kDim = 7, kSteps = 30;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<Matrix> chunks;
  for (int64_t t = 0; t < kSteps; ++t) {
    Matrix m(kQueries, kDim);
    for (int64_t i = 0; i < kQueries; ++i)
      for (int64_t j = 0; j < kDim; ++j) m(i, j) = uniform(rng);
    chunks.push_back(m);
  }

  // ACT's buffers: [max_timesteps, max_timesteps + num_queries, state_dim].
  std::vector<std::vector<Eigen::VectorXd>> all_time_actions(
      kSteps, std::vector<Eigen::VectorXd>(kSteps + kQueries, Eigen::VectorXd::Zero(kDim)));
  std::vector<std::vector<bool>> populated(kSteps, std::vector<bool>(kSteps + kQueries, false));
  std::vector<Eigen::VectorXd> reference;
  for (int64_t t = 0; t < kSteps; ++t) {
    for (int64_t i = 0; i < kQueries; ++i) {
      all_time_actions[t][t + i] = chunks[t].row(i).transpose();
      populated[t][t + i] = true;
    }
    std::vector<Eigen::VectorXd> for_step;
    for (int64_t s = 0; s < kSteps; ++s)
      if (populated[s][t]) for_step.push_back(all_time_actions[s][t]);
    std::vector<double> weights;
    double sum = 0;
    for (size_t i = 0; i < for_step.size(); ++i) sum += weights.emplace_back(std::exp(-0.01 * static_cast<double>(i)));
    Eigen::VectorXd raw = Eigen::VectorXd::Zero(kDim);
    for (size_t i = 0; i < for_step.size(); ++i) raw += for_step[i] * (weights[i] / sum);
    reference.push_back(raw);
  }

  ChunkExecutor executor([&](const Observation& o) { return chunks[static_cast<size_t>(o.proprio[0])]; },
                         [] {
                           ExecutorOptions o;
                           o.mode = ExecutionMode::kEnsemble;
                           o.clock = std::make_shared<SimulatedClock>();
                           return o;
                         }());
  for (int64_t t = 0; t < kSteps; ++t) {
    const Eigen::VectorXd action = executor.tick(observation_at(t));
    EXPECT_LE((action - reference[t]).cwiseAbs().maxCoeff(), 1e-12) << "tick " << t;
    EXPECT_EQ(executor.last_tick().predictions, std::min<int64_t>(t + 1, kQueries));
  }
}

// ---------------------------------------------------------------------------------------------
// Chunks, metrics

TEST(ChunkExecutorChunks, BadInlineChunksAreErrors) {
  auto run = [](std::function<Matrix(int64_t)> make, int ticks) {
    int64_t calls = 0;
    ExecutorOptions options;
    options.mode = ExecutionMode::kEnsemble;
    options.clock = std::make_shared<SimulatedClock>();
    ChunkExecutor executor([&](const Observation&) { return make(calls++); }, options);
    for (int t = 0; t < ticks; ++t) executor.tick(observation_at(t));
  };
  expect_error([&] { run([](int64_t) { return Matrix(); }, 1); }, {"ChunkExecutor", "empty 0 x 0 chunk"});
  expect_error([&] { run([](int64_t n) { return n == 0 ? scripted_chunk(1) : scripted_chunk(2, 8, 6); }, 2); },
               {"ChunkExecutor", "8 x 6 chunk after 8 x 7 ones"});
  expect_error(
      [&] {
        run(
            [](int64_t) {
              Matrix m = scripted_chunk(1);
              m(5, 1) = INFINITY;
              return m;
            },
            1);
      },
      {"non-finite value at row 5, column 1"});
}

// Open loop, one step per chunk, 5 Hz: every tick infers, with latencies 10, 20, ..., 100 ms.
// Nearest rank: p50 = the 5th smallest = 50 ms, p99 = the 10th = 100 ms. Ticks exactly one period
// apart: no jitter. Each action is executed when its inference returns: staleness = latency.
TEST(ChunkExecutorMetrics, PercentilesJitterStaleness) {
  Harness h;
  h.policy.release_all();
  h.policy.state().on_call = [clock = h.clock](int64_t n) { clock->advance(0.01 * static_cast<double>(n + 1)); };
  ExecutorOptions options = h.options(ExecutionMode::kOpenLoop);
  options.execute_steps = 1;
  options.hz = 5;
  ChunkExecutor executor(h.policy.fn(), options);
  ExecutorMetrics m = executor.metrics();
  EXPECT_EQ(m.ticks, 0);
  EXPECT_TRUE(std::isnan(m.inference_p50_ms));
  EXPECT_TRUE(std::isnan(m.staleness_mean_ms));
  for (int64_t k = 0; k < 10; ++k) {
    h.clock->set(0.2 * static_cast<double>(k));
    executor.tick(observation_at(k));
  }
  m = executor.metrics();
  EXPECT_EQ(m.ticks, 10);
  EXPECT_EQ(m.inferences, 10);
  EXPECT_EQ(m.deadline_misses, 0);
  EXPECT_NEAR(m.inference_p50_ms, 50.0, 1e-9);
  EXPECT_NEAR(m.inference_p99_ms, 100.0, 1e-9);
  EXPECT_NEAR(m.inference_max_ms, 100.0, 1e-9);
  EXPECT_NEAR(m.jitter_p99_ms, 0.0, 1e-9);
  EXPECT_NEAR(m.jitter_max_ms, 0.0, 1e-9);
  EXPECT_NEAR(m.staleness_mean_ms, 55.0, 1e-9);
  EXPECT_NEAR(m.staleness_max_ms, 100.0, 1e-9);
  EXPECT_EQ(m.staleness_max_ticks, 0);
  const std::string text = format_metrics(m);
  EXPECT_NE(text.find("inference latency p50 50.0 ms, p99 100.0 ms"), std::string::npos) << text;
}

TEST(ChunkExecutorMetrics, WindowKeepsTheMostRecentSamples) {
  Harness h;
  h.policy.release_all();
  h.policy.state().on_call = [clock = h.clock](int64_t n) { clock->advance(n < 5 ? 1.0 : 0.001); };
  ExecutorOptions options = h.options(ExecutionMode::kOpenLoop);
  options.execute_steps = 1;
  options.metrics_window = 3;
  ChunkExecutor executor(h.policy.fn(), options);
  for (int64_t k = 0; k < 8; ++k) executor.tick(observation_at(k));
  const ExecutorMetrics m = executor.metrics();
  EXPECT_NEAR(m.inference_p99_ms, 1.0, 1e-6);      // the last 3 calls took 1 ms
  EXPECT_NEAR(m.inference_max_ms, 1000.0, 1e-6);   // the maximum is over all calls
}

}  // namespace
}  // namespace focusvla::runtime
