// What a server needs of a Policy beyond act: batch buckets (calls padded to a few batch sizes, so
// that CUDA graphs are reused), prepared observations (the host work of an act done ahead, on
// another thread) and the warm-up of the buckets before the first request. Against the
// reference's actions (gen_policy.py) and the unpadded, unprepared calls.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <thread>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/policy/batch_buckets.h"
#include "focusvla/policy/policy.h"
#include "policy/policy_cases.h"
#include "test_util.h"

namespace focusvla {
namespace {

using testing::data_path;
using testing::expect_error;

std::vector<Observation> observations(const nlohmann::json& c, const std::vector<int>& which) {
  std::vector<Observation> out;
  for (const int i : which) out.push_back(observation(c["observations"][i]));
  return out;
}

const torch::Tensor& reference_actions(const nlohmann::json& c, int i) {
  return tensors().at(c["observations"][i]["key"].get<std::string>() + ".actions");
}

TEST(PolicyBuckets, ResolvedAndChosen) {
  using policy::padded_batch;
  using policy::resolve_batch_buckets;
  const torch::Device cpu(torch::kCPU), cuda(torch::kCUDA, 0);  // a device name only: no GPU needed
  EXPECT_EQ(resolve_batch_buckets({}, cpu, true), std::vector<int64_t>{});
  EXPECT_EQ(resolve_batch_buckets({}, cuda, true), (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_EQ(resolve_batch_buckets({}, cuda, false), std::vector<int64_t>{});
  EXPECT_EQ(resolve_batch_buckets({8, 2, 2, 4}, cpu, true), (std::vector<int64_t>{2, 4, 8}));
  expect_error([&] { resolve_batch_buckets({4, 0}, cpu, true); },
               {"PolicyOptions::batch_buckets", "entry 0", "not a batch size"});
  const std::vector<int64_t> buckets{1, 2, 4, 8};
  EXPECT_EQ(padded_batch(buckets, 1), 1);
  EXPECT_EQ(padded_batch(buckets, 3), 4);
  EXPECT_EQ(padded_batch(buckets, 5), 8);
  EXPECT_EQ(padded_batch(buckets, 8), 8);
  EXPECT_EQ(padded_batch(buckets, 9), 9);  // above the largest bucket: its own size
  EXPECT_EQ(padded_batch({}, 3), 3);
}

// A call padded to its bucket gives the reference's actions for each of its own observations, and
// only those; its rows are staged in a canonical order. The tap shows the batch the forward ran at.
TEST(PolicyBuckets, PaddedCallsGiveTheReferenceActions) {
  const auto c = find_case("focus_openvla");
  PolicyOptions o = options_for(c);
  o.batch_buckets = {4, 2};
  o.diagnostics = true;
  Policy policy = Policy::load(data_path("policy", c["checkpoint"]), o);
  EXPECT_EQ(policy.settings().batch_buckets, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(settings_json(policy.settings())["batch_buckets"], nlohmann::json::array({2, 4}));
  int64_t ran_at = 0;
  policy.set_tap([&](const std::string& name, const torch::Tensor& value) {
    if (name == "conditioning.queries") ran_at = value.size(0);
  });
  // (observations, the batch the forward runs at): 1 -> 2, 3 -> 4, 5 -> 5 (no bucket holds it).
  for (const auto& [which, expected_batch] : std::vector<std::pair<std::vector<int>, int64_t>>{
           {{1}, 2}, {{0, 1, 2}, 4}, {{3, 2, 1, 0, 3}, 5}}) {
    SCOPED_TRACE(std::to_string(which.size()) + " observation(s)");
    const auto chunks = policy.act_batch(observations(c, which));
    EXPECT_EQ(ran_at, expected_batch);
    ASSERT_EQ(chunks.size(), which.size());
    for (size_t b = 0; b < which.size(); ++b) {
      const double err = relative_error(chunks[b].actions, reference_actions(c, which[b]));
      EXPECT_LE(err, 1e-4) << "observation " << which[b];
      std::printf("  %zu observation(s) run at %lld: observation %d relative error %.2e\n", which.size(),
                  static_cast<long long>(expected_batch), which[b], err);
      ASSERT_FALSE(chunks[b].kept_indices.empty());
      EXPECT_EQ(chunks[b].kept_indices.front().dim(), 3);  // its own (heads, chunk, K), not the batch's
    }
  }
  // The same prompts in another order: one shape (rows are staged longest prompt first), and each
  // result still goes to its own observation.
  const int64_t shapes = policy.cached_shapes();
  const auto reordered = policy.act_batch(observations(c, {2, 0, 1}));
  EXPECT_EQ(policy.cached_shapes(), shapes);
  for (const auto& [row, i] : std::vector<std::pair<size_t, int>>{{0, 2}, {1, 0}, {2, 1}})
    EXPECT_LE(relative_error(reordered[row].actions, reference_actions(c, i)), 1e-4) << "observation " << i;

  expect_error(
      [&] {
        PolicyOptions bad = options_for(c);
        bad.batch_buckets = {-1};
        Policy::load(data_path("policy", c["checkpoint"]), bad);
      },
      {"PolicyOptions::batch_buckets", "entry -1"});
}

// Prepared observations act bit for bit as their observations (256x256 LIBERO frames: the JPEG
// round trip and the resizes are the work done ahead), and are used only where they apply.
TEST(PolicyPrepare, PreparedObservationsActBitForBit) {
  const auto c = find_case(has_case("focus_libero_eval_256") ? "focus_libero_eval_256" : "focus_openvla");
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), options_for(c));
  const std::vector<Observation> raw = observations(c, {0, 1, 2});
  std::vector<Observation> prepared;
  for (const auto& obs : raw) {
    prepared.push_back(policy.prepare(obs));
    ASSERT_NE(prepared.back().prepared, nullptr);
  }
  const auto expected = policy.act_batch(raw);
  const auto got = policy.act_batch(prepared);
  for (size_t b = 0; b < raw.size(); ++b) {
    EXPECT_TRUE(got[b].actions == expected[b].actions) << "observation " << b;
    EXPECT_LE(relative_error(got[b].actions, reference_actions(c, static_cast<int>(b))), 1e-5);
  }
  // Alone (batch 1: other GEMM shapes than the batch of 3, so compared with act alone).
  const auto act = [](const Policy& p, const Observation& obs) {
    return p.act(obs.images, obs.instruction, obs.proprio).actions;
  };
  EXPECT_TRUE(policy.act_batch({prepared[1]}).front().actions == act(policy, raw[1]));

  // Another image list than the prepared one: preprocessed again (the new images' actions).
  Observation swapped = prepared[0];
  swapped.images = raw[1].images;
  swapped.instruction = raw[1].instruction;
  swapped.proprio = raw[1].proprio;
  EXPECT_TRUE(policy.act_batch({swapped}).front().actions == act(policy, raw[1]));

  // Prepared by another policy (the other center crop setting): not used by this one.
  PolicyOptions crop = options_for(c);
  crop.center_crop = !crop.center_crop;
  const Policy other = Policy::load(data_path("policy", c["checkpoint"]), crop);
  const Observation theirs = other.prepare(raw[0]);
  EXPECT_TRUE(policy.act_batch({theirs}).front().actions == act(policy, raw[0]));
  EXPECT_TRUE(other.act_batch({theirs}).front().actions == act(other, raw[0]));
  EXPECT_FALSE(act(other, raw[0]) == act(policy, raw[0]));  // the crop setting matters here

  // Prepared by a policy since destroyed: not used by a later one (were it at the same address).
  Observation orphan;
  {
    const Policy gone = Policy::load(data_path("policy", c["checkpoint"]), crop);
    orphan = gone.prepare(raw[0]);
  }
  const Policy later = Policy::load(data_path("policy", c["checkpoint"]), options_for(c));
  EXPECT_TRUE(later.act_batch({orphan}).front().actions == act(policy, raw[0]));

  // prepare validates as act does, naming the problem.
  Observation bad = raw[0];
  bad.proprio.pop_back();
  expect_error([&] { policy.prepare(bad); }, {"proprio", "values, the proprio projector takes"});
  bad = raw[0];
  bad.images[1] = torch::zeros({224, 224, 4}, torch::kUInt8);
  expect_error([&] { policy.prepare(bad); }, {"image 1", "expected 3 channels"});
}

// prepare runs beside an act in another thread (a server's io thread beside its batch).
TEST(PolicyPrepare, PrepareWhileAnotherThreadActs) {
  const auto c = find_case("focus_openvla");
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), options_for(c));
  const std::vector<Observation> raw = observations(c, {0, 1});
  const auto expected = policy.act_batch(raw);
  std::vector<Observation> prepared(8);
  std::thread acting([&] {
    for (int i = 0; i < 2; ++i) {
      const auto chunks = policy.act_batch(raw);
      for (size_t b = 0; b < raw.size(); ++b) EXPECT_TRUE(chunks[b].actions == expected[b].actions);
    }
  });
  for (size_t i = 0; i < prepared.size(); ++i) prepared[i] = policy.prepare(raw[i % 2]);
  acting.join();
  for (size_t i = 0; i < prepared.size(); i += 2) {
    const auto chunks = policy.act_batch({prepared[i], prepared[i + 1]});
    for (size_t b = 0; b < raw.size(); ++b) EXPECT_TRUE(chunks[b].actions == expected[b].actions);
  }
}

// warm_up runs each bucket once (the CPU; twice on CUDA), so that later calls of those shapes find
// their buffers; its errors are named before any forward.
TEST(PolicyWarmUp, BucketsAreCachedBeforeTheFirstCall) {
  const auto c = find_case("focus_openvla");
  PolicyOptions o = options_for(c);
  o.batch_buckets = {1, 2, 4};
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), o);
  EXPECT_EQ(policy.cached_shapes(), 0);
  std::vector<Observation> batch = observations(c, {0, 1, 2});
  for (auto& obs : batch) obs.instruction = batch[0].instruction;  // the warm-up's prompt length
  EXPECT_GT(policy.warm_up(batch[0].instruction), 0.0);
  EXPECT_EQ(policy.cached_shapes(), 3);
  const auto chunks = policy.act_batch(batch);
  EXPECT_EQ(policy.cached_shapes(), 3);  // 3 observations ran in the warmed bucket of 4
  EXPECT_LE(relative_error(chunks[0].actions, reference_actions(c, 0)), 1e-4);

  expect_error([&] { policy.warm_up("   "); }, {"instruction", "is empty"});
  expect_error([&] { policy.warm_up(batch[0].instruction, 3); }, {"images", "got 3 camera", "takes 2"});

  o.max_cached_shapes = 2;  // fewer than the buckets: a warning, the last two stay
  const Policy small = Policy::load(data_path("policy", c["checkpoint"]), o);
  (void)small.warm_up("pick");
  EXPECT_EQ(small.cached_shapes(), 2);

  const std::string dir = without_camera_count("policy_warm_up_cameras", "focus_f32");
  const Policy per_call = Policy::load(dir, options_for(c));
  expect_error([&] { per_call.warm_up("pick"); }, {"warm_up: cameras", "follows each call"});
  (void)per_call.warm_up("pick", 2);
  EXPECT_EQ(per_call.cached_shapes(), 1);  // no buckets on the CPU by default: batch 1
  testing::remove_tree(dir);
}

// On CUDA (skipped without a GPU): the default buckets, warm_up captures each bucket's graph, and
// a call of 3 observations replays bucket 4's at once; the reference's actions (fp32, TF32 off).
TEST(PolicyCuda, WarmedBucketsReplayTheirGraphs) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto c = find_case("focus_openvla");
  const Policy policy = load_on_cuda(c);
  EXPECT_EQ(policy.settings().batch_buckets, (std::vector<int64_t>{1, 2, 4, 8}));
  std::vector<Observation> batch = observations(c, {0, 1, 2});
  for (auto& obs : batch) obs.instruction = batch[0].instruction;
  (void)policy.warm_up(batch[0].instruction);
  EXPECT_EQ(policy.cached_shapes(), 4);
  const auto chunks = policy.act_batch(batch);
  EXPECT_EQ(policy.last_execution(), "cuda-graph");
  EXPECT_TRUE(chunks[0].timing.cuda_graph);
  EXPECT_EQ(policy.cached_shapes(), 4);
  const double err = relative_error(chunks[0].actions, reference_actions(c, 0));
  std::printf("  batch of 3 in the warmed bucket of 4 (graph replay): relative error %.2e\n", err);
  EXPECT_LE(err, 1e-4);
}

}  // namespace
}  // namespace focusvla
