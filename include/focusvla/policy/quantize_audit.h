#pragma once
// Does quantization move where the policy looks? (`focusvla explain --compare-quantize int8`,
// Python `Policy.compare_quantize`.) One observation through an unquantized policy and a quantized
// one of the same checkpoint; per head block:
//
//   kept       FocusVLA with top-K (patch-level focus): the overlap of the kept visual positions,
//              Jaccard |A n B| / |A u B| of the two top-K sets of each (head, action step) row;
//              mean and minimum over the rows. 1 = the same patches kept.
//   gate       FocusVLA's channel-level focus (element / head gate values, or the scalar tanh(g)):
//              the mean and the largest |g_quantized - g| over the gate's values.
//
// and the actions: the distance of the quantized chunk from the unquantized one in units of the
// dataset's action range, as explain's reliance test measures it (|n_q - n| / 2 on the head's
// normalized output; explain.h).
//
// Both runs are ordinary traced acts (Policy::act_traced), so the audit sees exactly what act()
// computes.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "focusvla/policy/policy.h"

namespace focusvla {

struct BlockFocusChange {
  int64_t block = 0;
  bool has_kept = false;  // the block keeps a top-K (FocusVLA with patch-level focus)
  double kept_jaccard_mean = 0, kept_jaccard_min = 0;
  bool has_gate = false;  // the block has a gate (FocusVLA element / head / scalar; Pro's tanh(g))
  double gate_mean_abs_change = 0, gate_max_abs_change = 0;
};

struct QuantizeAudit {
  std::string reference_quantize, quantized_quantize;  // PolicySettings::quantize of each
  std::vector<BlockFocusChange> blocks;
  double kept_jaccard_mean = 0;  // over the blocks with a top-K (1 when none has one)
  double kept_jaccard_min = 1;
  double action_mean_distance = 0, action_max_distance = 0;  // in units of the action range
  ActionChunk reference, quantized;
};

// Throws Error when the two policies differ in head, cameras or chunk shape, or as act() does
// for a bad observation.
QuantizeAudit audit_quantization(const Policy& reference, const Policy& quantized, const Observation& observation);

// {"reference_quantize", "quantized_quantize", "kept_jaccard_mean", "kept_jaccard_min",
//  "action_mean_distance", "action_max_distance", "blocks": [{"block", "kept_jaccard_mean",
//  "kept_jaccard_min", "gate_mean_abs_change", "gate_max_abs_change"} (null where absent)],
//  "reference_actions", "quantized_actions"}
nlohmann::json audit_json(const QuantizeAudit& audit);

}  // namespace focusvla
