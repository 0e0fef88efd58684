// runtime/chunk_executor.h: the three modes and their edges, deterministically. Policies are
// scripted (call n returns chunk n + 1, whose row i column j is 100 (n + 1) + i + 0.01 j, so an
// executed value names its chunk and row), background calls wait until the test releases them,
// and time is a SimulatedClock that the test (or the scripted latency) advances. Expected values
// are derived by hand from the definitions in chunk_executor.h, step by step in the comments. The
// temporal ensemble, bad chunks and metrics: test_chunk_executor_ensemble.cpp (harness: executor_harness.h).

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
#include "executor_harness.h"
#include "test_util.h"

namespace focusvla::runtime {
namespace {

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

}  // namespace
}  // namespace focusvla::runtime
