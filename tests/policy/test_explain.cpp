// focusvla::explain (policy/explain.h) against the Python reference (explain_oracle.py, written
// by gen_policy.py): the patch maps are the histograms of the reference head's kept indices and
// the means of its softmax weights, the attention masses per source and the gate statistics are
// the reference head's, every ablation's actions are the reference pipeline's with the same
// change, and the verdict separates checkpoints whose visual branch is switched off from normal
// ones. Plus Policy::act_traced: its tap and intervention touch that call only.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/io/json_file.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/policy/explain.h"
#include "focusvla/policy/policy.h"
#include "tensor_util.h"
#include "test_util.h"

namespace focusvla {
namespace {

using testing::data_path;
using testing::expect_error;

const io::StateDict& tensors() {
  static const io::StateDict state = io::StateDict::from_safetensors(data_path("policy", "tensors.safetensors"));
  return state;
}

nlohmann::json explain_case(const std::string& name) {
  static const nlohmann::json cases = io::read_json_file(data_path("policy", "explain_cases.json"));
  for (const auto& c : cases)
    if (c["name"] == name) return c;
  ADD_FAILURE() << "no explain case " << name;
  return {};
}

// The settings the oracle used: the reference's LIBERO evaluation (Qwen chat prompt, center crop).
Policy load(const nlohmann::json& c) {
  PolicyOptions o;
  o.unnorm_key = c["unnorm_key"];
  o.prompt_format = c["prompt_format"];
  o.center_crop = c["center_crop"];
  o.dtype = torch::kFloat32;
  return Policy::load(data_path("policy", c["checkpoint"]), o);
}

Observation observation(const nlohmann::json& c) {
  Observation obs;
  for (int i = 0; i < c["cameras"].get<int>(); ++i)
    obs.images.push_back(tensors().at(c["images"].get<std::string>() + ".image" + std::to_string(i)));
  obs.instruction = c["instruction"];
  obs.proprio = c["proprio"].get<std::vector<double>>();
  return obs;
}

torch::Tensor vec(const std::vector<double>& v) { return torch::tensor(v, torch::kFloat64); }
torch::Tensor vec(const nlohmann::json& j) { return vec(j.get<std::vector<double>>()); }
torch::Tensor mat(const ActionChunk::Matrix& m) {
  return torch::from_blob(const_cast<double*>(m.data()), {m.rows(), m.cols()}, torch::kFloat64).clone();
}
torch::Tensor mat(const nlohmann::json& rows) {
  std::vector<torch::Tensor> out;
  for (const auto& r : rows) out.push_back(vec(r));
  return torch::stack(out);
}
double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes() || !torch::isfinite(a).all().item<bool>()) return INFINITY;
  return (a - b).abs().max().item<double>();
}

// The map on the head's positions and on each camera's grid equals the oracle's.
void expect_map(const PatchMap& got, const nlohmann::json& want, double tolerance, const std::string& what) {
  const double positions = max_abs_diff(vec(got.positions), vec(want["positions"]));
  EXPECT_LE(positions, tolerance) << what;
  ASSERT_EQ(got.cameras.size(), want["grids"].size()) << what;
  double grids = 0;
  for (size_t c = 0; c < got.cameras.size(); ++c) {
    const PatchGrid& g = got.cameras[c];
    grids = std::max(grids, max_abs_diff(vec(g.values).view({g.rows, g.cols}), mat(want["grids"][c])));
  }
  EXPECT_LE(grids, tolerance) << what;
  EXPECT_EQ(got.prompt_token, got.positions.at(0)) << what;
  std::printf("  %-28s %-9s max |difference| positions %.2e, grids %.2e\n", what.c_str(), got.kind.c_str(), positions,
              grids);
}

// Patch-level focus: the kept map is the histogram of the reference head's kept indices (per block
// the share of (head, action step) rows that kept each position, then the mean over blocks), on
// the head's positions and, through the position -> patch mapping the oracle writes on its own,
// on each camera's 16 x 16 grid. Exact but for the order of a double sum (<= 1e-12 allowed).
TEST(ExplainMaps, KeptPatchMapIsTheHistogramOfTheReferenceKeptIndices) {
  const auto c = explain_case("explain_focus");
  ExplainOptions options;
  options.per_block = true;
  options.reliance = false;
  const Explanation e = explain(load(c), observation(c), options);
  ASSERT_TRUE(e.kept.has_value());
  EXPECT_EQ(e.head, "focusvla");
  EXPECT_EQ(e.grid_rows, 16);
  EXPECT_EQ(e.grid_cols, 16);
  EXPECT_EQ(e.visual_positions, c["visual_positions"].get<int64_t>());
  EXPECT_NEAR(e.view_fraction, std::sqrt(0.9), 1e-12);
  expect_map(*e.kept, c["kept"], 1e-12, "explain_focus");
  ASSERT_EQ(e.kept_per_block.size(), c["blocks"].size());
  for (size_t b = 0; b < e.kept_per_block.size(); ++b) {
    EXPECT_LE(max_abs_diff(vec(e.kept_per_block[b].positions), vec(c["blocks"][b]["kept_share"])), 1e-12) << b;
    double kept = 0;  // every row keeps top_k positions
    for (const double v : e.kept_per_block[b].positions) kept += v;
    EXPECT_NEAR(kept, 256.0, 1e-9) << "block " << b;
  }
  // The state of the last camera's last patch sits at position Nv, which the head never reads.
  EXPECT_EQ(e.kept->cameras.back().at(15, 15), 0.0);
  EXPECT_FALSE(e.gates.empty());
  EXPECT_TRUE(e.scalar_gates.empty());
  EXPECT_TRUE(e.source_mass.empty());  // cascaded: no softmax over all sources
  EXPECT_EQ(e.verdict.level, "not-run");
}

// The softmax attention mass of each patch and of each source equals the PyTorch head's weights
// on the same inputs (heads with one softmax over all sources; fp32, the pipeline is exact:
// <= 1e-9 allowed, summation order), and the cascaded FocusVLA head's visual softmax likewise.
TEST(ExplainMaps, AttentionMassesEqualThePytorchHead) {
  for (const std::string name : {"explain_pro", "explain_base", "explain_focus"}) {
    SCOPED_TRACE(name);
    const auto c = explain_case(name);
    ExplainOptions options;
    options.reliance = false;
    const Policy policy = load(c);
    const Explanation e = explain(policy, observation(c), options);
    ASSERT_TRUE(e.attention.has_value());
    expect_map(*e.attention, c["attention"], 1e-9, name);
    if (name == "explain_focus") continue;
    ASSERT_EQ(e.source_mass.size(), c["blocks"].size());
    const int64_t chunk = policy.chunk_size(), nq = e.query_positions, nv = e.visual_positions;
    for (size_t b = 0; b < e.source_mass.size(); ++b) {
      const torch::Tensor columns = vec(c["blocks"][b]["attention_columns"]);  // [self | Q | p | visual]
      ASSERT_EQ(columns.size(0), chunk + nq + 1 + nv);
      const SourceMass& m = e.source_mass[b];
      EXPECT_NEAR(m.self, columns.narrow(0, 0, chunk).sum().item<double>(), 1e-9);
      EXPECT_NEAR(m.action_queries, columns.narrow(0, chunk, nq).sum().item<double>(), 1e-9);
      EXPECT_NEAR(m.proprio, columns[chunk + nq].item<double>(), 1e-9);
      EXPECT_NEAR(m.visual, columns.narrow(0, chunk + nq + 1, nv).sum().item<double>(), 1e-9);
      EXPECT_NEAR(m.self + m.action_queries + m.proprio + m.visual, 1.0, 1e-6);
      std::printf("  %-12s block %zu mass: self %.4f, action queries %.4f, proprio %.4f, visual %.4f\n", name.c_str(),
                  b, m.self, m.action_queries, m.proprio, m.visual);
    }
    // Per patch, the visual columns; their sum is the visual share.
    double visual = 0;
    for (const auto& m : e.source_mass) visual += m.visual / static_cast<double>(e.source_mass.size());
    EXPECT_NEAR(e.attention->cameras[0].sum() + e.attention->cameras[1].sum() + e.attention->prompt_token, visual, 1e-9);
  }
}

// Channel-level focus and scalar gates: the element gate's statistics per block and tanh(g) of
// the VLA-Adapter blocks are the reference head's.
TEST(ExplainGates, GateStatisticsEqualThePytorchHead) {
  ExplainOptions options;
  options.reliance = false;
  for (const std::string name : {"explain_focus", "focus_gate_off", "explain_pro", "explain_base"}) {
    SCOPED_TRACE(name);
    const auto c = explain_case(name);
    const Explanation e = explain(load(c), observation(c), options);
    const auto& blocks = c["blocks"];
    for (size_t b = 0; b < blocks.size(); ++b) {
      if (blocks[b].contains("gate")) {
        ASSERT_EQ(e.gates.size(), blocks.size());
        const auto& want = blocks[b]["gate"];
        EXPECT_EQ(e.gates[b].kind, "element");
        EXPECT_NEAR(e.gates[b].mean, want["mean"].get<double>(), 1e-9);
        EXPECT_EQ(e.gates[b].below_0_1, want["below_0_1"].get<double>());
        EXPECT_EQ(e.gates[b].above_0_9, want["above_0_9"].get<double>());
        EXPECT_EQ(e.gates[b].values, want["values"].get<int64_t>());
        std::printf("  %-14s block %zu gate mean %.4f, < 0.1 %.3f, > 0.9 %.3f\n", name.c_str(), b, e.gates[b].mean,
                    e.gates[b].below_0_1, e.gates[b].above_0_9);
      } else {
        ASSERT_EQ(e.scalar_gates.size(), blocks.size());
        EXPECT_NEAR(e.scalar_gates[b], blocks[b]["scalar_gate"].get<double>(), 1e-7);
        std::printf("  %-14s block %zu tanh(g) %.4f\n", name.c_str(), b, e.scalar_gates[b]);
      }
    }
  }
}

// Every ablation runs through the one forward with the documented change, and gives the actions
// the reference pipeline gives with the same change (relative error <= 1e-4, as every fp32 case;
// 0 measured); the distances follow.
void expect_reliance(const std::string& name, Explanation* out = nullptr) {
  const auto c = explain_case(name);
  const Policy policy = load(c);
  const Explanation e = explain(policy, observation(c));
  EXPECT_LE(testing::relative_error(mat(e.actions.actions), mat(c["actions"])), 1e-4);
  ASSERT_EQ(e.ablations.size(), c["ablations"].size());
  for (size_t i = 0; i < e.ablations.size(); ++i) {
    const Ablation& a = e.ablations[i];
    const auto& want = c["ablations"][i];
    EXPECT_EQ(a.name, want["name"].get<std::string>());
    const double err = testing::relative_error(mat(a.actions), mat(want["actions"]));
    EXPECT_LE(err, 1e-4) << a.name;
    EXPECT_NEAR(a.mean_distance, want["mean_distance"].get<double>(), 1e-6) << a.name;
    EXPECT_NEAR(a.max_distance, want["max_distance"].get<double>(), 1e-6) << a.name;
    std::printf("  %-14s %-22s mean %.3e  max %.3e  (reference %.3e; actions relative error %.1e)\n", name.c_str(),
                a.name.c_str(), a.mean_distance, a.max_distance, want["mean_distance"].get<double>(), err);
  }
  std::printf("  %-14s verdict %s: %s\n", name.c_str(), e.verdict.level.c_str(), e.verdict.line.c_str());
  // The diagnostics left the policy as it was: a plain act gives the normal actions again.
  const Observation obs = observation(c);
  EXPECT_TRUE(policy.act(obs.images, obs.instruction, obs.proprio).actions == e.actions.actions);
  if (out) *out = e;
}

// A checkpoint whose visual branch is switched off: FocusVLA with the element gate forced to 0,
// Pro with tanh(g) = 0 and v_task zeroed. Without its visual tokens the head's actions do not
// move at all (0 measured), while the action queries still move them: "none".
TEST(ExplainReliance, SwitchedOffVisualBranchShowsNoVisualDependence) {
  for (const std::string name : {"focus_gate_off", "pro_gate_off"}) {
    SCOPED_TRACE(name);
    Explanation e;
    expect_reliance(name, &e);
    ASSERT_NE(e.ablation("head_visual_zeroed"), nullptr);
    EXPECT_LE(e.ablation("head_visual_zeroed")->max_distance, 1e-7);
    EXPECT_GT(e.ablation("action_queries_zeroed")->mean_distance, kInsensitiveBelow);
    EXPECT_EQ(e.verdict.level, "none") << e.verdict.line;
  }
}

// Normal random checkpoints (heads as PyTorch initialises them): their heads read their visual
// tokens, clearly (1.1e-2 to 4.4e-2 of the action range measured, >= 1e-3 required, against 0
// switched off): "uses-vision". And tanh(g) = 0 alone, in a head with one softmax, does not
// switch the visual tokens off: their logits become 0, every patch gets the same weight, the
// values still flow.
TEST(ExplainReliance, NormalRandomCheckpointsUseVision) {
  for (const std::string name : {"explain_focus", "explain_pro", "explain_base", "pro_gate_zero"}) {
    SCOPED_TRACE(name);
    Explanation e;
    expect_reliance(name, &e);
    EXPECT_GE(e.ablation("head_visual_zeroed")->mean_distance, 1e-3);
    EXPECT_EQ(e.verdict.level, "uses-vision") << e.verdict.line;
    EXPECT_GE(e.ablation("visual_tokens_zeroed")->mean_distance, 1e-4);
  }
}

// The heads of the other test checkpoints draw every tensor from N(0, 0.02) (LayerNorm weights
// included): their actions barely respond to anything, and the verdict says so.
TEST(ExplainReliance, HeadThatRespondsToNothingIsInsensitive) {
  PolicyOptions o;
  o.unnorm_key = "libero_spatial_no_noops";
  const Policy policy = Policy::load(data_path("policy", "focus_f32"), o);
  const auto c = explain_case("explain_focus");
  const Explanation e = explain(policy, observation(c));
  std::printf("  focus_f32 verdict %s: %s\n", e.verdict.level.c_str(), e.verdict.line.c_str());
  EXPECT_EQ(e.verdict.level, "insensitive");
}

// The verdict rule on its own (the thresholds of explain.h).
TEST(ExplainReliance, VerdictRule) {
  const auto ablations = [](double visual, double queries) {
    Ablation v, q;
    v.name = "head_visual_zeroed";
    v.mean_distance = visual;
    q.name = "action_queries_zeroed";
    q.mean_distance = queries;
    return std::vector<Ablation>{v, q};
  };
  const double t = kInsensitiveBelow;
  EXPECT_EQ(reliance_verdict(ablations(0.5 * t, 0.5 * t)).level, "insensitive");
  EXPECT_EQ(reliance_verdict(ablations(0.5 * t, 0.1)).level, "none");
  EXPECT_EQ(reliance_verdict(ablations(0.9 * kNoVisualRatio * 0.5, 0.5)).level, "none");
  EXPECT_EQ(reliance_verdict(ablations(0.9 * kShortcutRatio * 0.5, 0.5)).level, "weak");
  EXPECT_EQ(reliance_verdict(ablations(1.1 * kShortcutRatio * 0.5, 0.5)).level, "uses-vision");
  EXPECT_EQ(reliance_verdict({}).level, "not-run");
}

// act_traced: the tap sees the policy-level names, the intervention changes that call only, and a
// replacement of the wrong shape is a named error.
TEST(ExplainReliance, InterventionsTouchOneCallOnly) {
  const auto c = explain_case("explain_focus");
  const Policy policy = load(c);
  const Observation obs = observation(c);
  const ActionChunk normal = policy.act(obs.images, obs.instruction, obs.proprio);
  std::vector<std::string> names;
  const ActionChunk zeroed = policy.act_traced(
      obs, [&](const std::string& name, const torch::Tensor&) { names.push_back(name); },
      [](const std::string& name, const torch::Tensor& value) {
        return name == "conditioning.visual" ? torch::zeros_like(value) : torch::Tensor();
      });
  EXPECT_FALSE(zeroed.normalized == normal.normalized);
  const auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  EXPECT_TRUE(has("conditioning.visual") && has("conditioning.queries") && has("head.blocks.0.kept") &&
              has("head.blocks.1.visual_attention") && has("vision.output"));
  EXPECT_TRUE(policy.act(obs.images, obs.instruction, obs.proprio).actions == normal.actions);
  expect_error(
      [&] {
        policy.act_traced(obs, Tap(), [](const std::string& name, const torch::Tensor& value) {
          return name == "vision.output" ? value.narrow(1, 0, 1) : torch::Tensor();
        });
      },
      {"intervention at 'vision.output'", "shape"});
  EXPECT_TRUE(policy.act(obs.images, obs.instruction, obs.proprio).actions == normal.actions);
}

}  // namespace
}  // namespace focusvla
