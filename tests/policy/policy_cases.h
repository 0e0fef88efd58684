#pragma once
// The policy test group's oracle cases (tests/python/gen_policy.py): cases.json and
// tensors.safetensors, the options each case was computed with, its observations, and the
// relative error of a chunk against the reference's actions.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "focusvla/io/json_file.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/policy/policy.h"
#include "tensor_util.h"
#include "test_util.h"

namespace focusvla {
namespace {

using testing::data_path;

inline const io::StateDict& tensors() {
  static const io::StateDict state = io::StateDict::from_safetensors(data_path("policy", "tensors.safetensors"));
  return state;
}

inline nlohmann::json find_case(const std::string& name) {
  for (const auto& c : io::read_json_file(data_path("policy", "cases.json")))
    if (c["name"] == name) return c;
  ADD_FAILURE() << "no case " << name;
  return {};
}

// Every setting the case was computed with, explicit (no defaults).
inline PolicyOptions options_for(const nlohmann::json& c) {
  PolicyOptions o;
  o.dtype = c["dtype"] == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  // LibTorch's own bf16 kernels, as the reference runs (the default kAuto is tested apart).
  o.cpu_bf16_matmul = nn::CpuBf16Matmul::kNative;
  o.unnorm_key = c["unnorm_key"];
  o.prompt_format = c["prompt_format"];
  o.center_crop = c.value("center_crop", false);
  o.jpeg_roundtrip = c.value("jpeg_roundtrip", true);
  return o;
}

inline Observation observation(const nlohmann::json& o) {
  Observation obs;
  for (int c = 0; c < o["cameras"].get<int>(); ++c)
    obs.images.push_back(tensors().at(o["key"].get<std::string>() + ".image" + std::to_string(c)));
  obs.instruction = o["instruction"];
  obs.proprio = o["proprio"].get<std::vector<double>>();
  return obs;
}

// max |a - b| / max |b| over the chunk.
inline double relative_error(const ActionChunk::Matrix& got, const torch::Tensor& expected) {
  const torch::Tensor e = expected.to(torch::kFloat64).contiguous();
  const torch::Tensor g = torch::from_blob(const_cast<double*>(got.data()), {got.rows(), got.cols()}, torch::kFloat64);
  return testing::relative_error(g, e);
}

// Whether gen_policy.py wrote `name` (the full-size cases need --full; the 256x256 LIBERO cases,
// tensorflow).
inline bool has_case(const std::string& name) {
  for (const auto& c : io::read_json_file(data_path("policy", "cases.json")))
    if (c["name"] == name) return true;
  return false;
}

// The case's checkpoint on CUDA, fp32 with TF32 off (only summation order then differs from the
// reference). Call it after checking that there is a CUDA device.
inline Policy load_on_cuda(const nlohmann::json& c) {
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  PolicyOptions o = options_for(c);
  o.device = torch::kCUDA;
  return Policy::load(data_path("policy", c["checkpoint"]), o);
}

// A copy of a checkpoint directory, for a test to change one file of (a scratch directory).
inline std::string broken_copy(const std::string& name, const std::string& from) {
  const std::string dir = testing::scratch_dir(name);
  for (const auto& e : std::filesystem::directory_iterator(data_path("policy", from)))
    if (e.is_regular_file()) std::filesystem::copy_file(e.path(), dir + "/" + e.path().filename().string());
  return dir;
}

// A copy of a tiny checkpoint whose config.json has no num_images_in_input, as the released
// VLA-Adapter checkpoints.
inline std::string without_camera_count(const std::string& name, const std::string& from) {
  const std::string dir = broken_copy(name, from);
  auto config = io::read_json_file(dir + "/config.json");
  config.erase("num_images_in_input");
  std::ofstream(dir + "/config.json") << config.dump();
  return dir;
}

}  // namespace
}  // namespace focusvla
