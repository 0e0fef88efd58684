#include "focusvla/policy/isolated_batch.h"

#include <chrono>
#include <exception>
#include <utility>

#include "focusvla/core/log.h"

namespace focusvla {
namespace {

// `run` on some observations: their chunks, or the error that failed them all; `ms` its wall time.
std::string attempt(const RunBatchFn& run, const std::vector<Observation>& observations,
                    std::vector<ActionChunk>& chunks, double& ms) {
  const auto start = std::chrono::steady_clock::now();
  std::string error;
  try {
    chunks = run(observations);
    if (chunks.size() != observations.size())
      error = "the policy returned " + std::to_string(chunks.size()) + " results for " +
              std::to_string(observations.size()) + " observations";
  } catch (const std::exception& e) {
    error = e.what();
  }
  ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return error;
}

}  // namespace

std::vector<ActOutcome> run_isolated(const std::vector<Observation>& batch, const RunBatchFn& run,
                                     const std::function<bool(size_t)>& skip) {
  std::vector<ActOutcome> outcomes(batch.size());
  if (batch.empty()) return outcomes;
  std::vector<ActionChunk> chunks;
  double ms = 0;
  const std::string error = attempt(run, batch, chunks, ms);
  if (error.empty() || batch.size() == 1) {
    for (size_t i = 0; i < batch.size(); ++i) {
      outcomes[i].batch_size = static_cast<int>(batch.size());
      outcomes[i].infer_ms = ms;
      if (error.empty())
        outcomes[i].chunk = std::move(chunks[i]);
      else
        outcomes[i].error = error;
    }
    return outcomes;
  }
  log_debug("a batch of " + std::to_string(batch.size()) + " failed (" + error + "); running it one by one");
  for (size_t i = 0; i < batch.size(); ++i) {
    ActOutcome& outcome = outcomes[i];
    if (skip && skip(i)) {
      outcome.skipped = true;
      continue;
    }
    std::vector<ActionChunk> one;
    const std::string alone = attempt(run, {batch[i]}, one, outcome.infer_ms);
    outcome.batch_size = 1;
    if (alone.empty())
      outcome.chunk = std::move(one[0]);
    else
      outcome.error = alone;
  }
  return outcomes;
}

}  // namespace focusvla
