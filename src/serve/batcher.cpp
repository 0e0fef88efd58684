#include "focusvla/serve/batcher.h"

#include <algorithm>
#include <exception>
#include <optional>
#include <utility>

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"

namespace focusvla::serve {
namespace {

double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A callback that throws must not take the worker down.
void deliver(const Batcher::Done& done, BatchResult result) {
  try {
    done(std::move(result));
  } catch (const std::exception& e) {
    log_warn(std::string("serve: a request's completion failed: ") + e.what());
  }
}

}  // namespace

Batcher::Batcher(RunBatch run, BatcherOptions options) : run_(std::move(run)), options_(options) {
  check(options_.max_batch >= 1, "Batcher", "max_batch must be at least 1");
  check(options_.max_wait.count() >= 0, "Batcher", "max_wait must not be negative");
  worker_ = std::thread([this] { loop(); });
}

Batcher::~Batcher() { stop(); }

void Batcher::submit(Observation observation, Done done, Cancelled cancelled) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    check(!stopping_, "serve", "the server is shutting down");
    queue_.push_back(Request{std::move(observation), std::move(done), std::move(cancelled), Clock::now()});
  }
  wake_.notify_one();
}

size_t Batcher::cancel_queued(const std::string& reason) {
  std::deque<Request> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    dropped.swap(queue_);
    cancelled_ += dropped.size();
  }
  for (auto& r : dropped) {
    BatchResult result;
    result.error = reason;
    result.queue_ms = ms_between(r.submitted, Clock::now());
    deliver(r.done, std::move(result));
  }
  return dropped.size();
}

uint64_t Batcher::cancelled() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cancelled_;
}

// The requests of a batch whose client is still there; the others are answered at once.
std::vector<Batcher::Request> Batcher::drop_cancelled(std::vector<Request> batch) {
  std::vector<Request> keep;
  keep.reserve(batch.size());
  for (auto& r : batch) {
    if (!r.cancelled || !r.cancelled())
      keep.push_back(std::move(r));
    else
      answer_cancelled(r);
  }
  return keep;
}

void Batcher::answer_cancelled(Request& r) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++cancelled_;
  }
  BatchResult result;
  result.error = "cancelled: the client is gone";
  result.queue_ms = ms_between(r.submitted, Clock::now());
  deliver(r.done, std::move(result));
}

void Batcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (worker_.joinable()) worker_.join();
}

size_t Batcher::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size() + running_;
}

// Waits for a first request, then until max_batch are queued or max_wait has passed since the
// first arrived (at once when it has already waited that long, e.g. behind a running batch).
// Empty only when stopping with nothing queued.
Batcher::Batch Batcher::next_batch() {
  std::unique_lock<std::mutex> lock(mutex_);
  wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
  if (queue_.empty()) return {};
  const auto deadline = queue_.front().submitted + options_.max_wait;
  const auto max_batch = static_cast<size_t>(options_.max_batch);
  const auto why_now = [&]() -> std::optional<BatchStart> {
    if (queue_.size() >= max_batch) return BatchStart::kFull;
    if (options_.peers && queue_.size() >= options_.peers()) return BatchStart::kNoPeers;
    if (stopping_) return BatchStart::kStopping;
    return std::nullopt;
  };
  std::optional<BatchStart> why;
  wake_.wait_until(lock, deadline, [&] { return (why = why_now()).has_value(); });
  Batch batch;
  batch.started_by = why.value_or(BatchStart::kWaited);
  const size_t take = std::min(queue_.size(), max_batch);
  batch.requests.reserve(take);
  for (size_t i = 0; i < take; ++i) {
    batch.requests.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  running_ = take;
  return batch;
}

void Batcher::loop() {
  for (;;) {
    Batch batch = next_batch();
    if (batch.requests.empty()) return;
    batch.requests = drop_cancelled(std::move(batch.requests));
    if (!batch.requests.empty()) run_batch(batch.requests, batch.started_by);
    std::lock_guard<std::mutex> lock(mutex_);
    running_ = 0;
  }
}

void Batcher::run_batch(std::vector<Request>& batch, BatchStart started_by) {
  const auto start = Clock::now();
  std::vector<Observation> observations;
  observations.reserve(batch.size());
  for (auto& r : batch) observations.push_back(std::move(r.observation));
  // One bad observation fails only itself (each runs alone, unless its client is gone by then).
  std::vector<ActOutcome> outcomes =
      run_isolated(observations, run_, [&batch](size_t i) { return batch[i].cancelled && batch[i].cancelled(); });
  for (size_t i = 0; i < batch.size(); ++i) {
    ActOutcome& outcome = outcomes[i];
    if (outcome.skipped) {
      answer_cancelled(batch[i]);
      continue;
    }
    BatchResult result;
    result.chunk = std::move(outcome.chunk);
    result.error = std::move(outcome.error);
    result.batch_size = outcome.batch_size;
    result.queue_ms = ms_between(batch[i].submitted, start);
    result.infer_ms = outcome.infer_ms;
    result.started_by = started_by;
    deliver(batch[i].done, std::move(result));
  }
}

}  // namespace focusvla::serve
