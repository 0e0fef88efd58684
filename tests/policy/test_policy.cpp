// Policy::act / act_batch end to end against the Python reference pipeline (gen_policy.py:
// timm + transformers + HF tokenizer + the transcribed heads) on checkpoint directories in the
// release layout, and the errors of bad observations and bad checkpoints.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <thread>

#include "focusvla/core/error.h"
#include "focusvla/io/json_file.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/policy/policy.h"
#include "policy/policy_cases.h"
#include "tensor_util.h"
#include "test_util.h"

namespace focusvla {
namespace {

namespace fs = std::filesystem;
using testing::data_path;
using testing::expect_error;

void expect_case(const std::string& name, double tolerance, const std::optional<PolicyOptions>& options = {}) {
  const auto c = find_case(name);
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), options ? *options : options_for(c));
  std::vector<Observation> batch;
  for (const auto& o : c["observations"]) {
    SCOPED_TRACE(o["key"].get<std::string>());
    Observation obs = observation(o);
    const ActionChunk chunk = policy.act(obs.images, obs.instruction, obs.proprio);
    ASSERT_EQ(chunk.actions.rows(), policy.chunk_size());
    ASSERT_EQ(chunk.actions.cols(), policy.action_dim());
    const double err = relative_error(chunk.actions, tensors().at(o["key"].get<std::string>() + ".actions"));
    EXPECT_LE(err, tolerance) << name << ": act relative error " << err;
    std::printf("  %-28s act       relative error %.2e\n", o["key"].get<std::string>().c_str(), err);
    batch.push_back(std::move(obs));
  }
  if (batch.size() < 2) return;
  const auto chunks = policy.act_batch(batch);
  ASSERT_EQ(chunks.size(), batch.size());
  for (size_t b = 0; b < batch.size(); ++b) {
    const std::string key = c["observations"][b]["key"];
    const double err = relative_error(chunks[b].actions, tensors().at(key + ".actions"));
    EXPECT_LE(err, tolerance) << name << ": act_batch sample " << b << " relative error " << err;
    std::printf("  %-28s act_batch relative error %.2e\n", key.c_str(), err);
  }
}

TEST(PolicyConformance, FocusVlaTwoCamerasProprioOpenvlaBatch4) { expect_case("focus_openvla", 1e-4); }
TEST(PolicyConformance, FocusVlaQwenChatPrompt) { expect_case("focus_qwen_chat", 1e-4); }
TEST(PolicyConformance, ProOneCameraNoProprioBatch4) { expect_case("pro_1cam_noproprio", 1e-4); }
TEST(PolicyConformance, ProOneCameraQwenChat) { expect_case("pro_1cam_qwen_chat", 1e-4); }
TEST(PolicyConformance, OriginalVlaAdapterHead) { expect_case("base_openvla", 1e-4); }
// LibTorch's bf16 kernels on both sides: only summation order differs (1.6e-5 measured).

// The bf16 weights as fp32 on both sides.
TEST(PolicyConformance, Bf16WeightsInFp32) { expect_case("focus_bf16_as_f32", 1e-4); }
TEST(PolicyConformance, ProBf16WeightsInFp32) { expect_case("pro_bf16_as_f32", 1e-4); }

// The reference's LIBERO evaluation (get_vla_action with run_libero_eval.py's defaults: the Qwen
// chat prompt, the 0.9 center crop) reproduced by PolicyOptions' defaults: only the unnorm_key is
// set. The checkpoints hold fp32 weights, so the default dtype is float32 on every machine.
void expect_reference_evaluation_by_default(const std::string& name, double tolerance = 1e-4) {
  const auto c = find_case(name);
  ASSERT_TRUE(c["defaults"].get<bool>());
  PolicyOptions defaults;
  defaults.unnorm_key = c["unnorm_key"];
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), defaults);
  const PolicySettings& s = policy.settings();
  EXPECT_EQ(s.prompt_format, c["prompt_format"].get<std::string>());
  EXPECT_NE(s.prompt_format_source.find("llm_backbone_id qwen25-0_5b-extra"), std::string::npos) << s.prompt_format_source;
  EXPECT_TRUE(s.center_crop);
  EXPECT_TRUE(s.jpeg_roundtrip);
  EXPECT_EQ(settings_json(s)["jpeg_roundtrip"], true);
  EXPECT_EQ(s.dtype, torch::kFloat32);
  EXPECT_EQ(s.dtype_source, "checkpoint float32");
  EXPECT_EQ(s.matmul, "fp32");
  expect_case(name, tolerance, defaults);
}

TEST(PolicyDefaults, FocusVlaReproducesTheReferenceLiberoEvaluation) {
  expect_reference_evaluation_by_default("focus_libero_eval");
}
TEST(PolicyDefaults, ProReproducesTheReferenceLiberoEvaluation) {
  expect_reference_evaluation_by_default("pro_libero_eval");
}

// LIBERO renders 256x256: the reference's get_vla_action passes such cameras through
// resize_image_for_policy (TensorFlow: JPEG encode / decode, Lanczos-3 resize) before the crop.
// The defaults reproduce it, per camera (one observation mixes a 256 and a 224 camera). The
// pixels are TF's exactly (test_jpeg.cpp), so only the fp32 model's summation order remains.
TEST(PolicyDefaults, FocusVlaReproducesTheReferenceOnLibero256Frames) {
  if (!has_case("focus_libero_eval_256")) GTEST_SKIP() << "no focus_libero_eval_256 case (gen_policy.py without tensorflow)";
  expect_reference_evaluation_by_default("focus_libero_eval_256", 1e-5);
}

// PolicyOptions::jpeg_roundtrip off: the resize alone (the reference's pipeline without its JPEG
// step). The step changes the reference's fused visual features by 5-40% (relative) on these
// observations; the tiny random-weight heads pass only ~1e-6 of that on to the actions, still far
// above our error, so each option lands on its own reference and not on the other's.
TEST(PolicyConformance, LiberoResizeWithoutJpegRoundTrip) {
  if (!has_case("focus_libero_256_no_jpeg")) GTEST_SKIP() << "no focus_libero_256_no_jpeg case (gen_policy.py without tensorflow)";
  const auto c = find_case("focus_libero_256_no_jpeg");
  EXPECT_FALSE(c["jpeg_roundtrip"].get<bool>());
  const PolicyOptions o = options_for(c);
  EXPECT_FALSE(Policy::load(data_path("policy", c["checkpoint"]), o).settings().jpeg_roundtrip);
  expect_case("focus_libero_256_no_jpeg", 1e-5, o);
  const auto with_jpeg = find_case("focus_libero_eval_256");
  const Policy without = Policy::load(data_path("policy", c["checkpoint"]), o);
  for (size_t j = 0; j < c["observations"].size(); ++j) {
    const std::string key = c["observations"][j]["key"], jpeg_key = with_jpeg["observations"][j]["key"];
    const double features = testing::relative_error(tensors().at(key + ".fused"), tensors().at(jpeg_key + ".fused"));
    const double actions = testing::relative_error(tensors().at(key + ".actions"), tensors().at(jpeg_key + ".actions"));
    std::printf("  observation %zu: the JPEG round trip moves the reference's fused features by %.2e, its actions by "
                "%.2e (relative)\n", j, features, actions);
    EXPECT_GT(features, 1e-2);
    const Observation obs = observation(c["observations"][j]);
    const ActionChunk chunk = without.act(obs.images, obs.instruction, obs.proprio);
    EXPECT_LT(relative_error(chunk.actions, tensors().at(key + ".actions")),
              relative_error(chunk.actions, tensors().at(jpeg_key + ".actions")));
  }
}

// The dtype follows the checkpoint's weights and the machine: bf16 weights run in bf16 where the
// CPU has native bf16 dot products, in fp32 elsewhere; an explicit dtype is kept as given.
TEST(PolicyDefaults, DtypeFollowsTheWeightsAndTheCpu) {
  const auto c = find_case("focus_bf16");
  PolicyOptions o;
  o.unnorm_key = c["unnorm_key"];
  const Policy bf16_weights = Policy::load(data_path("policy", c["checkpoint"]), o);
  const bool native = nn::cpu_has_native_bf16();
  EXPECT_EQ(bf16_weights.settings().dtype, native ? torch::kBFloat16 : torch::kFloat32);
  EXPECT_EQ(bf16_weights.settings().matmul, native ? "native-bf16" : "fp32");
  EXPECT_NE(bf16_weights.settings().dtype_source.find("checkpoint bfloat16"), std::string::npos);
  o.dtype = torch::kBFloat16;
  o.cpu_bf16_matmul = nn::CpuBf16Matmul::kFloat32;
  const Policy explicit_bf16 = Policy::load(data_path("policy", c["checkpoint"]), o);
  EXPECT_EQ(explicit_bf16.settings().dtype, torch::kBFloat16);
  EXPECT_EQ(explicit_bf16.settings().dtype_source, "option");
  EXPECT_EQ(explicit_bf16.settings().matmul, "fp32-copies");
}

// A backbone that is not Qwen2.5 (OpenVLA's Llama 2) is evaluated with the `In: ... Out:` prompt.
TEST(PolicyDefaults, PromptFormatFollowsTheBackbone) {
  const auto c = find_case("focus_openvla");
  const std::string dir = testing::scratch_dir("policy_llama_backbone");
  for (const auto& e : fs::directory_iterator(data_path("policy", "focus_f32")))
    if (e.is_regular_file()) fs::create_symlink(e.path(), dir + "/" + e.path().filename().string());
  auto config = io::read_json_file(dir + "/config.json");
  config["llm_backbone_id"] = "llama2-7b-pure";
  fs::remove(dir + "/config.json");
  std::ofstream(dir + "/config.json") << config.dump();
  PolicyOptions o;
  o.unnorm_key = c["unnorm_key"];
  const Policy policy = Policy::load(dir, o);
  EXPECT_EQ(policy.settings().prompt_format, "openvla");
  EXPECT_EQ(policy.settings().prompt_format_source, "checkpoint: llm_backbone_id llama2-7b-pure");
  // The prompt it builds, token ids included, is the one the reference's openvla case used.
  const PromptText prompt = policy.prompt("Put the BOWL on the stove");
  EXPECT_EQ(prompt.text, "In: What action should the robot take to put the bowl on the stove?\nOut:");
  EXPECT_FALSE(prompt.ids.empty());
  // Prompts are cached per instruction (64, then cleared): repeated and past the cache's size they
  // are the same prompts; a bad instruction is an error every time (never cached).
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < 100; ++i)
      EXPECT_EQ(policy.prompt("Put bowl " + std::to_string(i) + " on the stove").text,
                "In: What action should the robot take to put bowl " + std::to_string(i) + " on the stove?\nOut:");
  EXPECT_EQ(policy.prompt("Put the BOWL on the stove").ids, prompt.ids);
  for (int round = 0; round < 2; ++round)
    testing::expect_error([&] { policy.prompt(" \n"); }, {"instruction", "empty"});
  const Observation obs = observation(c["observations"][0]);
  o.center_crop = false;
  o.dtype = torch::kFloat32;
  const Policy uncropped = Policy::load(dir, o);
  EXPECT_LE(relative_error(uncropped.act(obs.images, obs.instruction, obs.proprio).actions,
                           tensors().at(c["observations"][0]["key"].get<std::string>() + ".actions")),
            1e-4);
  testing::remove_tree(dir);
}

// bf16 against the measured bound: the reference's own bf16 lands at distance d from its fp32 on
// the same case; ours, in either CPU matmul mode, must land within 2d of that fp32. (Which
// kernels LibTorch picks depends on the CPU, so bit-identity cannot be a test across machines.)
void expect_bf16_within_bf16_of_fp32(const std::string& bf16_case, const std::string& fp32_case,
                                     nn::CpuBf16Matmul mode) {
  const auto c = find_case(bf16_case);
  PolicyOptions o = options_for(c);
  o.cpu_bf16_matmul = mode;
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), o);
  const bool native = mode == nn::CpuBf16Matmul::kNative ||
                      (mode == nn::CpuBf16Matmul::kAuto && nn::cpu_has_native_bf16());
  EXPECT_EQ(policy.settings().matmul, native ? "native-bf16" : "fp32-copies");
  const Observation obs = observation(c["observations"][0]);
  const ActionChunk chunk = policy.act(obs.images, obs.instruction, obs.proprio);
  const torch::Tensor fp32 = tensors().at(fp32_case + ".0.actions");
  const torch::Tensor ref_bf16 = tensors().at(bf16_case + ".0.actions");
  const double ours = relative_error(chunk.actions, fp32), reference = testing::relative_error(ref_bf16, fp32);
  std::printf("  %s, %s matmul (CPU native bf16: %s): bf16 vs fp32 %.2e; reference bf16 vs fp32 %.2e; "
              "ours vs reference bf16 %.2e\n",
              bf16_case.c_str(), policy.settings().matmul.c_str(), nn::cpu_has_native_bf16() ? "yes" : "no", ours,
              reference, relative_error(chunk.actions, ref_bf16));
  EXPECT_GT(reference, 0.0);  // the case must show bf16 rounding at all
  EXPECT_LE(ours, 2 * reference);
}

TEST(PolicyConformance, FocusVlaBf16NativeMatmul) {
  expect_bf16_within_bf16_of_fp32("focus_bf16", "focus_bf16_as_f32", nn::CpuBf16Matmul::kNative);
}
TEST(PolicyConformance, FocusVlaBf16Fp32CopiesMatmul) {
  expect_bf16_within_bf16_of_fp32("focus_bf16", "focus_bf16_as_f32", nn::CpuBf16Matmul::kFloat32);
}
TEST(PolicyConformance, ProBf16NativeMatmul) {
  expect_bf16_within_bf16_of_fp32("pro_bf16", "pro_bf16_as_f32", nn::CpuBf16Matmul::kNative);
}
TEST(PolicyConformance, ProBf16Fp32CopiesMatmul) {
  expect_bf16_within_bf16_of_fp32("pro_bf16", "pro_bf16_as_f32", nn::CpuBf16Matmul::kFloat32);
}

// Our max relative distance from the reference's fp32 actions and the reference's own
// bf16-to-fp32 distance, for observation 0 of a bf16 checkpoint (cases `fp32_case`, `bf16_case`).
std::pair<double, double> bf16_distances(const ActionChunk& ours, const std::string& fp32_case = "focus_bf16_as_f32",
                                         const std::string& bf16_case = "focus_bf16") {
  const torch::Tensor fp32 = tensors().at(fp32_case + ".0.actions");
  const torch::Tensor ref_bf16 = tensors().at(bf16_case + ".0.actions");
  return {relative_error(ours.actions, fp32), testing::relative_error(ref_bf16, fp32)};
}

TEST(PolicyConformance, Bf16AutoMatmulWithinBf16OfFp32) {
  expect_bf16_within_bf16_of_fp32("focus_bf16", "focus_bf16_as_f32", nn::CpuBf16Matmul::kAuto);
}

// Buffers are kept per input shape: repeated and interleaved shapes, and an evicted shape built
// again, give the reference's values every time.
TEST(PolicyWorkspace, ReusedAndEvictedShapesGiveTheSameActions) {
  const auto c = find_case("focus_openvla");
  for (const int shapes : {1, 8}) {
    PolicyOptions o = options_for(c);
    o.max_cached_shapes = shapes;
    const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), o);
    for (const int i : {0, 1, 0, 0, 1}) {
      SCOPED_TRACE("max_cached_shapes " + std::to_string(shapes) + ", observation " + std::to_string(i));
      const Observation obs = observation(c["observations"][i]);
      const ActionChunk chunk = policy.act(obs.images, obs.instruction, obs.proprio);
      const std::string key = c["observations"][i]["key"];
      EXPECT_LE(relative_error(chunk.actions, tensors().at(key + ".actions")), 1e-4);
      EXPECT_FALSE(chunk.timing.cuda_graph);
      EXPECT_TRUE(std::isfinite(chunk.timing.vision_ms) && std::isfinite(chunk.timing.llm_ms));
    }
    EXPECT_EQ(policy.last_execution(), "cpu");
  }
}

// The GPU path, where this machine has one (skipped otherwise): eager on the first call of a
// shape, a captured CUDA graph from the second; both against the reference (fp32 with TF32 off,
// so that only summation order differs).
TEST(PolicyCuda, EagerAndGraphMatchTheReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto c = find_case("focus_openvla");
  const Policy policy = load_on_cuda(c);
  const Observation obs = observation(c["observations"][0]);
  const torch::Tensor expected = tensors().at(c["observations"][0]["key"].get<std::string>() + ".actions");
  for (const char* mode : {"cuda-eager", "cuda-graph", "cuda-graph"}) {
    const ActionChunk chunk = policy.act(obs.images, obs.instruction, obs.proprio);
    EXPECT_EQ(policy.last_execution(), mode);
    const double err = relative_error(chunk.actions, expected);
    std::printf("  %s: relative error %.2e, %.3f ms\n", mode, err, chunk.timing.total_ms);
    EXPECT_LE(err, 1e-4) << mode;
  }
  const auto chunks = policy.act_batch({observation(c["observations"][0]), observation(c["observations"][1])});
  EXPECT_LE(relative_error(chunks[1].actions, tensors().at(c["observations"][1]["key"].get<std::string>() + ".actions")),
            1e-4);
}

TEST(PolicyCuda, Bf16WithinBf16OfFp32) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto c = find_case("focus_bf16");
  PolicyOptions o = options_for(c);
  o.device = torch::kCUDA;
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), o);
  const Observation obs = observation(c["observations"][0]);
  for (int i = 0; i < 3; ++i) {
    const auto [ours, reference] = bf16_distances(policy.act(obs.images, obs.instruction, obs.proprio));
    std::printf("  %s bf16 vs fp32: %.2e; reference bf16 vs fp32: %.2e\n", policy.last_execution().c_str(), ours,
                reference);
    EXPECT_LE(ours, 2 * reference);
  }
}

// The CPU target of the bf16 path at full size.
TEST(PolicyConformance, FullSizeBf16WithinBf16OfFp32) {
  if (!has_case("full_focus_bf16")) GTEST_FAIL() << "gen_policy.py was run without --full";
  expect_bf16_within_bf16_of_fp32("full_focus_bf16", "full_focus_f32", nn::CpuBf16Matmul::kAuto);
}

TEST(PolicyConformance, FullSizeFocusVlaFp32) {
  if (!has_case("full_focus_f32")) GTEST_FAIL() << "gen_policy.py was run without --full";
  expect_case("full_focus_f32", 1e-4);
}

TEST(PolicyInfo, ReportsWhatItLoaded) {
  const auto c = find_case("focus_openvla");
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), options_for(c));
  EXPECT_EQ(policy.num_images(), 2);
  EXPECT_EQ(policy.chunk_size(), 8);
  EXPECT_EQ(policy.action_dim(), 7);
  EXPECT_EQ(policy.proprio_dim(), 8);
  EXPECT_EQ(policy.head_kind(), "focusvla");
  EXPECT_EQ(policy.unnorm_key(), "libero_spatial_no_noops");
}

TEST(PolicyInfo, DiagnosticsOfTheFocusBlocks) {
  const auto c = find_case("focus_openvla");
  PolicyOptions o = options_for(c);
  o.diagnostics = true;
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), o);
  const Observation obs = observation(c["observations"][0]);
  const ActionChunk chunk = policy.act(obs.images, obs.instruction, obs.proprio);
  ASSERT_FALSE(chunk.kept_indices.empty());
  ASSERT_EQ(chunk.gates.size(), chunk.kept_indices.size());
  const int64_t nv = 2 * 256;
  EXPECT_EQ(chunk.kept_indices[0].size(-1), 256);
  EXPECT_GE(chunk.kept_indices[0].min().item<int64_t>(), 0);
  EXPECT_LT(chunk.kept_indices[0].max().item<int64_t>(), nv);
}

TEST(PolicyErrors, BadObservations) {
  const auto c = find_case("focus_openvla");
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), options_for(c));
  const Observation good = observation(c["observations"][0]);
  expect_error([&] { policy.act({good.images[0]}, good.instruction, good.proprio); }, {"images", "got 1 camera", "takes 2", "config.json num_images_in_input"});
  expect_error([&] { policy.act(good.images, "put the \xff bowl", good.proprio); }, {"instruction", "invalid UTF-8"});
  expect_error([&] { policy.act(good.images, "   ", good.proprio); }, {"instruction", "empty"});
  expect_error([&] { policy.act(good.images, good.instruction, {1.0, 2.0}); }, {"proprio", "has 2 values", "takes 8"});
  auto nan = good.proprio;
  nan[3] = std::numeric_limits<double>::quiet_NaN();
  expect_error([&] { policy.act(good.images, good.instruction, nan); }, {"proprio", "value 3", "not finite"});
  auto inf = good.proprio;
  inf[0] = std::numeric_limits<double>::infinity();
  expect_error([&] { policy.act(good.images, good.instruction, inf); }, {"proprio", "value 0", "not finite"});
  expect_error([&] { policy.act({good.images[0].to(torch::kFloat32), good.images[1]}, good.instruction, good.proprio); },
               {"uint8"});
  expect_error([&] { policy.act({good.images[0].slice(2, 0, 1), good.images[1]}, good.instruction, good.proprio); },
               {"channel"});
  expect_error([&] { policy.act_batch({}); }, {"no observations"});
  // After every rejected call the policy still works.
  const ActionChunk chunk = policy.act(good.images, good.instruction, good.proprio);
  EXPECT_LE(relative_error(chunk.actions, tensors().at(c["observations"][0]["key"].get<std::string>() + ".actions")), 1e-4);
}

TEST(PolicyErrors, NoProprioProjectorButProprioGiven) {
  const auto c = find_case("pro_1cam_noproprio");
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), options_for(c));
  const Observation obs = observation(c["observations"][0]);
  expect_error([&] { policy.act(obs.images, obs.instruction, {0.1}); }, {"proprio", "no proprio projector"});
}

TEST(PolicyErrors, UnnormKeyMustNameADataset) {
  const auto c = find_case("focus_openvla");
  PolicyOptions o = options_for(c);
  o.unnorm_key = "no_such_dataset";
  expect_error([&] { Policy::load(data_path("policy", c["checkpoint"]), o); },
               {"unnorm_key 'no_such_dataset'", "choose one of", "libero_spatial_no_noops", "bridge_orig"});
  o.unnorm_key = "";
  expect_error([&] { Policy::load(data_path("policy", c["checkpoint"]), o); },
               {"holds statistics of", "datasets", "set PolicyOptions::unnorm_key"});
  o = options_for(c);
  o.prompt_format = "llama";
  expect_error([&] { Policy::load(data_path("policy", c["checkpoint"]), o); }, {"llama"});
  o = options_for(c);
  o.device = torch::Device(torch::kCUDA, 7);
  expect_error([&] { Policy::load(data_path("policy", c["checkpoint"]), o); }, {"PolicyOptions::device cuda:7"});
  o = options_for(c);
  o.num_images = 3;
  const Policy three = Policy::load(data_path("policy", c["checkpoint"]), o);
  const Observation obs = observation(c["observations"][0]);
  expect_error([&] { three.act(obs.images, obs.instruction, obs.proprio); },
               {"images", "got 2 camera", "takes 3", "PolicyOptions::num_images"});
}

TEST(PolicyErrors, BrokenCheckpoints) {
  const auto c = find_case("focus_openvla");
  const std::string no_head = broken_copy("policy_no_head", "focus_f32");
  fs::remove(no_head + "/action_head--150000_checkpoint.pt");
  expect_error([&] { Policy::load(no_head, options_for(c)); }, {"no action head"});

  // A head whose fc1 has the wrong shape: written by the project's own torch.save-compatible
  // path is not available in C++, so take the Pro head of another checkpoint (hidden size equal,
  // blocks without the focus modules): the missing focus keys are named.
  const std::string wrong_head = broken_copy("policy_wrong_head", "focus_f32");
  fs::copy_file(data_path("policy", "pro_f32_1cam/action_head--150000_checkpoint.pt"),
                wrong_head + "/action_head--150000_checkpoint.pt", fs::copy_options::overwrite_existing);
  expect_error([&] { Policy::load(wrong_head, options_for(c)); }, {"gate"});

  testing::remove_tree(no_head);
  testing::remove_tree(wrong_head);
}

// On a CPU the token embeddings are read in place from model.safetensors (llm/qwen2.h). A
// checkpoint rewritten in place under a loaded policy is an Error naming the file at the next
// act, not a SIGBUS; one replaced by a rename or deleted keeps working (the mapping holds the old
// file).
TEST(PolicyErrors, CheckpointChangedOnDiskUnderALoadedPolicy) {
  const auto c = find_case("focus_openvla");
  const auto& o = c["observations"][0];
  const Observation obs = observation(o);
  const torch::Tensor expected = tensors().at(o["key"].get<std::string>() + ".actions");
  const std::string dir = broken_copy("policy_changed_on_disk", "focus_f32");
  const std::string weights = dir + "/model.safetensors";
  const Policy policy = Policy::load(dir, options_for(c));
  EXPECT_LE(relative_error(policy.act(obs.images, obs.instruction, obs.proprio).actions, expected), 1e-4);

  // Replaced by a rename, then deleted: the policy still reads the file it loaded.
  fs::copy_file(weights, dir + "/new.safetensors");
  fs::rename(dir + "/new.safetensors", weights);
  EXPECT_LE(relative_error(policy.act(obs.images, obs.instruction, obs.proprio).actions, expected), 1e-4);
  const Policy second = Policy::load(dir, options_for(c));
  fs::remove(weights);
  EXPECT_LE(relative_error(second.act(obs.images, obs.instruction, obs.proprio).actions, expected), 1e-4);

  // Rewritten in place (what torch.save or safetensors' save_file to the same path do): a named
  // error on every later call.
  fs::copy_file(data_path("policy", "focus_f32") + "/model.safetensors", weights);
  const Policy fourth = Policy::load(dir, options_for(c));
  std::ofstream(weights, std::ios::binary | std::ios::app) << '\0';
  for (int call = 0; call < 2; ++call)
    expect_error([&] { fourth.act(obs.images, obs.instruction, obs.proprio); },
                 {weights, "changed on disk", "size went from", "load the policy again"});
  testing::remove_tree(dir);
}

// Without num_images_in_input (and PolicyOptions::num_images 0) the camera count follows each
// call: the two-camera FocusVLA and the one-camera Pro cases give the reference's actions, act and
// act_batch, from one loaded policy each.
TEST(PolicyCameras, ReleasedConfigWithoutCameraCountFollowsEachCall) {
  for (const auto& [name, from] : std::map<std::string, std::string>{{"focus_openvla", "focus_f32"},
                                                                    {"pro_1cam_noproprio", "pro_f32_1cam"}}) {
    SCOPED_TRACE(name);
    const auto c = find_case(name);
    const std::string dir = without_camera_count("policy_no_cameras_" + from, from);
    const Policy policy = Policy::load(dir, options_for(c));
    EXPECT_EQ(policy.num_images(), 0);
    EXPECT_EQ(policy.settings().cameras, 0);
    EXPECT_EQ(settings_json(policy.settings())["cameras"], 0);
    std::vector<Observation> batch;
    for (const auto& o : c["observations"]) {
      batch.push_back(observation(o));
      const ActionChunk chunk = policy.act(batch.back().images, batch.back().instruction, batch.back().proprio);
      const double err = relative_error(chunk.actions, tensors().at(o["key"].get<std::string>() + ".actions"));
      EXPECT_LE(err, 1e-4) << o["key"];
      std::printf("  %-28s act (per-call cameras) relative error %.2e\n", o["key"].get<std::string>().c_str(), err);
    }
    const auto chunks = policy.act_batch(batch);
    for (size_t b = 0; b < batch.size(); ++b)
      EXPECT_LE(relative_error(chunks[b].actions, tensors().at(c["observations"][b]["key"].get<std::string>() + ".actions")),
                1e-4);
    testing::remove_tree(dir);
  }
}

// One policy, calls of different camera counts (each its own shape), and the errors: a batch of
// mixed counts, no images; a fixed count (PolicyOptions::num_images) still refuses other counts.
TEST(PolicyCameras, PerCallCountsAndTheirErrors) {
  const auto c = find_case("focus_openvla");
  const std::string dir = without_camera_count("policy_per_call_cameras", "focus_f32");
  const Policy policy = Policy::load(dir, options_for(c));
  const Observation two = observation(c["observations"][0]);
  const Observation one{{two.images[0]}, two.instruction, two.proprio};
  const Observation three{{two.images[0], two.images[1], two.images[0]}, two.instruction, two.proprio};
  for (const Observation* obs : {&one, &three, &two}) {
    const ActionChunk chunk = policy.act(obs->images, obs->instruction, obs->proprio);
    EXPECT_TRUE(chunk.actions.allFinite()) << obs->images.size() << " cameras";
  }
  // The two-camera call after the others still is the reference's (its own buffers).
  EXPECT_LE(relative_error(policy.act(two.images, two.instruction, two.proprio).actions,
                           tensors().at(c["observations"][0]["key"].get<std::string>() + ".actions")),
            1e-4);
  expect_error([&] { policy.act_batch({two, one}); },
               {"observation 1: images", "got 1 camera", "observation 0 of this act_batch has 2"});
  expect_error([&] { policy.act({}, two.instruction, two.proprio); }, {"images", "no camera images"});

  PolicyOptions fixed = options_for(c);
  fixed.num_images = 2;
  const Policy two_cameras = Policy::load(dir, fixed);
  EXPECT_EQ(two_cameras.num_images(), 2);
  expect_error([&] { two_cameras.act(one.images, one.instruction, one.proprio); },
               {"images", "got 1 camera", "takes 2", "PolicyOptions::num_images"});
  testing::remove_tree(dir);
}

// The whole act diffed layer by layer against the reference: every name gen_policy.py recorded
// with PyTorch forward hooks on the module of that name (vision features and projector output,
// each decoder layer, the final norm, each head block) arrives through Policy::set_tap with the
// same values. fp32: the actions are exact (0 measured), so are the intermediates but for
// summation order (<= 1e-6 allowed, 0 measured on this machine).
TEST(PolicyTaps, EveryLayerMatchesTheReference) {
  const auto c = find_case("focus_openvla");
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), options_for(c));
  std::map<std::string, torch::Tensor> seen;
  Policy tapped = policy;
  tapped.set_tap([&](const std::string& name, const torch::Tensor& value) { seen[name] = value.detach().clone(); });
  const Observation obs = observation(c["observations"][0]);
  (void)tapped.act(obs.images, obs.instruction, obs.proprio);
  int compared = 0;
  for (const std::string& key : tensors().keys()) {
    if (key.rfind("taps.", 0) != 0) continue;
    const torch::Tensor& expected = tensors().at(key);
    const std::string name = key.substr(5);
    SCOPED_TRACE(name);
    ASSERT_EQ(seen.count(name), 1u) << "no tap named " << name;
    const torch::Tensor got = seen.at(name).dim() == expected.dim() + 1 ? seen.at(name)[0] : seen.at(name);
    ASSERT_EQ(got.sizes(), expected.sizes());
    const double err = testing::relative_error(got.to(torch::kFloat64), expected.to(torch::kFloat64));
    EXPECT_LE(err, 1e-6);
    std::printf("  %-24s relative error %.2e\n", name.c_str(), err);
    ++compared;
  }
  std::printf("  %d named intermediates compared; %zu tapped\n", compared, seen.size());
  EXPECT_GE(compared, 2 + 2 + 1 + 2);  // vision x2, tiny decoder layers, norm, head blocks
  EXPECT_TRUE(seen.count("llm.layers.0.attn_norm") == 1 && seen.count("head.blocks.0.kept") == 1);
  tapped.set_tap({});
  seen.clear();
  (void)tapped.act(obs.images, obs.instruction, obs.proprio);
  EXPECT_TRUE(seen.empty());
}

TEST(PolicyThreads, ConcurrentCallsAreSerializedAndExact) {
  const auto c = find_case("focus_openvla");
  const Policy policy = Policy::load(data_path("policy", c["checkpoint"]), options_for(c));
  const Observation obs = observation(c["observations"][0]);
  const ActionChunk reference = policy.act(obs.images, obs.instruction, obs.proprio);
  std::vector<ActionChunk> results(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] { results[t] = policy.act(obs.images, obs.instruction, obs.proprio); });
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_TRUE(r.actions == reference.actions);
}

}  // namespace
}  // namespace focusvla
