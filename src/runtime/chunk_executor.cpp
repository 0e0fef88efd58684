#include "focusvla/runtime/chunk_executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"

namespace focusvla::runtime {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const char* const kWhat = "ChunkExecutor";

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The most recent `capacity` samples, for nearest-rank percentiles.
class SampleWindow {
 public:
  explicit SampleWindow(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

  void add(double value) {
    if (values_.size() < capacity_) {
      values_.push_back(value);
    } else {
      values_[next_] = value;
      next_ = (next_ + 1) % capacity_;
    }
  }

  const std::vector<double>& values() const { return values_; }

 private:
  size_t capacity_;
  size_t next_ = 0;
  std::vector<double> values_;
};

// The smallest sample with at least p percent of the samples at or below it; NaN when empty.
// Reorders `values` (a copy taken under the metrics lock: the selection runs outside it, so a
// large window never holds up the control loop's tick).
double percentile(std::vector<double>& values, double p) {
  if (values.empty()) return kNaN;
  const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(values.size())));
  const size_t index = std::min(values.size() - 1, rank == 0 ? 0 : rank - 1);
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(index), values.end());
  return values[index];
}

// An action planned for a tick, with the observation it was computed from (the newest one).
struct Planned {
  Eigen::VectorXd action;
  int64_t obs_tick = 0;
  double obs_time = 0;
};

struct Job {
  Observation observation;
  int64_t obs_tick = 0;
  double obs_time = 0;
  double start_time = 0;
};

struct Landed {
  ActionChunk::Matrix actions;
  std::exception_ptr error;
  int64_t obs_tick = 0;
  double obs_time = 0;
  double start_time = 0;
  double end_time = 0;
};

// The worker must not see the caller's buffers, which the caller may overwrite after tick().
Observation owned_copy(const Observation& observation) {
  Observation copy;
  copy.instruction = observation.instruction;
  copy.proprio = observation.proprio;
  copy.images.reserve(observation.images.size());
  for (const auto& image : observation.images) copy.images.push_back(image.defined() ? image.clone() : image);
  return copy;
}

void check_options(const ExecutorOptions& o) {
  check(std::isfinite(o.hz) && o.hz > 0, "ExecutorOptions.hz", "must be a positive rate, got " + std::to_string(o.hz));
  check(o.execute_steps >= 0, "ExecutorOptions.execute_steps",
        "must be >= 0 (0: the whole chunk), got " + std::to_string(o.execute_steps));
  check(o.threshold >= 0, "ExecutorOptions.threshold", "must be >= 0, got " + std::to_string(o.threshold));
  check(std::isfinite(o.new_weight) && o.new_weight >= 0 && o.new_weight <= 1, "ExecutorOptions.new_weight",
        "must be in [0, 1], got " + std::to_string(o.new_weight));
  if (!(std::isfinite(o.ensemble_m) && std::abs(o.ensemble_m) <= kMaxEnsembleM)) {
    std::ostringstream message;
    message << "must be in [-" << kMaxEnsembleM << ", " << kMaxEnsembleM << "] (weights exp(-m * i)), got "
            << o.ensemble_m;
    throw Error("ExecutorOptions.ensemble_m: " + message.str());
  }
  check(o.metrics_window > 0, "ExecutorOptions.metrics_window",
        "must be positive, got " + std::to_string(o.metrics_window));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Clocks

SteadyClock::SteadyClock() : origin_ns_(steady_ns()) {}

double SteadyClock::now() const { return static_cast<double>(steady_ns() - origin_ns_) * 1e-9; }

struct SimulatedClock::State {
  mutable std::mutex mutex;
  double seconds = 0;
};

SimulatedClock::SimulatedClock(double start_seconds) : state_(std::make_shared<State>()) {
  state_->seconds = start_seconds;
}

double SimulatedClock::now() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->seconds;
}

void SimulatedClock::set(double seconds) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->seconds = seconds;
}

void SimulatedClock::advance(double seconds) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->seconds += seconds;
}

// ---------------------------------------------------------------------------------------------
// Names

InferFn policy_infer(const Policy& policy) {
  return [policy](const Observation& o) { return policy.act(o.images, o.instruction, o.proprio).actions; };
}

std::string mode_name(ExecutionMode mode) {
  switch (mode) {
    case ExecutionMode::kOpenLoop: return "open-loop";
    case ExecutionMode::kAsync: return "async";
    case ExecutionMode::kEnsemble: return "ensemble";
  }
  return "?";
}

ExecutionMode parse_mode(const std::string& name) {
  if (name == "open-loop" || name == "open_loop") return ExecutionMode::kOpenLoop;
  if (name == "async") return ExecutionMode::kAsync;
  if (name == "ensemble") return ExecutionMode::kEnsemble;
  throw Error("mode: unknown execution mode '" + name + "' (expected open-loop, async or ensemble)");
}

std::string aggregate_name(Aggregate aggregate) {
  return aggregate == Aggregate::kReplace ? "replace" : "average";
}

Aggregate parse_aggregate(const std::string& name) {
  if (name == "replace") return Aggregate::kReplace;
  if (name == "average" || name == "weighted-average" || name == "weighted_average") return Aggregate::kWeightedAverage;
  throw Error("aggregate: unknown aggregate '" + name + "' (expected replace or average)");
}

// ---------------------------------------------------------------------------------------------
// The executor

struct ChunkExecutor::Impl {
  Impl(InferFn infer_fn, ExecutorOptions opts)
      : infer(std::move(infer_fn)),
        options(std::move(opts)),
        latency(static_cast<size_t>(options.metrics_window)),
        jitter(static_cast<size_t>(options.metrics_window)),
        staleness(static_cast<size_t>(options.metrics_window)) {
    check(static_cast<bool>(infer), kWhat, "no inference function");
    check_options(options);
    if (!options.clock) options.clock = std::make_shared<SteadyClock>();
    clock = options.clock;
    period = 1.0 / options.hz;
  }

  InferFn infer;
  ExecutorOptions options;
  std::shared_ptr<Clock> clock;
  double period = 0.05;

  // The ticking thread's state.
  int64_t next_tick = 0;
  double last_tick_time = kNaN;
  std::deque<Planned> plan;                       // plan[i]: the action for tick next_tick + i
  std::deque<std::vector<Planned>> predictions;   // kEnsemble: predictions[i], oldest first
  std::optional<Planned> last_action;             // what the robot executes when holding
  Eigen::Index chunk_rows = 0, chunk_cols = 0;    // the first chunk's shape; later ones must match
  bool closed = false;

  // Shared with the worker.
  mutable std::mutex mutex;
  mutable std::condition_variable changed;  // a job, a landed chunk, or stop
  std::thread worker;
  std::optional<Job> job;
  std::optional<Landed> landed;
  bool in_flight = false;  // a job was handed over and its result not yet taken by a tick
  bool stop = false;

  // Metrics (any thread reads them).
  mutable std::mutex metrics_mutex;
  ExecutorMetrics totals;  // counts and maxima; percentiles and means are filled by metrics()
  SampleWindow latency, jitter, staleness;
  double staleness_sum_ms = 0, staleness_sum_ticks = 0;
  TickReport report;

  Eigen::VectorXd tick(const Observation& observation);

  // One inference on this thread, checked, counted.
  ActionChunk::Matrix infer_inline(const Observation& observation, TickReport& r);
  void check_chunk(const ActionChunk::Matrix& actions);
  void plan_chunk(const ActionChunk::Matrix& actions, int64_t obs_tick, double obs_time, int64_t rows);
  // kAsync: the chunk the worker finished, if any; rethrows its failure.
  void take_landed(TickReport& r);
  void merge(const Landed& chunk, TickReport& r);
  void launch(const Observation& observation, double obs_time);
  Planned ensemble_action(TickReport& r);
  void record(const TickReport& r, double start, double end, const Planned& executed);
  void run_worker();
  void close() noexcept;
};

void ChunkExecutor::Impl::check_chunk(const ActionChunk::Matrix& actions) {
  check(actions.rows() > 0 && actions.cols() > 0, kWhat,
        "inference returned an empty " + std::to_string(actions.rows()) + " x " + std::to_string(actions.cols()) +
            " chunk");
  if (chunk_rows == 0) {
    chunk_rows = actions.rows();
    chunk_cols = actions.cols();
  }
  check(actions.rows() == chunk_rows && actions.cols() == chunk_cols, kWhat,
        "inference returned a " + std::to_string(actions.rows()) + " x " + std::to_string(actions.cols()) +
            " chunk after " + std::to_string(chunk_rows) + " x " + std::to_string(chunk_cols) + " ones");
  for (Eigen::Index r = 0; r < actions.rows(); ++r)
    for (Eigen::Index c = 0; c < actions.cols(); ++c)
      check(std::isfinite(actions(r, c)), kWhat,
            "inference returned a chunk with a non-finite value at row " + std::to_string(r) + ", column " +
                std::to_string(c));
}

ActionChunk::Matrix ChunkExecutor::Impl::infer_inline(const Observation& observation, TickReport& r) {
  r.inferred_inline = true;
  const double start = clock->now();
  ActionChunk::Matrix actions;
  try {
    actions = infer(observation);
    check_chunk(actions);
  } catch (...) {
    std::lock_guard<std::mutex> lock(metrics_mutex);
    ++totals.failed_inferences;
    throw;
  }
  const double ms = (clock->now() - start) * 1e3;
  std::lock_guard<std::mutex> lock(metrics_mutex);
  ++totals.inferences;
  latency.add(ms);
  totals.inference_max_ms = std::max(totals.inference_max_ms, ms);
  return actions;
}

void ChunkExecutor::Impl::plan_chunk(const ActionChunk::Matrix& actions, int64_t obs_tick, double obs_time,
                                     int64_t rows) {
  for (int64_t i = 0; i < rows; ++i) plan.push_back({actions.row(i).transpose(), obs_tick, obs_time});
}

void ChunkExecutor::Impl::take_landed(TickReport& r) {
  std::optional<Landed> chunk;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!landed) return;
    chunk = std::move(landed);
    landed.reset();
    in_flight = false;
  }
  try {
    if (chunk->error) std::rethrow_exception(chunk->error);
    check_chunk(chunk->actions);
  } catch (...) {
    std::lock_guard<std::mutex> lock(metrics_mutex);
    ++totals.failed_inferences;
    throw;
  }
  {
    const double ms = (chunk->end_time - chunk->start_time) * 1e3;
    std::lock_guard<std::mutex> lock(metrics_mutex);
    ++totals.inferences;
    latency.add(ms);
    totals.inference_max_ms = std::max(totals.inference_max_ms, ms);
  }
  merge(*chunk, r);
}

// Row i of a chunk from tick k's observation is for tick k + i; this tick is next_tick, so rows
// before next_tick - k went by while it was computed.
void ChunkExecutor::Impl::merge(const Landed& chunk, TickReport& r) {
  const int64_t rows = chunk.actions.rows();
  const int64_t stale = std::min(rows, next_tick - chunk.obs_tick);
  r.chunk_landed = true;
  r.landed_from_tick = chunk.obs_tick;
  r.dropped_steps = stale;
  for (int64_t i = stale; i < rows; ++i) {
    const auto index = static_cast<size_t>(i - stale);  // plan[index] is for tick obs_tick + i
    Planned incoming{chunk.actions.row(i).transpose(), chunk.obs_tick, chunk.obs_time};
    if (index < plan.size()) {
      if (options.aggregate == Aggregate::kWeightedAverage)
        incoming.action = (1.0 - options.new_weight) * plan[index].action + options.new_weight * incoming.action;
      plan[index] = std::move(incoming);
      ++r.merged_steps;
    } else {
      plan.push_back(std::move(incoming));
    }
  }
  std::lock_guard<std::mutex> lock(metrics_mutex);
  totals.dropped_steps += r.dropped_steps;
  totals.merged_steps += r.merged_steps;
}

void ChunkExecutor::Impl::launch(const Observation& observation, double obs_time) {
  Job next{owned_copy(observation), next_tick, obs_time, clock->now()};
  std::lock_guard<std::mutex> lock(mutex);
  if (!worker.joinable()) worker = std::thread([this] { run_worker(); });
  job = std::move(next);
  in_flight = true;
  changed.notify_all();
}

void ChunkExecutor::Impl::run_worker() {
  for (;;) {
    Job next;
    {
      std::unique_lock<std::mutex> lock(mutex);
      changed.wait(lock, [&] { return stop || job.has_value(); });
      if (stop) return;  // a job not yet started is dropped
      next = std::move(*job);
      job.reset();
    }
    Landed out;
    out.obs_tick = next.obs_tick;
    out.obs_time = next.obs_time;
    out.start_time = next.start_time;
    try {
      out.actions = infer(next.observation);
    } catch (...) {
      out.error = std::current_exception();
    }
    try {
      out.end_time = clock->now();
    } catch (...) {
      out.end_time = kNaN;
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      landed = std::move(out);
    }
    changed.notify_all();
  }
}

// ACT: the predictions for this tick, oldest first, weighted exp(-m * i) normalized to sum 1,
// then summed (imitate_episodes.py normalizes the weights before the sum, as here).
Planned ChunkExecutor::Impl::ensemble_action(TickReport& r) {
  std::vector<Planned> slot = std::move(predictions.front());
  predictions.pop_front();
  std::vector<double> weights(slot.size());
  double total = 0;
  // Relative to the heaviest weight (the oldest for m >= 0, the newest for m < 0): every weight is
  // in (0, 1] and the total in [1, n], so nothing overflows however long the chunk; for m >= 0
  // these are exactly exp(-m * i).
  const double heaviest = options.ensemble_m >= 0 ? 0.0 : static_cast<double>(slot.size() - 1);
  for (size_t i = 0; i < slot.size(); ++i)
    total += weights[i] = std::exp(-options.ensemble_m * (static_cast<double>(i) - heaviest));
  Planned out{Eigen::VectorXd::Zero(slot.front().action.size()), slot.back().obs_tick, slot.back().obs_time};
  for (size_t i = 0; i < slot.size(); ++i) out.action += (weights[i] / total) * slot[i].action;
  r.predictions = static_cast<int64_t>(slot.size());
  return out;
}

Eigen::VectorXd ChunkExecutor::Impl::tick(const Observation& observation) {
  check(!closed, kWhat, "tick() after close()");
  const double start = clock->now();
  TickReport r;
  r.tick = next_tick;
  if (options.mode == ExecutionMode::kAsync) take_landed(r);

  Planned executed;
  switch (options.mode) {
    case ExecutionMode::kOpenLoop: {
      if (plan.empty()) {
        const ActionChunk::Matrix actions = infer_inline(observation, r);
        const int64_t steps = options.execute_steps > 0 ? std::min<int64_t>(options.execute_steps, actions.rows())
                                                        : actions.rows();
        plan_chunk(actions, next_tick, start, steps);
      }
      executed = std::move(plan.front());
      plan.pop_front();
      break;
    }
    case ExecutionMode::kAsync: {
      if (!last_action) {  // the first chunk: nothing to hold, nothing in flight
        const ActionChunk::Matrix actions = infer_inline(observation, r);
        plan_chunk(actions, next_tick, start, actions.rows());
      }
      if (plan.empty()) {
        executed = *last_action;
        r.held = true;
        r.deadline_misses += 1;
      } else {
        executed = std::move(plan.front());
        plan.pop_front();
      }
      bool idle;
      {
        std::lock_guard<std::mutex> lock(mutex);
        idle = !in_flight;
      }
      if (idle && static_cast<int64_t>(plan.size()) <= options.threshold) {
        launch(observation, start);
        r.inference_started = true;
      }
      break;
    }
    case ExecutionMode::kEnsemble: {
      const ActionChunk::Matrix actions = infer_inline(observation, r);
      for (Eigen::Index i = 0; i < actions.rows(); ++i) {
        if (static_cast<size_t>(i) >= predictions.size()) predictions.emplace_back();
        predictions[static_cast<size_t>(i)].push_back({actions.row(i).transpose(), next_tick, start});
      }
      executed = ensemble_action(r);
      break;
    }
  }

  const double end = clock->now();
  // The inference blocked the caller's loop: every period it spanned passed without a command.
  if (r.inferred_inline) r.deadline_misses += static_cast<int64_t>(std::floor((end - start) / period + 1e-9));
  record(r, start, end, executed);
  last_action = executed;
  ++next_tick;
  return executed.action;
}

void ChunkExecutor::Impl::record(const TickReport& tick_report, double start, double end, const Planned& executed) {
  TickReport r = tick_report;
  r.source_tick = executed.obs_tick;
  r.staleness_ms = (end - executed.obs_time) * 1e3;
  const auto staleness_ticks = next_tick - executed.obs_tick;
  std::lock_guard<std::mutex> lock(metrics_mutex);
  ++totals.ticks;
  totals.deadline_misses += r.deadline_misses;
  if (r.held) ++totals.held_ticks;
  if (!std::isnan(last_tick_time)) {
    const double ms = std::abs((start - last_tick_time) - period) * 1e3;
    jitter.add(ms);
    totals.jitter_max_ms = std::max(totals.jitter_max_ms, ms);
  }
  last_tick_time = start;
  staleness.add(r.staleness_ms);
  staleness_sum_ms += r.staleness_ms;
  staleness_sum_ticks += static_cast<double>(staleness_ticks);
  totals.staleness_max_ms = std::max(totals.staleness_max_ms, r.staleness_ms);
  totals.staleness_max_ticks = std::max(totals.staleness_max_ticks, staleness_ticks);
  report = r;
}

void ChunkExecutor::Impl::close() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stop = true;
  }
  changed.notify_all();
  if (worker.joinable()) worker.join();
  closed = true;
  std::lock_guard<std::mutex> lock(mutex);
  if (landed && landed->error) {
    try {
      std::rethrow_exception(landed->error);
    } catch (const std::exception& e) {
      log_warn(std::string("ChunkExecutor: close(): discarding a failed inference: ") + e.what());
    } catch (...) {
      log_warn("ChunkExecutor: close(): discarding a failed inference (not a std::exception)");
    }
  }
  landed.reset();
  job.reset();
  in_flight = false;
}

ChunkExecutor::ChunkExecutor(InferFn infer, ExecutorOptions options)
    : impl_(std::make_unique<Impl>(std::move(infer), std::move(options))) {}

ChunkExecutor::ChunkExecutor(const Policy& policy, ExecutorOptions options)
    : ChunkExecutor(policy_infer(policy), std::move(options)) {}

ChunkExecutor::~ChunkExecutor() { close(); }

ChunkExecutor::ChunkExecutor(ChunkExecutor&&) noexcept = default;

ChunkExecutor& ChunkExecutor::operator=(ChunkExecutor&& other) noexcept {
  if (this != &other) {
    close();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

Eigen::VectorXd ChunkExecutor::tick(const Observation& observation) {
  check(impl_ != nullptr, kWhat, "tick() on a moved-from executor");
  return impl_->tick(observation);
}

Eigen::VectorXd ChunkExecutor::tick(const std::vector<torch::Tensor>& images, const std::string& instruction,
                                    const std::vector<double>& proprio) {
  return tick(Observation{images, instruction, proprio});
}

bool ChunkExecutor::wait_for_inference(double timeout_seconds) const {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  return impl_->changed.wait_for(lock, std::chrono::duration<double>(std::max(0.0, timeout_seconds)),
                                 [&] { return !impl_->in_flight || impl_->landed.has_value(); });
}

bool ChunkExecutor::inference_in_flight() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->in_flight && !impl_->landed.has_value();
}

ExecutorMetrics ChunkExecutor::metrics() const {
  ExecutorMetrics m;
  std::vector<double> latency, jitter;
  double staleness_sum_ms = 0, staleness_sum_ticks = 0;
  {
    std::lock_guard<std::mutex> lock(impl_->metrics_mutex);
    m = impl_->totals;
    latency = impl_->latency.values();
    jitter = impl_->jitter.values();
    staleness_sum_ms = impl_->staleness_sum_ms;
    staleness_sum_ticks = impl_->staleness_sum_ticks;
  }
  m.inference_p50_ms = percentile(latency, 50);
  m.inference_p99_ms = percentile(latency, 99);
  m.jitter_p50_ms = percentile(jitter, 50);
  m.jitter_p99_ms = percentile(jitter, 99);
  if (m.inferences == 0) m.inference_max_ms = kNaN;
  if (m.ticks < 2) m.jitter_max_ms = kNaN;
  if (m.ticks == 0) {
    m.staleness_mean_ms = m.staleness_max_ms = m.staleness_mean_ticks = kNaN;
  } else {
    m.staleness_mean_ms = staleness_sum_ms / static_cast<double>(m.ticks);
    m.staleness_mean_ticks = staleness_sum_ticks / static_cast<double>(m.ticks);
  }
  return m;
}

TickReport ChunkExecutor::last_tick() const {
  std::lock_guard<std::mutex> lock(impl_->metrics_mutex);
  return impl_->report;
}

const ExecutorOptions& ChunkExecutor::options() const { return impl_->options; }

void ChunkExecutor::close() noexcept {
  if (impl_) impl_->close();
}

std::string format_metrics(const ExecutorMetrics& m) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(1);
  out << "ticks " << m.ticks << ", inferences " << m.inferences << " (" << m.failed_inferences << " failed), "
      << "deadline misses " << m.deadline_misses << " (held " << m.held_ticks << "), dropped stale steps "
      << m.dropped_steps << ", overlapping steps merged " << m.merged_steps << "\n"
      << "inference latency p50 " << m.inference_p50_ms << " ms, p99 " << m.inference_p99_ms << " ms, max "
      << m.inference_max_ms << " ms\n"
      << "tick jitter |interval - period| p50 " << m.jitter_p50_ms << " ms, p99 " << m.jitter_p99_ms << " ms, max "
      << m.jitter_max_ms << " ms\n"
      << "staleness of executed actions mean " << m.staleness_mean_ms << " ms (" << m.staleness_mean_ticks
      << " ticks), max " << m.staleness_max_ms << " ms (" << m.staleness_max_ticks << " ticks)";
  return out.str();
}

}  // namespace focusvla::runtime
