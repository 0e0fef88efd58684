// ActionHead (base, Pro, FocusVLA variants, made by the PolicyHead factory) and ProprioProjector
// against the PyTorch transcription tests/python/reference_heads.py (oracle data:
// tests/python/gen_policy_head.py): actions, top-K kept sets and gate values in fp32 and bf16,
// the named intermediates (Tap), the head factory and its registry, and the errors on bad
// weights and bad inputs.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/io/checkpoint_config.h"
#include "focusvla/io/json_file.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/policy/action_head.h"
#include "focusvla/policy/head.h"
#include "focusvla/policy/proprio_projector.h"
#include "policy/toy_head.h"
#include "tensor_util.h"
#include "test_util.h"

namespace {

using focusvla::io::FocusAttention;
using focusvla::io::FocusConfig;
using focusvla::io::FocusGate;
using focusvla::io::StateDict;
using focusvla::io::VlaConfig;
using focusvla::policy::ActionHead;
using focusvla::policy::ActionHeadConfig;
using focusvla::policy::ActionHeadImpl;
using focusvla::policy::HeadDiagnostics;
using focusvla::policy::HeadKind;
using focusvla::policy::load_head;
using focusvla::policy::MlpResNetHead;
using focusvla::policy::PolicyHead;
using focusvla::policy::ProprioProjector;
using focusvla::policy::ProprioProjectorImpl;
using focusvla::testing::data_path;
using focusvla::testing::relative_error;
using focusvla::testing::expect_error;

constexpr double kTolF32 = 1e-4;
constexpr double kTolBf16 = 2e-2;
constexpr double kMargin = 1e-5;  // gen_policy_head.py MARGIN: top-K gaps below it may flip
const char* kGroup = "policy_head";

const torch::TensorOptions kF32 = torch::TensorOptions().dtype(torch::kFloat32);
const torch::TensorOptions kBf16 = torch::TensorOptions().dtype(torch::kBFloat16);

struct Case {
  std::string name;
  nlohmann::json meta;
  StateDict head;
  StateDict data;
  std::optional<FocusConfig> focus;
};

Case load_case(const std::string& name) {
  Case c;
  c.name = name;
  const auto meta_path = data_path(kGroup, name + "/case.json");
  c.meta = focusvla::io::read_json_file(meta_path);
  c.head = StateDict::from_torch_file(data_path(kGroup, name + "/head.pt"));
  c.data = StateDict::from_safetensors(data_path(kGroup, name + "/data.safetensors"));
  if (!c.meta.at("focus").is_null()) c.focus = FocusConfig::from_json(c.meta.at("focus"), meta_path);
  return c;
}

// config.json as the factory sees it: only the focus section matters to the heads.
VlaConfig vla_config(const std::optional<FocusConfig>& focus) {
  VlaConfig config;
  config.focus = focus;
  return config;
}

// The ActionHead behind a factory-made head of the mlp-resnet family.
const ActionHead& action_head_of(const std::shared_ptr<PolicyHead>& head) {
  const auto* mlp = dynamic_cast<const MlpResNetHead*>(head.get());
  if (mlp == nullptr) throw std::runtime_error("not an mlp-resnet head: " + head->name());
  return mlp->action_head();
}

std::string fmt(double v) {
  std::ostringstream out;
  out << std::scientific << std::setprecision(2) << v;
  return out.str();
}

// NaN-filled stand-ins, so that a forward which forgot to clear them is caught.
void poison(HeadDiagnostics& d) {
  const auto nan = torch::full({2, 2}, std::numeric_limits<float>::quiet_NaN());
  d.kept_indices = {nan, nan};
  d.gates = {nan};
}

// Compares kept sets row by row; a row may differ only where the oracle's top-K margin is below
// kMargin (none in the small cases). Returns the number of such rows.
int64_t compare_kept(const torch::Tensor& actual, const torch::Tensor& expected, const torch::Tensor& margin,
                     const std::string& label) {
  EXPECT_EQ(actual.scalar_type(), torch::kInt64) << label;
  EXPECT_EQ(actual.sizes(), expected.sizes()) << label;
  if (actual.sizes() != expected.sizes()) return 0;
  const auto a = std::get<0>(actual.sort(-1));
  const auto b = std::get<0>(expected.sort(-1));
  const auto differs = (a != b).any(-1);  // (B, H, T)
  const int64_t n = differs.sum().item<int64_t>();
  if (n == 0) return 0;
  const bool near_ties = margin.defined() && (margin.masked_select(differs) < kMargin).all().item<bool>();
  EXPECT_TRUE(near_ties) << label << ": " << n << " rows keep a different set of visual tokens";
  return n;
}

// ---------------------------------------------------------------------------------------------
// Conformance

class ActionHeadConformance : public ::testing::TestWithParam<std::string> {};

TEST_P(ActionHeadConformance, MatchesReference) {
  const auto c = load_case(GetParam());
  const auto& meta = c.meta;
  const int64_t blocks = meta.at("blocks").get<int64_t>();
  const std::string kind = meta.at("kind").get<std::string>();
  const int64_t top_k = c.focus ? c.focus->top_k : 0;
  const bool has_gate = c.focus && c.focus->gate != FocusGate::none;
  const std::map<std::string, std::string> names = {
      {"base", "vla-adapter"}, {"pro", "vla-adapter-pro"}, {"focus", "focusvla"}};

  for (const auto& options : {kF32, kBf16}) {
    const bool f32 = options.dtype() == torch::kFloat32;
    const auto head = load_head(c.head, vla_config(c.focus), options);  // the factory picks the variant
    EXPECT_EQ(head->name(), names.at(kind));
    EXPECT_EQ(head->hidden(), meta.at("hidden").get<int64_t>());
    EXPECT_EQ(head->chunk(), 8);
    EXPECT_EQ(head->action_dim(), 7);
    const auto& config = action_head_of(head)->config();
    EXPECT_EQ(focusvla::policy::to_string(config.kind), kind);
    EXPECT_EQ(config.blocks, blocks);
    EXPECT_EQ(config.heads, meta.at("heads").get<int64_t>());
    EXPECT_EQ(action_head_of(head)->dtype(), options.dtype().toScalarType());

    for (const auto& run : meta.at("runs")) {
      const std::string tag = run.at("tag").get<std::string>();
      const std::string label = c.name + (f32 ? " f32 " : " bf16 ") + tag;
      const auto& visual = c.data.at(tag + ".visual");
      const auto& queries = c.data.at(tag + ".queries");
      const auto proprio = run.at("proprio").get<bool>() ? c.data.at(tag + ".proprio") : torch::Tensor();
      HeadDiagnostics diag;
      poison(diag);
      // bf16 runs: inputs rounded to bf16 here, as the oracle did.
      const auto cast = [&](const torch::Tensor& t) { return t.defined() ? t.to(options.dtype()) : t; };
      const auto actions = head->forward(cast(visual), cast(queries), cast(proprio), &diag);
      EXPECT_EQ(actions.scalar_type(), options.dtype().toScalarType()) << label;
      const double err = relative_error(actions, c.data.at(tag + (f32 ? ".actions" : ".actions_bf16")));
      EXPECT_LE(err, f32 ? kTolF32 : kTolBf16) << label;

      // Diagnostics: kept sets (fp32; bf16 logits tie too often to compare sets) and gates.
      int64_t flipped = 0;
      ASSERT_EQ(static_cast<int64_t>(diag.kept_indices.size()), top_k > 0 ? blocks : 0) << label;
      for (int64_t i = 0; i < static_cast<int64_t>(diag.kept_indices.size()); ++i) {
        const auto& kept = diag.kept_indices[i];
        const auto& expected = c.data.at(tag + ".kept." + std::to_string(i));
        if (f32) {
          const std::string margin_key = tag + ".margin." + std::to_string(i);
          const auto margin = c.data.contains(margin_key) ? c.data.at(margin_key) : torch::Tensor();
          flipped += compare_kept(kept, expected, margin, label + " block " + std::to_string(i));
        } else {
          EXPECT_EQ(kept.sizes(), expected.sizes()) << label;
        }
      }
      double gate_err = 0;
      ASSERT_EQ(static_cast<int64_t>(diag.gates.size()), has_gate ? blocks : 0) << label;
      for (int64_t i = 0; i < static_cast<int64_t>(diag.gates.size()); ++i) {
        const auto& expected = c.data.at(tag + (f32 ? ".gate." : ".gate_bf16.") + std::to_string(i));
        const double e = relative_error(diag.gates[i], expected);
        EXPECT_LE(e, f32 ? kTolF32 : kTolBf16) << label << " gate of block " << i;
        gate_err = std::max(gate_err, e);
      }
      std::cout << "[ head ] " << std::left << std::setw(48) << label << " actions rel err " << fmt(err)
                << (has_gate ? ", gates " + fmt(gate_err) : std::string())
                << (top_k > 0 && f32 ? ", kept sets equal" + (flipped ? " but " + std::to_string(flipped) +
                                                                           " near-tie rows" : std::string())
                                     : std::string())
                << "\n";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ActionHead, ActionHeadConformance,
                         ::testing::Values("base", "pro", "focus_cascaded_k16_element_emb",
                                           "focus_cascaded_k0_head_layer", "focus_cascaded_k10_scalar_layer",
                                           "focus_cascaded_k20_none_emb", "focus_mixed_k16_element_emb",
                                           "focus_mixed_k12_head_layer", "focus_mixed_k0_scalar_layer",
                                           "focus_mixed_k24_none_emb", "full_focus"),
                         [](const auto& info) { return info.param; });

// ---------------------------------------------------------------------------------------------
// Structure

// SPEC 9.2 choice 2: a mixed FocusVLA head with top_k 0, the scalar gate and value_source "layer"
// has exactly the Pro head's keys and function.
TEST(ActionHeadFocus, MixedScalarLayerWithoutTopKIsTheProHead) {
  const auto c = load_case("focus_mixed_k0_scalar_layer");
  const auto focus = ActionHeadImpl::load(c.head, c.focus, kF32);
  const auto pro = ActionHeadImpl::load(c.head, std::nullopt, kF32);
  EXPECT_EQ(focus->config().kind, HeadKind::focus);
  EXPECT_EQ(pro->config().kind, HeadKind::pro);
  const auto& visual = c.data.at("b3.visual");
  const auto& queries = c.data.at("b3.queries");
  const auto& proprio = c.data.at("b3.proprio");
  HeadDiagnostics diag;
  poison(diag);
  const auto a = focus->forward(visual, queries, proprio);
  const auto b = pro->forward(visual, queries, proprio, &diag);
  EXPECT_LE(relative_error(a, b), 1e-5);
  EXPECT_LE(relative_error(b, c.data.at("b3.actions")), kTolF32);
  EXPECT_TRUE(diag.kept_indices.empty());  // Pro heads have no diagnostics: cleared
  EXPECT_TRUE(diag.gates.empty());
}

// Without diagnostics or taps the patch-level focus asks topk for an unsorted set (faster): the
// same kept set as the sorted call (LibTorch's selection does not depend on the sort), so the same
// actions bit for bit, in bf16 too, where tied logits are common.
TEST(ActionHeadFocus, UnsortedTopKKeepsTheReferenceSet) {
  for (const std::string name : {"focus_cascaded_k16_element_emb", "focus_mixed_k24_none_emb", "full_focus"}) {
    const auto c = load_case(name);
    for (const auto& options : {kF32, kBf16}) {
      const auto head = ActionHeadImpl::load(c.head, c.focus, options);
      const auto visual = c.data.at("b1.visual").to(options.dtype());
      const auto queries = c.data.at("b1.queries").to(options.dtype());
      const auto proprio = c.data.at("b1.proprio").to(options.dtype());
      HeadDiagnostics diag;
      const auto sorted = head->forward(visual, queries, proprio, &diag);
      ASSERT_FALSE(diag.kept_indices.empty()) << name;
      const auto unsorted = head->forward(visual, queries, proprio);
      EXPECT_TRUE(torch::equal(sorted, unsorted)) << name << " " << options.dtype();
    }
  }
}

TEST(ActionHeadConfig, InfersFromState) {
  const auto c = load_case("focus_cascaded_k16_element_emb");  // saved with `module.` keys
  const auto config = ActionHeadConfig::from_state(c.head, c.focus);
  EXPECT_EQ(config.kind, HeadKind::focus);
  EXPECT_EQ(config.hidden, 64);
  EXPECT_EQ(config.blocks, 3);
  EXPECT_EQ(config.action_dim, 7);
  EXPECT_EQ(config.focus.top_k, 16);
  // film_gen of every block, o_proj (cascaded) and gating_factor (no scalar gate) are skipped.
  const auto unused = config.unused_prefixes();
  EXPECT_EQ(unused.size(), 9u);
  EXPECT_EQ(ActionHeadConfig::from_state(load_case("base").head, std::nullopt).kind, HeadKind::base);
  EXPECT_EQ(ActionHeadConfig::from_state(load_case("pro").head, std::nullopt).kind, HeadKind::pro);
}

TEST(ActionHeadForward, AcceptsOtherInputDtypesAndExtraLayers) {
  const auto c = load_case("pro");  // 5 layers stored for 3 blocks
  auto head = ActionHeadImpl::load(c.head, std::nullopt, kF32);
  const auto& visual = c.data.at("b1.visual");
  EXPECT_EQ(visual.size(1), 5);
  const auto a = head->forward(visual.to(torch::kFloat64), c.data.at("b1.queries").to(torch::kFloat64),
                               c.data.at("b1.proprio"));
  EXPECT_EQ(a.scalar_type(), torch::kFloat32);
  EXPECT_LE(relative_error(a, c.data.at("b1.actions")), kTolF32);
  std::vector<std::string> taps;
  head->set_tap([&](const std::string& name, const torch::Tensor&) { taps.push_back(name); });
  head->forward(visual, c.data.at("b1.queries"), c.data.at("b1.proprio"));
  EXPECT_EQ(taps, (std::vector<std::string>{"stem", "blocks.0.attention", "blocks.0.gate", "blocks.0",
                                            "blocks.1.attention", "blocks.1.gate", "blocks.1", "blocks.2.attention",
                                            "blocks.2.gate", "blocks.2", "output"}));
}

// ---------------------------------------------------------------------------------------------
// Named intermediates: every tap equals the reference's tensor of the same name (forward hooks on
// the modules of that name, and the FocusVLA diagnostics), within the actions' tolerance.

class ActionHeadTaps : public ::testing::TestWithParam<std::string> {};

TEST_P(ActionHeadTaps, MatchReference) {
  const auto c = load_case(GetParam());
  const auto& tap_runs = c.meta.at("tap_runs");
  ASSERT_FALSE(tap_runs.empty()) << c.name << ": gen_policy_head.py TAP_CASES stores no taps for it";
  const int64_t blocks = c.meta.at("blocks").get<int64_t>();
  for (const auto& options : {kF32, kBf16}) {
    const bool f32 = options.dtype() == torch::kFloat32;
    const auto head = load_head(c.head, vla_config(c.focus), options);
    std::vector<std::string> order;
    std::map<std::string, torch::Tensor> taps;
    head->set_tap([&](const std::string& name, const torch::Tensor& value) {
      order.push_back(name);
      EXPECT_TRUE(taps.emplace(name, value.clone()).second) << "tapped twice: " << name;
    });
    for (const auto& run : tap_runs) {
      const std::string tag = run.get<std::string>();
      const std::string group = tag + (f32 ? ".tap." : ".tap_bf16.");
      const std::string label = c.name + (f32 ? " f32 " : " bf16 ") + tag;
      order.clear();
      taps.clear();
      const auto cast = [&](const torch::Tensor& t) { return t.to(options.dtype()); };
      head->forward(cast(c.data.at(tag + ".visual")), cast(c.data.at(tag + ".queries")),
                    cast(c.data.at(tag + ".proprio")));

      // The names, in the order the head computes them.
      std::vector<std::string> expected_order = {"stem"};
      for (int64_t i = 0; i < blocks; ++i) {
        const std::string block = "blocks." + std::to_string(i);
        for (const char* part : {".visual_logits", ".kept", ".visual_attention", ".attention", ".gate"})
          if (c.data.contains(group + block + part)) expected_order.push_back(block + part);
        expected_order.push_back(block);
      }
      expected_order.push_back("output");
      EXPECT_EQ(order, expected_order) << label;
      size_t stored = 0;
      for (const auto& key : c.data.keys()) stored += key.rfind(group, 0) == 0 ? 1 : 0;
      EXPECT_EQ(stored, expected_order.size()) << label << ": taps the C++ head does not make";

      double worst = 0;
      for (const auto& [name, value] : taps) {
        const auto& expected = c.data.at(group + name);
        if (name.size() > 5 && name.compare(name.size() - 5, 5, ".kept") == 0) {
          if (f32) {  // bf16 logits tie too often to compare sets (as in the conformance test)
            const std::string margin_key = tag + ".margin." + name.substr(7, name.size() - 12);
            compare_kept(value, expected, c.data.contains(margin_key) ? c.data.at(margin_key) : torch::Tensor(),
                         label + " " + name);
          } else {
            EXPECT_EQ(value.sizes(), expected.sizes()) << label << " " << name;
          }
          continue;
        }
        const double err = relative_error(value, expected);
        EXPECT_LE(err, f32 ? kTolF32 : kTolBf16) << label << " tap " << name;
        worst = std::max(worst, err);
      }
      std::cout << "[ taps ] " << std::left << std::setw(48) << label << " " << taps.size()
                << " taps, worst rel err " << fmt(worst) << "\n";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ActionHead, ActionHeadTaps,
                         ::testing::Values("pro", "focus_cascaded_k16_element_emb", "focus_mixed_k12_head_layer",
                                           "focus_cascaded_k10_scalar_layer"),
                         [](const auto& info) { return info.param; });

// ---------------------------------------------------------------------------------------------
// The head factory and its registry

TEST(ActionHeadFactory, PicksEachVariantFromTheCheckpoint) {
  EXPECT_EQ(focusvla::policy::registered_heads().front(), "mlp-resnet");
  EXPECT_EQ(load_head(load_case("base").head, vla_config(std::nullopt), kF32)->name(), "vla-adapter");
  EXPECT_EQ(load_head(load_case("pro").head, vla_config(std::nullopt), kF32)->name(), "vla-adapter-pro");
  const auto focus = load_case("focus_cascaded_k16_element_emb");
  const auto head = load_head(focus.head, vla_config(focus.focus), kF32);
  EXPECT_EQ(head->name(), "focusvla");
  EXPECT_EQ(action_head_of(head)->config().focus.gate, FocusGate::element);
  // The same weights without config.json's focus section: the FocusVLA modules are named.
  expect_error([&] { load_head(focus.head, vla_config(std::nullopt), kF32); },
               {"model.mlp_resnet_blocks.0.", "FocusVLA module", "focus"});
  // A FocusVLA head whose keys are exactly a Pro head's: config.json decides.
  const auto mixed = load_case("focus_mixed_k0_scalar_layer");
  EXPECT_EQ(load_head(mixed.head, vla_config(std::nullopt), kF32)->name(), "vla-adapter-pro");
  EXPECT_EQ(load_head(mixed.head, vla_config(mixed.focus), kF32)->name(), "focusvla");
  // module(): the parameters, for dtype / device handling by the caller.
  EXPECT_EQ(head->module().named_parameters().size(), action_head_of(head)->named_parameters().size());
}

// Keys of neither layout: the error names the file, the keys and every registered family.
TEST(ActionHeadFactory, UnknownHeadNamesTheFileKeysAndFamilies) {
  StateDict state;
  state.insert("velocity_net.time_embed.weight", torch::zeros({4, 4}), "action_head--flow.pt");
  state.insert("velocity_net.out.weight", torch::zeros({7, 4}), "action_head--flow.pt");
  state.insert("sigma", torch::zeros({1}), "action_head--flow.pt");
  expect_error([&] { load_head(state, vla_config(std::nullopt), kF32); },
               {"action_head--flow.pt", "no registered head family", "velocity_net.out.*", "sigma", "3 tensors",
                "registered families: mlp-resnet", "model.mlp_resnet_blocks"});
  expect_error([&] { load_head(StateDict(), vla_config(std::nullopt), kF32); }, {"action head", "empty"});
}

// Unregisters on scope exit, so that other tests see the built-in families only.
struct ScopedFamily {
  std::string name;
  ~ScopedFamily() { focusvla::policy::unregister_head(name); }
};

// A new family (tests/policy/toy_head.h: one file) is picked once registered.
TEST(ActionHeadFactory, RegisteredFamilyIsPicked) {
  const ScopedFamily scope{"toy-flow"};
  focusvla::policy::register_head(focusvla::testing::toy_head_family());
  EXPECT_EQ(focusvla::policy::registered_heads(), (std::vector<std::string>{"mlp-resnet", "toy-flow"}));
  expect_error([] { focusvla::policy::register_head(focusvla::testing::toy_head_family()); },
               {"toy-flow", "already registered"});

  StateDict state;
  state.insert("toy_flow.proj.weight", torch::full({7, 64}, 0.5), "action_head--toy.pt");
  state.insert("toy_flow.proj.bias", torch::zeros({7}), "action_head--toy.pt");
  const auto head = load_head(state, vla_config(std::nullopt), kF32);
  EXPECT_EQ(head->name(), "toy-flow");
  EXPECT_EQ(head->chunk(), 4);
  EXPECT_EQ(head->action_dim(), 7);
  EXPECT_EQ(head->hidden(), 64);
  std::vector<std::string> taps;
  head->set_tap([&](const std::string& name, const torch::Tensor&) { taps.push_back(name); });
  const auto c = load_case("pro");
  const auto out = head->forward(c.data.at("b3.visual"), c.data.at("b3.queries"), torch::Tensor(), nullptr);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 4, 7}));
  EXPECT_EQ(taps, std::vector<std::string>{"pooled"});
  // The built-in family still gets its heads, and an unknown head now lists both families.
  EXPECT_EQ(load_head(c.head, vla_config(std::nullopt), kF32)->name(), "vla-adapter-pro");
  StateDict unknown;
  unknown.insert("weights", torch::zeros({1}), "unknown.pt");
  expect_error([&] { load_head(unknown, vla_config(std::nullopt), kF32); },
               {"unknown.pt", "mlp-resnet (", "; toy-flow (keys toy_flow.*)"});

  // Detectors must not overlap: a family claiming everything makes the pro head ambiguous.
  const ScopedFamily greedy{"greedy"};
  focusvla::policy::register_head(
      "greedy", [](const StateDict&, const VlaConfig&) { return true; },
      [](const StateDict&, const VlaConfig&, const torch::TensorOptions&) { return std::shared_ptr<PolicyHead>(); });
  expect_error([&] { load_head(c.head, vla_config(std::nullopt), kF32); },
               {"several head families", "'mlp-resnet', 'greedy'"});
}

TEST(ActionHeadFactory, RegistryRefusesIncompleteFamilies) {
  expect_error([] { focusvla::policy::register_head(focusvla::policy::HeadFamily{}); }, {"needs a name"});
  expect_error([] { focusvla::policy::register_head(focusvla::policy::HeadFamily{"half", "", nullptr, nullptr}); },
               {"'half'", "detector and a loader"});
  EXPECT_FALSE(focusvla::policy::unregister_head("no-such-family"));
}

// ---------------------------------------------------------------------------------------------
// Bad weights

// A copy of `state` without `drop`, with `replace` swapped in.
StateDict edited(const StateDict& state, const std::vector<std::string>& drop,
                 const std::map<std::string, torch::Tensor>& replace = {}) {
  StateDict out;
  for (const auto& key : state.keys()) {
    if (std::find(drop.begin(), drop.end(), key) != drop.end()) continue;
    const auto it = replace.find(key);
    out.insert(key, it != replace.end() ? it->second : state.at(key), "edited head.pt");
  }
  return out;
}

TEST(ActionHeadErrors, MissingBlockKey) {
  const auto c = load_case("pro");
  const std::string key = "model.mlp_resnet_blocks.1.k_task.weight";
  expect_error([&] { ActionHeadImpl::load(edited(c.head, {key}), std::nullopt, kF32); }, {"missing", key});
}

TEST(ActionHeadErrors, MisShapedBlockKey) {
  const auto c = load_case("focus_cascaded_k16_element_emb");
  const std::string key = "model.mlp_resnet_blocks.2.v_self.weight";
  expect_error([&] { ActionHeadImpl::load(edited(c.head, {}, {{key, torch::zeros({64, 32})}}), c.focus, kF32); },
               {key, "expected [64, 64]", "found [64, 32]"});
}

TEST(ActionHeadErrors, MissingBlock) {
  const auto c = load_case("base");
  std::vector<std::string> drop;
  for (const auto& key : c.head.keys())
    if (key.rfind("model.mlp_resnet_blocks.1.", 0) == 0) drop.push_back(key);
  expect_error([&] { ActionHeadImpl::load(edited(c.head, drop), std::nullopt, kF32); },
               {"model.mlp_resnet_blocks.1.*", "missing"});
}

TEST(ActionHeadErrors, MisShapedFrameKey) {
  const auto c = load_case("pro");
  expect_error([&] { ActionHeadImpl::load(edited(c.head, {}, {{"model.fc2.weight", torch::zeros({7, 32})}}),
                                          std::nullopt, kF32); },
               {"model.fc2.weight", "expected [7, 64]", "found [7, 32]"});
  expect_error([&] { ActionHeadImpl::load(edited(c.head, {"model.fc1.weight"}), std::nullopt, kF32); },
               {"model.fc1.weight"});
}

TEST(ActionHeadErrors, FocusModulesWithoutFocusConfig) {
  const auto c = load_case("focus_cascaded_k16_element_emb");
  expect_error([&] { ActionHeadImpl::load(c.head, std::nullopt, kF32); },
               {"model.mlp_resnet_blocks.0.", "FocusVLA module", "focus"});
}

TEST(ActionHeadErrors, FocusConfigWithBaseHead) {
  const auto c = load_case("base");
  expect_error([&] { ActionHeadImpl::load(c.head, FocusConfig{}, kF32); }, {"FocusVLA configuration", "k_proj"});
}

TEST(ActionHeadErrors, FocusConfigDisagreesWithWeights) {
  const auto c = load_case("focus_cascaded_k16_element_emb");
  auto focus = *c.focus;
  focus.gate = FocusGate::head;  // the file has an element gate
  expect_error([&] { ActionHeadImpl::load(c.head, focus, kF32); },
               {"model.mlp_resnet_blocks.0.gate.0.weight: expected [8, 64], found [64, 64]",
                "model.mlp_resnet_blocks.0.gate.2.weight"});
  focus = *c.focus;
  focus.attention = FocusAttention::mixed;  // the file has fusion, no use for it
  expect_error([&] { ActionHeadImpl::load(c.head, focus, kF32); }, {"unexpected", "fusion.weight"});
}

// ---------------------------------------------------------------------------------------------
// Bad inputs (the pro case: D 64, 3 blocks, 5 layers, Nv 48; focus: top_k 16)

struct Inputs {
  torch::Tensor visual, queries, proprio;
};

Inputs inputs_of(const Case& c, const std::string& tag) {
  return {c.data.at(tag + ".visual"), c.data.at(tag + ".queries"), c.data.at(tag + ".proprio")};
}

TEST(ActionHeadErrors, VisualWrongRank) {
  const auto c = load_case("pro");
  const auto head = ActionHeadImpl::load(c.head, std::nullopt, kF32);
  const auto in = inputs_of(c, "b3");
  expect_error([&] { head->forward(in.visual[0], in.queries, in.proprio); }, {"visual", "rank 4", "[5, 48, 64]"});
}

TEST(ActionHeadErrors, QueriesWrongRank) {
  const auto c = load_case("pro");
  const auto head = ActionHeadImpl::load(c.head, std::nullopt, kF32);
  const auto in = inputs_of(c, "b3");
  expect_error([&] { head->forward(in.visual, in.queries.flatten(1, 2), in.proprio); }, {"queries", "rank 4"});
}

TEST(ActionHeadErrors, WrongHiddenSize) {
  const auto c = load_case("pro");
  const auto head = ActionHeadImpl::load(c.head, std::nullopt, kF32);
  const auto in = inputs_of(c, "b3");
  expect_error([&] { head->forward(in.visual.slice(3, 0, 32), in.queries, in.proprio); },
               {"visual", "hidden size 32", "64"});
  expect_error([&] { head->forward(in.visual, in.queries.slice(3, 0, 32), in.proprio); },
               {"queries", "hidden size 32"});
}

TEST(ActionHeadErrors, FewerLayersThanBlocksPlusOne) {
  const auto c = load_case("pro");
  const auto head = ActionHeadImpl::load(c.head, std::nullopt, kF32);
  const auto in = inputs_of(c, "b3");
  expect_error([&] { head->forward(in.visual.slice(1, 0, 3), in.queries, in.proprio); },
               {"visual", "3 layers", "3 blocks need 4"});
  expect_error([&] { head->forward(in.visual, in.queries.slice(1, 0, 2), in.proprio); },
               {"queries", "2 layers"});
}

TEST(ActionHeadErrors, BatchMismatch) {
  const auto c = load_case("pro");
  const auto head = ActionHeadImpl::load(c.head, std::nullopt, kF32);
  const auto in = inputs_of(c, "b3");
  expect_error([&] { head->forward(in.visual, in.queries.slice(0, 0, 1), in.proprio); },
               {"batch mismatch", "visual has 3", "queries 1"});
  expect_error([&] { head->forward(in.visual, in.queries, in.proprio.slice(0, 0, 2)); },
               {"proprio", "[3, 1, 64]", "[2, 1, 64]"});
}

TEST(ActionHeadErrors, ProprioWrongShape) {
  const auto c = load_case("pro");
  const auto head = ActionHeadImpl::load(c.head, std::nullopt, kF32);
  const auto in = inputs_of(c, "b3");
  expect_error([&] { head->forward(in.visual, in.queries, in.proprio.squeeze(1)); },
               {"proprio", "(B, 1, D)", "[3, 64]"});
  expect_error([&] { head->forward(in.visual, in.queries, in.proprio.slice(2, 0, 8)); },
               {"proprio", "[3, 1, 8]"});
}

TEST(ActionHeadErrors, TopKExceedsVisualTokens) {
  const auto c = load_case("focus_cascaded_k16_element_emb");
  const auto head = ActionHeadImpl::load(c.head, c.focus, kF32);
  const auto in = inputs_of(c, "b1");
  expect_error([&] { head->forward(in.visual.slice(2, 0, 12), in.queries, in.proprio); },
               {"top_k 16", "exceeds the 12 visual tokens"});
  // top_k == Nv is allowed: every patch is kept.
  HeadDiagnostics diag;
  const auto out = head->forward(in.visual.slice(2, 0, 16), in.queries, in.proprio, &diag);
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  ASSERT_EQ(diag.kept_indices.size(), 3u);
  EXPECT_EQ(diag.kept_indices[0].size(-1), 16);
}

// ---------------------------------------------------------------------------------------------
// Proprio projector

TEST(ProprioProjector, MatchesReference) {
  for (const int64_t hidden : {64, 896}) {
    const std::string dir = "proprio_" + std::to_string(hidden);
    const auto state = StateDict::from_torch_file(data_path(kGroup, dir + "/proprio.pt"));  // `module.` keys
    const auto data = StateDict::from_safetensors(data_path(kGroup, dir + "/data.safetensors"));
    for (const auto& options : {kF32, kBf16}) {
      const bool f32 = options.dtype() == torch::kFloat32;
      const auto projector = ProprioProjectorImpl::load(state, options);
      EXPECT_EQ(projector->proprio_dim(), 8);
      EXPECT_EQ(projector->hidden(), hidden);
      const auto out = projector->forward(data.at("input"));
      const double err = relative_error(out, data.at(f32 ? "output" : "output_bf16"));
      EXPECT_LE(err, f32 ? kTolF32 : kTolBf16) << dir;
      std::cout << "[ proprio ] " << dir << (f32 ? " f32" : " bf16") << " rel err " << fmt(err) << "\n";
      // The head's token layout: (B, 1, D).
      EXPECT_EQ(projector->forward(data.at("input")).unsqueeze(1).sizes(), (std::vector<int64_t>{3, 1, hidden}));
    }
  }
}

TEST(ProprioProjector, Errors) {
  const auto state = StateDict::from_torch_file(data_path(kGroup, "proprio_64/proprio.pt"));
  const auto projector = ProprioProjectorImpl::load(state, kF32);
  expect_error([&] { projector->forward(torch::zeros({3, 7})); }, {"ProprioProjector", "(..., 8)", "[3, 7]"});
  expect_error([&] { ProprioProjectorImpl::load(edited(state, {"fc2.bias"}), kF32); }, {"missing", "fc2.bias"});
  expect_error([&] { ProprioProjectorImpl::load(edited(state, {}, {{"fc2.weight", torch::zeros({64, 8})}}), kF32); },
               {"fc2.weight", "expected [64, 64]", "found [64, 8]"});
}

}  // namespace
