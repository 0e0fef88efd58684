#pragma once
// Where a policy looks, and whether it uses vision at all (`focusvla explain`).
//
// The FocusVLA paper (SPEC 9.2; shared docs) finds that VLA-Adapter-style heads take a shortcut:
// they draw their action signal from the learnable action queries and largely bypass the visual
// tokens (a near-zero scalar gate, attention scattered over the background), and recommends a
// diagnostic to every team: disable the visual input and measure how much the actions change.
// explain() does that for one observation, and shows where the head looks:
//
//   auto e = focusvla::explain(policy, {{agentview, wrist}, "put the bowl on the plate", proprio});
//   e.kept->cameras[0].at(row, col)   // FocusVLA: share of selections that kept this patch
//   e.verdict.line                    // "uses vision: ..." / "weak ..." / "no visual dependence ..."
//
// It is built on the named intermediates of one act (Policy::act_traced with a Tap) and, for the
// ablations that change an intermediate, on the interventions of core/tap.h: the same forward as
// act(), never a second implementation.
//
// Patch maps. The head's visual states are the decoder's hidden states at positions 0 .. Nv-1
// (SPEC 8: one position before each token), and the state at position j is the output at the
// token in that position: t_0 (the prompt's first token) for j = 0, visual token j - 1 for j >= 1
// (with layer-0 values, value_source "embeddings", the head reads exactly that token's projector
// output). So head position j >= 1 is patch p = (j - 1) mod 256 of camera (j - 1) / 256 (16 x 16
// patches per camera, row-major: row p / 16, column p % 16); position 0 is reported apart
// (`prompt_token`), and the last patch of the last camera, whose state sits at position Nv, is
// never read by the head (its cell is 0). The grid covers what the encoders saw: with the center
// crop, the central sqrt(0.9) of each side of the image (`view_fraction`).
//
//   kept       FocusVLA with top-K (patch-level focus): per block, the share of (head, action
//              step) rows whose top-K kept the position (K / Nv on average; 1 = always kept),
//              then the mean over blocks.
//   attention  the softmax attention mass the position receives, mean over blocks, heads and
//              action steps: of the one softmax over all sources (VLA-Adapter, Pro, FocusVLA
//              "mixed"; sums to the visual share), or of the visual branch's own softmax (FocusVLA
//              "cascaded"; sums to 1).
//
// Gates (channel-level focus). Per block: the element gate sigmoid(gate(A)) (FocusVLA "element",
// (T, D) values) or head gate ("head", (T, heads)): mean, share below 0.1, share above 0.9; the
// scalar visual gate tanh(g) of VLA-Adapter / Pro blocks and FocusVLA "scalar". Note that tanh(g)
// = 0 does not switch the visual tokens off in a head with one softmax: it makes their logits 0,
// so every patch gets the same weight and their (averaged) values still flow.
//
// Attention mass per source (heads with one softmax over all sources), per block: the share of
// the softmax on self (the T action latents), the action queries (Q), the proprio token (p) and
// the visual tokens, mean over heads and action steps (they sum to 1).
//
// The reliance test: the chunk with one input ablated, against the normal chunk, as a distance
// in units of the dataset's action range: |a_ablated - a| / (q99 - q01) per entry, which is
// |n_ablated - n| / 2 on the head's normalized output n (SPEC 10; the same for dimensions that
// are not normalized, whose range is [-1, 1]); `mean_distance` is its mean over the chunk,
// `max_distance` its maximum. Ablations, in this order:
//   gray_cameras           every camera a constant gray image (ExplainOptions::gray) of its size
//   visual_tokens_zeroed   the projector output zeroed before it enters the sequence
//   cameras_swapped        the cameras in reverse order (two cameras: swapped); 2+ cameras only
//   head_visual_zeroed     the head's visual states (every layer, the shallow values included)
//                          zeroed; the action queries keep what the decoder gave them
//   action_queries_zeroed  the head's action-query states zeroed (the proprio token is kept)
// The first three change what the decoder sees, so they also reach the action queries (which
// attend to the visual tokens in the decoder); head_visual_zeroed removes only the head's own
// visual path, as the paper's queries-only variant, and is what the verdict rests on, with
// v = its mean distance and q = action_queries_zeroed's:
//   "insensitive"  v and q both below 0.01% of the range (kInsensitiveBelow): the actions barely
//                  respond to the head's conditioning at all (an untrained or collapsed head, such
//                  as the demo's N(0, 0.02) random weights); nothing to conclude about vision
//   "none"         v below 1% of q (kNoVisualRatio), or below 0.01% of the range: the head does
//                  not use its visual tokens (exactly 0 when its visual branch is switched off)
//   "weak"         v below a quarter of q (kShortcutRatio): a shortcut through the action queries
//   "uses-vision"  otherwise
// On a trained policy read the numbers, not only the word.

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "focusvla/policy/policy.h"

namespace focusvla {

struct ExplainOptions {
  bool reliance = true;    // run the reliance test (one more act per ablation)
  bool per_block = false;  // also keep the patch maps of every block
  uint8_t gray = 128;      // the gray of the gray_cameras ablation
};

// One camera's patch grid, row-major.
struct PatchGrid {
  int64_t rows = 0, cols = 0;
  std::vector<double> values;  // rows * cols
  double at(int64_t row, int64_t col) const { return values.at(static_cast<size_t>(row * cols + col)); }
  double sum() const;
};

// A value per head visual position, and the same on each camera's patch grid.
struct PatchMap {
  std::string kind;               // "kept" or "attention"
  std::vector<double> positions;  // Nv: the value of each head visual position
  std::vector<PatchGrid> cameras;
  double prompt_token = 0;        // positions[0]: t_0, not a patch
};

struct GateStats {
  std::string kind;  // "element" or "head"
  double mean = 0, below_0_1 = 0, above_0_9 = 0;
  int64_t values = 0;
};

// Shares of one softmax over all sources (sum 1).
struct SourceMass {
  double self = 0, action_queries = 0, proprio = 0, visual = 0;
};

struct Ablation {
  std::string name, description;
  ActionChunk::Matrix actions;     // un-normalized
  ActionChunk::Matrix normalized;  // the head's output
  double mean_distance = 0, max_distance = 0;  // in units of the action range (see above)
};

struct Verdict {
  std::string level;  // "insensitive", "none", "weak", "uses-vision", or "not-run" (ExplainOptions::reliance off)
  std::string line;   // one sentence with the numbers
};

// The verdict thresholds (see above).
constexpr double kInsensitiveBelow = 1e-4;
constexpr double kNoVisualRatio = 0.01;
constexpr double kShortcutRatio = 0.25;
// Below this (1% of the range) for both v and q, the verdict line adds that the actions respond
// little to the head's conditioning at all (the demo's random weights: 0.06%).
constexpr double kWeakResponseBelow = 0.01;

struct Explanation {
  std::string head;  // PolicySettings::head
  int64_t cameras = 0, blocks = 0, heads = 0, chunk = 0;
  int64_t visual_positions = 0, query_positions = 0;  // Nv, Nq of the head's inputs
  int64_t grid_rows = 0, grid_cols = 0;               // per camera
  double view_fraction = 1;  // share of each image side the grid covers (center crop: sqrt(0.9))
  ActionChunk actions;       // the normal act

  std::optional<PatchMap> kept;       // FocusVLA with top-K
  std::optional<PatchMap> attention;  // every head but FocusVLA "cascaded" without a visual softmax tap
  std::vector<PatchMap> kept_per_block, attention_per_block;  // ExplainOptions::per_block
  std::vector<GateStats> gates;           // per block: FocusVLA element / head gate
  std::vector<double> scalar_gates;       // per block: tanh(g)
  std::vector<SourceMass> source_mass;    // per block: heads with one softmax over all sources
  std::vector<Ablation> ablations;        // ExplainOptions::reliance
  Verdict verdict;

  const Ablation* ablation(const std::string& name) const;  // nullptr when not run
};

// One explained act of `observation`. Throws Error as Policy::act does for a bad observation.
Explanation explain(const Policy& policy, const Observation& observation, const ExplainOptions& options = {});

// The verdict of a set of ablations (the rule above).
Verdict reliance_verdict(const std::vector<Ablation>& ablations);

// Everything as JSON (`focusvla explain` writes it as explain.json; Python's Policy.explain
// returns it as a dict): grids as [rows][cols] arrays, ablations with their actions.
nlohmann::json explanation_json(const Explanation& explanation);

}  // namespace focusvla
