// The dynamic batcher with a stand-in policy (RunBatch) whose actions name the observation they
// came from: every request gets exactly its own result, batches respect max_batch and form under
// concurrency, a failing observation does not fail its batch mates, stop() drains.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "focusvla/serve/batcher.h"
#include "test_util.h"

namespace focusvla::serve {
namespace {

// A policy stand-in: each observation's instruction is a number; its actions are that number.
// "fail" makes the whole batch throw, as Policy::act_batch does for one bad observation.
struct FakePolicy {
  std::mutex mutex;
  std::vector<size_t> batch_sizes;
  std::chrono::milliseconds work{2};

  Batcher::RunBatch runner() {
    return [this](const std::vector<Observation>& batch) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        batch_sizes.push_back(batch.size());
      }
      std::this_thread::sleep_for(work);
      std::vector<ActionChunk> out;
      for (const auto& obs : batch) {
        if (obs.instruction == "fail") throw Error("instruction: too long for the model");
        ActionChunk chunk;
        chunk.actions = ActionChunk::Matrix::Constant(8, 7, std::stod(obs.instruction));
        out.push_back(std::move(chunk));
      }
      return out;
    };
  }
};

Observation numbered(int i) {
  Observation obs;
  obs.instruction = std::to_string(i);
  return obs;
}

TEST(Batcher, ConcurrentRequestsGetTheirOwnResults) {
  FakePolicy policy;
  Batcher batcher(policy.runner(), BatcherOptions{4, std::chrono::milliseconds(5)});
  constexpr int kThreads = 12, kEach = 40;
  std::atomic<int> wrong{0}, done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int r = 0; r < kEach; ++r) {
        const int id = t * 1000 + r;
        std::promise<BatchResult> promise;
        batcher.submit(numbered(id), [&promise](BatchResult result) { promise.set_value(std::move(result)); });
        const BatchResult result = promise.get_future().get();
        if (!result.chunk || (*result.chunk).actions(0, 0) != id || result.batch_size < 1 || result.batch_size > 4)
          ++wrong;
        ++done;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(done.load(), kThreads * kEach);
  EXPECT_EQ(wrong.load(), 0);
  size_t total = 0, largest = 0;
  for (size_t n : policy.batch_sizes) {
    total += n;
    largest = std::max(largest, n);
  }
  EXPECT_EQ(total, static_cast<size_t>(kThreads * kEach));  // none lost, none run twice
  EXPECT_LE(largest, 4u);  // that batches fill: AFullQueueLeavesAtOnceAsOneBatch, without timing
}

// Deterministic, with no timing: the first batch holds the worker until four more requests are
// queued, so the next batch must take exactly max_batch of them at once, started by "full".
TEST(Batcher, AFullQueueLeavesAtOnceAsOneBatch) {
  FakePolicy policy;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  const auto inner = policy.runner();
  Batcher batcher([&](const std::vector<Observation>& batch) {
    if (batch.front().instruction == "0") released.wait();
    return inner(batch);
  }, BatcherOptions{4, std::chrono::seconds(3600)});
  std::vector<std::promise<BatchResult>> promises(6);
  const auto submit = [&](int i) {
    batcher.submit(numbered(i), [&promises, i](BatchResult r) { promises[i].set_value(std::move(r)); });
  };
  for (int i = 0; i <= 5; ++i) submit(i);  // 0 waits (an hour) for a full batch: 0..3 leave together
  release.set_value();
  const BatchResult first = promises[0].get_future().get();
  EXPECT_EQ(first.batch_size, 4);  // 0..3 left together when 3 was queued: full
  EXPECT_EQ(first.started_by, BatchStart::kFull);
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(promises[i].get_future().get().batch_size, 4);
  batcher.stop();  // 4 and 5 were queued behind: stop() runs them without waiting the hour
  const BatchResult rest = promises[4].get_future().get();
  EXPECT_EQ(rest.batch_size, 2);
  EXPECT_EQ(rest.started_by, BatchStart::kStopping);
  ASSERT_TRUE(promises[5].get_future().get().chunk);
}

TEST(Batcher, MaxBatchOneRunsEachAlone) {
  FakePolicy policy;
  Batcher batcher(policy.runner(), BatcherOptions{1, std::chrono::milliseconds(5)});
  std::vector<std::future<BatchResult>> futures;
  std::vector<std::shared_ptr<std::promise<BatchResult>>> promises;
  for (int i = 0; i < 20; ++i) {
    promises.push_back(std::make_shared<std::promise<BatchResult>>());
    futures.push_back(promises.back()->get_future());
    batcher.submit(numbered(i), [p = promises.back()](BatchResult r) { p->set_value(std::move(r)); });
  }
  for (int i = 0; i < 20; ++i) {
    const BatchResult r = futures[i].get();
    ASSERT_TRUE(r.chunk);
    EXPECT_EQ(r.chunk->actions(7, 6), i);
    EXPECT_EQ(r.batch_size, 1);
  }
  for (size_t n : policy.batch_sizes) EXPECT_EQ(n, 1u);
}

TEST(Batcher, ALoneRequestWaitsMaxWaitUnlessNoPeerCanJoin) {
  FakePolicy policy;
  {
    Batcher batcher(policy.runner(), BatcherOptions{8, std::chrono::milliseconds(60)});
    std::promise<BatchResult> p;
    batcher.submit(numbered(1), [&p](BatchResult r) { p.set_value(std::move(r)); });
    const BatchResult r = p.get_future().get();
    EXPECT_GE(r.queue_ms, 59.0);  // a lower bound: the wait cannot end before its deadline
    EXPECT_EQ(r.started_by, BatchStart::kWaited);
  }
  {
    // The only connection's request is the only one that can come: it leaves because no peer can
    // join (had it waited, it would be an hour and say kWaited).
    BatcherOptions options{8, std::chrono::seconds(3600), [] { return size_t{1}; }};
    Batcher batcher(policy.runner(), options);
    std::promise<BatchResult> p;
    batcher.submit(numbered(2), [&p](BatchResult r) { p.set_value(std::move(r)); });
    const BatchResult r = p.get_future().get();
    EXPECT_EQ(r.started_by, BatchStart::kNoPeers);
    ASSERT_TRUE(r.chunk);
  }
}

TEST(Batcher, AFailingObservationFailsOnlyItself) {
  FakePolicy policy;
  policy.work = std::chrono::milliseconds(0);
  // Everything is queued before the worker may take it: one batch of 5 with one bad observation.
  Batcher batcher(policy.runner(), BatcherOptions{5, std::chrono::seconds(10), [] { return size_t{5}; }});
  std::vector<std::shared_ptr<std::promise<BatchResult>>> promises;
  for (int i = 0; i < 5; ++i) {
    promises.push_back(std::make_shared<std::promise<BatchResult>>());
    Observation obs = i == 2 ? Observation{} : numbered(i);
    if (i == 2) obs.instruction = "fail";
    batcher.submit(std::move(obs), [p = promises.back()](BatchResult r) { p->set_value(std::move(r)); });
  }
  for (int i = 0; i < 5; ++i) {
    const BatchResult r = promises[i]->get_future().get();
    if (i == 2) {
      EXPECT_FALSE(r.chunk);
      EXPECT_NE(r.error.find("too long"), std::string::npos) << r.error;
    } else {
      ASSERT_TRUE(r.chunk) << i << ": " << r.error;
      EXPECT_EQ(r.chunk->actions(0, 0), i);
    }
  }
  ASSERT_GE(policy.batch_sizes.size(), 6u);
  EXPECT_EQ(policy.batch_sizes[0], 5u);  // the batch, then each alone
}

TEST(Batcher, StopRunsWhatIsQueuedThenRefuses) {
  FakePolicy policy;
  std::atomic<int> delivered{0};
  Batcher batcher(policy.runner(), BatcherOptions{2, std::chrono::milliseconds(50)});
  for (int i = 0; i < 7; ++i)
    batcher.submit(numbered(i), [&delivered](BatchResult r) {
      if (r.chunk) ++delivered;
    });
  batcher.stop();
  EXPECT_EQ(delivered.load(), 7);
  EXPECT_EQ(batcher.pending(), 0u);
  testing::expect_error([&] { batcher.submit(numbered(9), [](BatchResult) {}); }, {"shutting down"});
  batcher.stop();  // idempotent
}

TEST(Batcher, AThrowingCallbackDoesNotStopTheWorker) {
  FakePolicy policy;
  Batcher batcher(policy.runner(), BatcherOptions{1, std::chrono::milliseconds(0)});
  batcher.submit(numbered(1), [](BatchResult) { throw std::runtime_error("client gone"); });
  std::promise<BatchResult> p;
  batcher.submit(numbered(2), [&p](BatchResult r) { p.set_value(std::move(r)); });
  const BatchResult r = p.get_future().get();
  ASSERT_TRUE(r.chunk);
  EXPECT_EQ(r.chunk->actions(0, 0), 2);
}

TEST(Batcher, RejectsBadOptions) {
  FakePolicy policy;
  testing::expect_error([&] { Batcher(policy.runner(), BatcherOptions{0, std::chrono::milliseconds(1)}); },
                        {"max_batch"});
}

}  // namespace
}  // namespace focusvla::serve
