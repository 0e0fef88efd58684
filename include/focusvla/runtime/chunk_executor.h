#pragma once
// The robot side of a chunking policy: at each control tick, the action to execute now.
//
//   focusvla::runtime::ExecutorOptions options;        // mode kAsync, 20 Hz, threshold 4, replace
//   focusvla::runtime::ChunkExecutor executor(policy, options);
//   while (running) {                                  // the caller's loop keeps the rate
//     Eigen::VectorXd action = executor.tick(robot.observe());
//     robot.send(action);
//     sleep_until(next_tick += period);
//   }
//   focusvla::runtime::ExecutorMetrics m = executor.metrics();
//
// The executor never sleeps: the caller's loop ticks it once per control period. Ticks are counted
// (tick 0, 1, ...) and a chunk's row i, computed from the observation of tick k, is the action for
// tick k + i (VLA-Adapter / OpenVLA: the first action of a chunk is for the moment of its
// observation). Time (the injectable Clock) only feeds the metrics and the deadline accounting.
//
// Modes (ExecutionMode):
//   kOpenLoop   execute a chunk's first execute_steps rows (0: all), then infer again. The tick
//               that needs a chunk runs the inference on the calling thread and returns its row 0.
//               The reference's LIBERO evaluation, ACT's default (query_frequency = chunk).
//   kAsync      infer on a background thread while the current chunk executes: when at most
//               `threshold` planned actions remain after a tick's action, that tick's observation
//               goes to the worker (LeRobot async inference's chunk_size_threshold, as a count:
//               4 of 8 = its default 0.5). A chunk computed from tick k's observation that lands
//               (is merged) at tick L has rows 0 .. L-k-1 for ticks already executed: they are
//               dropped (latency-aware; row 0 is always stale, as in LeRobot, whose client skips
//               every incoming timestep <= the last executed one). Its rows for ticks still
//               planned by the current chunk are merged by `aggregate`: kReplace (the new row;
//               LeRobot's "latest_only") or kWeightedAverage ((1 - new_weight) * old + new_weight *
//               new; new_weight 0.7 is LeRobot's "weighted_average"); the rest are appended.
//               A chunk lands at the first tick after the worker finished (wait_for_inference()
//               makes that exact in tests).
//   kEnsemble   ACT's temporal ensembling: infer at every tick (on the calling thread); the
//               action for tick t is the average of every chunk's prediction for t, weighted
//               exp(-m * i) with i = 0 for the OLDEST prediction, normalized (ACT
//               imitate_episodes.py: `exp_weights = np.exp(-k * np.arange(n))`, k = 0.01;
//               LeRobot ACTTemporalEnsembler, same weights, computed online). m > 0 favours old
//               predictions, 0 is a plain mean, m < 0 favours new ones. Unlike ACT's loop, which
//               finds the predictions for a step with `all(actions != 0)` and so silently leaves out
//               any prediction with an exact 0 in it (a closed gripper, a zero velocity), the
//               executor keeps every prediction it was given.
//
// Edges:
//   First tick: there is no chunk yet. Every mode runs the first inference on the calling thread
//     and returns its row 0 (nothing stale: the robot had no plan to follow meanwhile). Warm the
//     policy up before the loop (on a GPU: two calls of the real shape) so that this is short.
//   Slow inference (kAsync): when the current chunk runs out before the next one lands, each tick
//     repeats the last executed action (holds: a position-controlled arm stays where it is, as
//     LeRobot's client, which sends nothing while its queue is empty) and counts one deadline
//     miss. A chunk that lands after all its rows went stale is dropped whole, and the next
//     inference starts at once.
//   Inline inference (first tick, kOpenLoop, kEnsemble): a tick that blocks for longer than a
//     control period makes the caller miss ticks; it counts floor(duration / period) deadline
//     misses (periods that passed without a new command).
//   A failed background inference: its exception (focusvla::Error or whatever the InferFn threw)
//     is rethrown, unchanged, by the next tick, which does nothing else: no action is consumed and
//     only failed_inferences changes. Ticking again carries on with the current plan and starts a
//     new inference. Inline inferences throw from the tick that runs them.
//   Shutdown: close() (and the destructor) waits for an inference in flight to return (a forward
//     pass cannot be interrupted) and discards its chunk; if it failed, the error is logged as a
//     warning (close() does not throw). tick() after close() throws Error.
//   Bad chunks: an InferFn result that is empty, has another shape than the first chunk, or holds
//     NaN / Inf is an Error naming the row and column (in kAsync, from the next tick).
//
// Threads: one thread ticks (tick, close); metrics() and last_tick() may be read from any thread.
// The executor clones the images of an observation it hands to the worker, so the caller may
// reuse its camera buffers as soon as tick() returns.

#include <Eigen/Core>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "focusvla/policy/policy.h"

namespace focusvla::runtime {

// Seconds on a monotonic time line. The executor reads it at each tick and when an inference
// returns (from the worker thread too: now() must be thread-safe).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual double now() const = 0;
};

// std::chrono::steady_clock, in seconds since its construction.
class SteadyClock : public Clock {
 public:
  SteadyClock();
  double now() const override;

 private:
  int64_t origin_ns_;
};

// Time that moves only when told to: deterministic tests and simulations (a scripted policy can
// advance it by its own latency). Thread-safe.
class SimulatedClock : public Clock {
 public:
  explicit SimulatedClock(double start_seconds = 0.0);
  double now() const override;
  void set(double seconds);
  void advance(double seconds);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// A policy as the executor sees it: one observation -> a chunk (rows: steps, columns: action
// dims). Called on the calling thread (inline inference) or on the worker thread (kAsync).
using InferFn = std::function<ActionChunk::Matrix(const Observation&)>;

// Policy::act's un-normalized actions. The Policy is copied (copies share the model).
InferFn policy_infer(const Policy& policy);

enum class ExecutionMode { kOpenLoop, kAsync, kEnsemble };
enum class Aggregate { kReplace, kWeightedAverage };

// "open-loop", "async", "ensemble"; parse throws Error naming the value and the choices.
std::string mode_name(ExecutionMode mode);
ExecutionMode parse_mode(const std::string& name);
// "replace", "average"; parse also takes "weighted-average".
std::string aggregate_name(Aggregate aggregate);
Aggregate parse_aggregate(const std::string& name);

// The largest |ExecutorOptions::ensemble_m| accepted.
inline constexpr double kMaxEnsembleM = 10.0;

struct ExecutorOptions {
  ExecutionMode mode = ExecutionMode::kAsync;
  // Control rate of the caller's loop: the period behind tick jitter and deadline misses.
  double hz = 20.0;
  // kOpenLoop: rows of each chunk to execute before inferring again; 0: the whole chunk.
  int execute_steps = 0;
  // kAsync: start the next inference when at most this many planned actions remain.
  int threshold = 4;
  Aggregate aggregate = Aggregate::kReplace;
  double new_weight = 0.7;  // kWeightedAverage: weight of the newer chunk's row, in [0, 1]
  // kEnsemble: m of the weights exp(-m * i), i = 0 the oldest prediction (ACT: 0.01), in
  // [-kMaxEnsembleM, kMaxEnsembleM]: > 0 favours older predictions, < 0 newer ones, 0 is the plain
  // mean. At |m| = 10 the neighbour's weight is already 4.5e-5 of the heaviest (one prediction
  // decides), so larger values only risk overflow.
  double ensemble_m = 0.01;
  // Null: a SteadyClock.
  std::shared_ptr<Clock> clock;
  // Samples kept for the percentiles (the most recent ones).
  int metrics_window = 100000;
};

// What the executor measured so far. Latency, jitter and staleness percentiles are nearest-rank
// over the last metrics_window samples; NaN before the first sample.
struct ExecutorMetrics {
  int64_t ticks = 0;              // ticks that returned an action
  int64_t inferences = 0;         // inferences that returned a chunk
  int64_t failed_inferences = 0;  // inferences that threw
  int64_t deadline_misses = 0;    // periods without a new planned action (see Edges)
  int64_t held_ticks = 0;         // kAsync ticks that repeated the last action
  int64_t dropped_steps = 0;      // stale rows dropped from landed chunks (and whole stale chunks)
  int64_t merged_steps = 0;       // rows merged with the current plan by the aggregate
  // Clock time from the start of an inference to the InferFn's return (in kAsync: from the tick
  // that handed over its observation to the worker's clock reading when it returned).
  double inference_p50_ms = 0, inference_p99_ms = 0, inference_max_ms = 0;
  // |interval between the starts of successive ticks - period|
  double jitter_p50_ms = 0, jitter_p99_ms = 0, jitter_max_ms = 0;
  // Age of each executed action: from its observation (the newest one it was computed from: the
  // newer chunk of a merge, the newest prediction of an ensemble) to its execution (the end of
  // the tick that returned it; held ticks included), in ms and in ticks.
  double staleness_mean_ms = 0, staleness_max_ms = 0;
  double staleness_mean_ticks = 0;
  int64_t staleness_max_ticks = 0;
};

// What the last tick did.
struct TickReport {
  int64_t tick = -1;               // index (0: the first tick)
  bool held = false;               // kAsync: nothing planned, the last action repeated
  bool inferred_inline = false;    // ran an inference on the calling thread
  bool inference_started = false;  // handed this tick's observation to the worker
  bool chunk_landed = false;       // merged a chunk from the worker
  int64_t landed_from_tick = -1;   // the observation tick of that chunk
  int64_t dropped_steps = 0;       // its stale rows
  int64_t merged_steps = 0;        // its rows merged by the aggregate
  int64_t predictions = 0;         // kEnsemble: predictions averaged into the action
  int64_t deadline_misses = 0;     // added by this tick
  int64_t source_tick = -1;        // observation tick of the action (the newest contributing)
  double staleness_ms = 0;
};

class ChunkExecutor {
 public:
  // Throws Error naming an invalid option (hz <= 0, threshold < 0, new_weight outside [0, 1], ...).
  ChunkExecutor(InferFn infer, ExecutorOptions options = {});
  ChunkExecutor(const Policy& policy, ExecutorOptions options = {});
  ~ChunkExecutor();  // close()
  // A moved-from executor may only be destroyed or assigned to.
  ChunkExecutor(ChunkExecutor&&) noexcept;
  ChunkExecutor& operator=(ChunkExecutor&&) noexcept;

  // The action to execute now (action_dim values). May run an inference on this thread (see the
  // modes), rethrows a failed background inference (see Edges).
  Eigen::VectorXd tick(const Observation& observation);
  Eigen::VectorXd tick(const std::vector<torch::Tensor>& images, const std::string& instruction,
                       const std::vector<double>& proprio = {});

  // Blocks (wall time) until no background inference is running, or timeout_seconds passed;
  // true when none is. Its chunk lands at the next tick.
  bool wait_for_inference(double timeout_seconds) const;
  bool inference_in_flight() const;

  ExecutorMetrics metrics() const;
  TickReport last_tick() const;
  const ExecutorOptions& options() const;

  // Waits for an inference in flight, discards it, stops the worker. Idempotent; never throws.
  void close() noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Several lines: counts, inference latency, jitter and staleness, for logs and examples.
std::string format_metrics(const ExecutorMetrics& metrics);

}  // namespace focusvla::runtime
