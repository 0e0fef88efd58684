#pragma once
// One bad observation fails only itself: the one batch-failure fallback of every front end that
// batches (the server's batcher, Python's act_batch(isolate_errors=True), which the Ray app and
// the vla-eval server use). Policy::act_batch fails the whole forward when one observation is
// bad (a wrong camera count, an over-long prompt, ...); run_isolated then runs each alone.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "focusvla/policy/policy.h"

namespace focusvla {

// One observation's result.
struct ActOutcome {
  std::optional<ActionChunk> chunk;  // set on success
  std::string error;                 // set on failure
  int batch_size = 0;                // observations in the forward that produced it (1 after a batch failed)
  double infer_ms = 0;               // that forward's wall time
  bool skipped = false;              // not run: skip(i) asked so (no chunk, no error)
};

using RunBatchFn = std::function<std::vector<ActionChunk>(const std::vector<Observation>&)>;

// `run` on the whole batch (Policy::act_batch, or a stand-in); when it throws or returns the wrong
// number of chunks, each observation runs alone, after `skip(i)` (optional: e.g. "its client is
// gone") is asked whether to run it at all. A batch of one is not run twice.
std::vector<ActOutcome> run_isolated(const std::vector<Observation>& batch, const RunBatchFn& run,
                                     const std::function<bool(size_t)>& skip = {});

}  // namespace focusvla
