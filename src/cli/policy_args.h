#pragma once
// The command-line options that load a Policy, shared by `act` and `serve`, and the checked
// integer option every command uses.

#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/policy/option_text.h"
#include "focusvla/policy/policy.h"

namespace focusvla::cli {

// The policy options as parsed.
struct PolicyArgs {
  std::string checkpoint, unnorm_key, device;
  std::string prompt_format = "auto", dtype = "auto", quantize = "none";
  bool center_crop = false, no_center_crop = false;
  bool no_jpeg_roundtrip = false;
  int64_t num_images = 0;
  int threads = 0;
  std::vector<int64_t> batch_buckets;  // serve: --batch-buckets (empty: the policy's default)
  int max_cached_shapes = 8;           // serve: --max-cached-shapes
};

// `text` as an integer in [low, high]; otherwise a ValidationError naming the flag, the text and the
// accepted range (CLI11's own range check would call "abc" out of range).
inline int64_t checked_int(const std::string& flag, const std::string& text, int64_t low, int64_t high) {
  const std::string range = " (accepted: " + std::to_string(low) + " .. " + std::to_string(high) + ")";
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec == std::errc::invalid_argument || ptr != end)
    throw CLI::ValidationError(flag, "'" + text + "' is not an integer" + range);
  if (ec == std::errc::result_out_of_range || value < low || value > high)
    throw CLI::ValidationError(flag, "'" + text + "' is out of range" + range);
  return value;
}

// An integer option in [low, high] (checked_int).
template <typename Int>
void add_int_option(CLI::App& command, const std::string& flag, Int& target, int64_t low, int64_t high,
                    const std::string& help) {
  command
      .add_option_function<std::string>(
          flag, [&target, flag, low, high](const std::string& text) {
            target = static_cast<Int>(checked_int(flag, text, low, high));
          },
          help)
      ->type_name("INT");
}

// A comma-separated list of integers in [low, high] ("1,2,4,8"), each entry checked_int.
inline void add_int_list_option(CLI::App& command, const std::string& flag, std::vector<int64_t>& target, int64_t low,
                                int64_t high, const std::string& help) {
  command
      .add_option_function<std::string>(
          flag,
          [&target, flag, low, high](const std::string& text) {
            std::vector<int64_t> values;
            for (size_t begin = 0; begin <= text.size();) {
              const size_t end = std::min(text.find(',', begin), text.size());
              values.push_back(checked_int(flag, text.substr(begin, end - begin), low, high));
              begin = end + 1;
            }
            target = std::move(values);
          },
          help)
      ->type_name("LIST");
}

// --checkpoint, --unnorm-key, --prompt-format, --dtype, --device, --center-crop /
// --no-center-crop, --no-jpeg-roundtrip, --threads, --quantize. `default_device`: "cpu", or "auto"
// (CUDA when there is one).
inline void add_policy_options(CLI::App& command, PolicyArgs& a, const std::string& default_device) {
  a.device = default_device;
  command.add_option("--checkpoint", a.checkpoint, "checkpoint directory (VLA-Adapter release layout)");
  command.add_option("--unnorm-key", a.unnorm_key, "dataset statistics to un-normalize with");
  command.add_option("--prompt-format", a.prompt_format, "prompt format (auto: the reference's for this checkpoint)")
      ->check(CLI::IsMember(option_spellings("prompt_format")));
  command
      .add_option("--dtype", a.dtype,
                  "compute dtype (auto: the checkpoint's where the device computes it natively, else float32)")
      ->check(CLI::IsMember(option_spellings("dtype")));
  command.add_option("--device", a.device,
                     default_device == "auto" ? "auto (cuda when this machine has a GPU, else cpu), cpu, cuda or cuda:N"
                                              : "cpu, cuda or cuda:N");
  auto* crop = command.add_flag("--center-crop", a.center_crop, "the 0.9 center crop (the default)");
  command.add_flag("--no-center-crop", a.no_center_crop, "no center crop (policies trained without crop augmentation)")
      ->excludes(crop);
  command.add_flag("--no-jpeg-roundtrip", a.no_jpeg_roundtrip,
                   "no JPEG encode / decode before the LIBERO resize of non-224 cameras (policies trained on frames "
                   "that were never JPEG-compressed)");
  add_int_option(command, "--threads", a.threads, 1, 1024, "CPU threads");
  command
      .add_option("--quantize", a.quantize,
                  "quantized linear layers, made at load (none: the default; int8: W8A8 on a CPU, weight-only on "
                  "CUDA; fp8: CUDA compute capability 8.9+); see docs/QUANTIZATION.md")
      ->check(CLI::IsMember(option_spellings("quantize")));
}

inline PolicyOptions policy_options(const PolicyArgs& a) {
  PolicyOptions options;
  options.device = parse_device(a.device, "--device");
  options.dtype = parse_dtype(a.dtype, "--dtype");
  options.prompt_format = check_prompt_format(a.prompt_format, "--prompt-format");
  options.center_crop = !a.no_center_crop;
  options.jpeg_roundtrip = !a.no_jpeg_roundtrip;
  options.unnorm_key = a.unnorm_key;
  options.threads = a.threads;
  options.num_images = a.num_images;
  options.quantize = parse_quantize(a.quantize, "--quantize");
  options.batch_buckets = a.batch_buckets;
  options.max_cached_shapes = a.max_cached_shapes;
  return options;
}

}  // namespace focusvla::cli
