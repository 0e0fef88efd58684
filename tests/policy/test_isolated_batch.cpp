// policy/isolated_batch.h: one bad observation fails only itself, with a scripted stand-in for
// Policy::act_batch (it throws for a batch holding an observation whose instruction is "bad").

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/policy/isolated_batch.h"

namespace focusvla {
namespace {

// Call sizes are recorded; each observation's actions are its instruction's number.
struct Scripted {
  std::vector<size_t> calls;
  size_t extra = 0;  // chunks returned beyond the batch's size (a broken runner)
  RunBatchFn fn() {
    return [this](const std::vector<Observation>& batch) {
      calls.push_back(batch.size());
      std::vector<ActionChunk> out;
      for (const auto& obs : batch) {
        if (obs.instruction == "bad") throw Error("instruction: bad is not a task");
        ActionChunk chunk;
        chunk.actions = ActionChunk::Matrix::Constant(8, 7, std::stod(obs.instruction));
        out.push_back(std::move(chunk));
      }
      for (size_t i = 0; i < extra; ++i) out.push_back(ActionChunk{});
      return out;
    };
  }
};

std::vector<Observation> observations(const std::vector<std::string>& instructions) {
  std::vector<Observation> out;
  for (const auto& text : instructions) {
    Observation obs;
    obs.instruction = text;
    out.push_back(obs);
  }
  return out;
}

TEST(IsolatedBatch, AGoodBatchRunsOnce) {
  Scripted run;
  const auto outcomes = run_isolated(observations({"1", "2", "3"}), run.fn());
  EXPECT_EQ(run.calls, std::vector<size_t>({3}));
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(outcomes[i].chunk);
    EXPECT_EQ(outcomes[i].chunk->actions(7, 6), static_cast<double>(i + 1));
    EXPECT_EQ(outcomes[i].batch_size, 3);
    EXPECT_TRUE(outcomes[i].error.empty());
  }
}

TEST(IsolatedBatch, ABadObservationFailsOnlyItself) {
  Scripted run;
  const auto outcomes = run_isolated(observations({"1", "bad", "3", "4"}), run.fn(),
                                     [](size_t i) { return i == 3; });  // 4's client left meanwhile
  EXPECT_EQ(run.calls, std::vector<size_t>({4, 1, 1, 1}));  // the batch, then 1, bad and 3 alone
  ASSERT_TRUE(outcomes[0].chunk && outcomes[2].chunk);
  EXPECT_EQ(outcomes[0].chunk->actions(0, 0), 1.0);
  EXPECT_EQ(outcomes[2].chunk->actions(0, 0), 3.0);
  EXPECT_EQ(outcomes[0].batch_size, 1);
  EXPECT_FALSE(outcomes[1].chunk);
  EXPECT_NE(outcomes[1].error.find("bad is not a task"), std::string::npos) << outcomes[1].error;
  EXPECT_TRUE(outcomes[3].skipped && !outcomes[3].chunk && outcomes[3].error.empty());
}

TEST(IsolatedBatch, ABatchOfOneIsNotRunTwice) {
  Scripted run;
  const auto outcomes = run_isolated(observations({"bad"}), run.fn());
  EXPECT_EQ(run.calls, std::vector<size_t>({1}));
  EXPECT_FALSE(outcomes[0].chunk);
  EXPECT_EQ(outcomes[0].batch_size, 1);
  EXPECT_TRUE(run_isolated({}, run.fn()).empty());
}

TEST(IsolatedBatch, AWrongResultCountIsAnError) {
  Scripted run;
  run.extra = 1;
  const auto outcomes = run_isolated(observations({"1", "2"}), run.fn());
  EXPECT_EQ(run.calls, std::vector<size_t>({2, 1, 1}));
  for (const auto& o : outcomes) {
    EXPECT_FALSE(o.chunk);
    EXPECT_NE(o.error.find("returned 2 results for 1 observations"), std::string::npos) << o.error;
  }
}

}  // namespace
}  // namespace focusvla
