#pragma once
// Dynamic batching for the policy server: requests submitted from any thread that arrive within
// `max_wait` of the first one waiting form one batch of up to `max_batch`, run by one worker
// thread (one forward at a time, as Policy serializes them anyway). Under load the queue fills
// while a batch runs, so the next batch leaves at once with up to max_batch requests.
//
// Each request gets exactly its own result: the worker hands result i of a batch to request i's
// callback. When a batch fails (an observation the decoder could not foresee, e.g. a prompt past
// the position limit), its requests are rerun one by one so only the bad one gets the error.
// A request whose client is gone (its `cancelled` says so) is answered with an error instead of
// being run, and cancel_queued() answers everything still queued (a server stopping for good).

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "focusvla/policy/isolated_batch.h"
#include "focusvla/policy/policy.h"

namespace focusvla::serve {

struct BatcherOptions {
  int max_batch = 8;                         // 1: no batching
  std::chrono::microseconds max_wait{2000};  // from the first waiting request
  // Optional: how many requests could be waiting at most right now (the server: its open
  // connections, each with at most one request in flight). When that many are queued nobody
  // else can join, so the batch leaves without waiting out max_wait (a lone robot pays no wait).
  std::function<size_t()> peers;
};

// Why a batch left the queue when it did.
enum class BatchStart {
  kFull,      // max_batch requests were queued
  kNoPeers,   // every possible requester (BatcherOptions::peers) had one queued
  kWaited,    // max_wait passed since the first of them arrived
  kStopping,  // stop() runs what is queued
};

// What a request's callback receives.
struct BatchResult {
  std::optional<ActionChunk> chunk;  // set on success
  std::string error;                 // set on failure
  int batch_size = 0;                // observations in the forward that ran it
  double queue_ms = 0;               // submit -> its batch started
  double infer_ms = 0;               // the batch's forward (wall time)
  BatchStart started_by = BatchStart::kWaited;
};

class Batcher {
 public:
  using RunBatch = RunBatchFn;  // Policy::act_batch's shape (policy/isolated_batch.h)
  using Done = std::function<void(BatchResult)>;
  using Cancelled = std::function<bool()>;  // true: nobody waits for the result any more

  // `run` is called from the worker thread only (Policy::act_batch in the server).
  Batcher(RunBatch run, BatcherOptions options);
  ~Batcher();  // stop()
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues one observation; `done` is called once, from the worker thread (or from the thread of
  // cancel_queued()). `cancelled` (optional, any thread) is asked before the request runs. Throws
  // Error after stop() began.
  void submit(Observation observation, Done done, Cancelled cancelled = {});
  // Answers every queued request with `reason` as its error, without running it; the batch
  // running now finishes. Returns how many were cancelled. Any thread.
  size_t cancel_queued(const std::string& reason);
  // Runs everything queued, then joins the worker. Idempotent.
  void stop();

  // Requests queued or running.
  size_t pending() const;
  // Requests answered without running: their client was gone, or cancel_queued().
  uint64_t cancelled() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Request {
    Observation observation;
    Done done;
    Cancelled cancelled;
    Clock::time_point submitted;
  };

  struct Batch {
    std::vector<Request> requests;
    BatchStart started_by = BatchStart::kWaited;
  };

  void loop();
  Batch next_batch();
  void run_batch(std::vector<Request>& batch, BatchStart started_by);
  std::vector<Request> drop_cancelled(std::vector<Request> batch);
  void answer_cancelled(Request& request);

  RunBatch run_;
  BatcherOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Request> queue_;
  size_t running_ = 0;
  uint64_t cancelled_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace focusvla::serve
