#pragma once
// The observation on the command line, shared by `act` and `explain`: camera image files, the
// instruction, the robot state, and the demo defaults (no --checkpoint: the demo checkpoint on
// the LIBERO sample).

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#ifdef FOCUSVLA_WITH_IMGCODECS
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include "focusvla/core/error.h"
#include "focusvla/io/json_file.h"
#include "focusvla/policy/policy.h"
#include "policy_args.h"

namespace focusvla::cli {

// An RGB uint8 (H, W, 3) tensor from a PNG / JPEG file.
inline torch::Tensor read_image(const std::string& path) {
#ifdef FOCUSVLA_WITH_IMGCODECS
  cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
  if (bgr.empty()) throw Error(path + ": cannot read or decode the image");
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return torch::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, torch::kUInt8).clone();
#else
  throw Error(path + ": this build has no image decoder (OpenCV imgcodecs was not found)");
#endif
}

// "0.1,0.2,..." -> numbers; a bad item is an Error naming `what` and the item.
inline std::vector<double> parse_numbers(const std::string& text, const std::string& what) {
  std::vector<double> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (item.empty() || end == item.c_str() || *end != '\0') throw Error(what + ": '" + item + "' is not a number");
    out.push_back(v);
  }
  return out;
}

inline std::string demo_checkpoint() {
  if (const char* env = std::getenv("FOCUSVLA_DEMO_CHECKPOINT")) return env;
  return "build/demo-checkpoint";
}

// The observation as parsed: image paths, instruction, comma-separated state.
struct ObservationArgs {
  std::vector<std::string> images;
  std::string instruction, proprio;
};

inline void add_observation_options(CLI::App& command, ObservationArgs& a) {
  command.add_option("--image", a.images, "camera image (PNG / JPEG), once per camera, in the trained order")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  command.add_option("--instruction", a.instruction, "the task, e.g. \"put the bowl on the plate\"");
  command.add_option("--proprio", a.proprio, "robot state, comma-separated (v1,...,vN)");
}

// Without --checkpoint: the demo checkpoint, and what is not given from the LIBERO sample
// ($FOCUSVLA_ASSETS/libero-sample: both cameras, its task and state, libero_spatial_no_noops).
// Returns whether the demo is used. `command` names the command in errors.
inline bool use_demo_defaults(const std::string& command, PolicyArgs& policy, ObservationArgs& obs,
                              PolicyOptions& options) {
  if (!policy.checkpoint.empty()) return false;
  policy.checkpoint = demo_checkpoint();
  if (!std::filesystem::exists(policy.checkpoint + "/config.json"))
    throw Error(command + ": no --checkpoint, and no demo checkpoint at " + policy.checkpoint +
                " (scripts/demo writes one: full-size FocusVLA layout, random weights)");
  const std::string sample =
      std::string(std::getenv("FOCUSVLA_ASSETS") ? std::getenv("FOCUSVLA_ASSETS") : "assets") + "/libero-sample";
  const auto sample_obs = io::read_json_file(sample + "/observation.json");
  if (obs.images.empty())
    for (const char* k : {"agentview", "wrist"}) obs.images.push_back(sample + "/" + sample_obs["images"][k].get<std::string>());
  if (obs.instruction.empty()) obs.instruction = sample_obs["task_description"];
  if (obs.proprio.empty())
    for (const auto& v : sample_obs["state"]) obs.proprio += (obs.proprio.empty() ? "" : ",") + std::to_string(v.get<double>());
  if (options.unnorm_key.empty()) options.unnorm_key = "libero_spatial_no_noops";
  return true;
}

// Checks the camera count against --num-images and sets options.num_images to it.
inline void check_cameras(const std::string& command, const ObservationArgs& obs, int64_t num_images,
                          PolicyOptions& options) {
  if (obs.images.empty()) throw Error(command + ": give at least one --image");
  if (obs.instruction.empty()) throw Error(command + ": --instruction is required");
  const auto given = static_cast<int64_t>(obs.images.size());
  if (num_images > 0 && num_images != given)
    throw Error(command + ": --num-images " + std::to_string(num_images) + " but " + std::to_string(given) +
                " --image given: give one --image per camera");
  options.num_images = given;
}

}  // namespace focusvla::cli
