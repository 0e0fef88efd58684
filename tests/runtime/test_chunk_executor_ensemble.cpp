// runtime/chunk_executor.h, continued: the temporal ensemble (weights by age, against a
// transcription of ACT's own loop), bad chunks, and the metrics. The harness:
// executor_harness.h; the modes: test_chunk_executor.cpp.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "executor_harness.h"
#include "focusvla/core/error.h"
#include "focusvla/runtime/chunk_executor.h"
#include "test_util.h"

namespace focusvla::runtime {
namespace {

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
