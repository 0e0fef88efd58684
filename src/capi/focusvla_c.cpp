// The C ABI (include/focusvla/focusvla.h) over focusvla::Policy. Each entry point checks its
// pointers, converts the C views into the C++ API's types, and turns every exception into a
// status plus the thread's last-error message: nothing throws across the boundary.

#include "focusvla/focusvla.h"

#include <torch/torch.h>

#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/policy/policy.h"
#include "focusvla/runtime/chunk_executor.h"
#include "focusvla/version.h"

struct focusvla_policy {
  focusvla::Policy policy;
};

struct focusvla_executor {
  focusvla::runtime::ChunkExecutor executor;
  int64_t action_dim;
};

namespace {

thread_local std::string last_error;

focusvla_status fail(focusvla_status status, std::string message) {
  last_error = std::move(message);
  return status;
}

// Runs `body`, mapping exceptions to statuses: focusvla::Error is the library refusing the input.
template <typename Body>
focusvla_status guarded(const char* function, Body&& body) {
  try {
    return body();
  } catch (const focusvla::Error& e) {
    return fail(FOCUSVLA_ERROR_BAD_INPUT, e.what());
  } catch (const std::bad_alloc&) {
    return fail(FOCUSVLA_ERROR_INTERNAL, std::string(function) + ": out of memory");
  } catch (const std::exception& e) {
    return fail(FOCUSVLA_ERROR_INTERNAL, std::string(function) + ": " + e.what());
  } catch (...) {
    return fail(FOCUSVLA_ERROR_INTERNAL, std::string(function) + ": unknown exception");
  }
}

std::string text_or(const char* value, const char* fallback) {
  return value != nullptr && *value != '\0' ? value : fallback;
}

focusvla::PolicyOptions to_options(const focusvla_policy_options& o) {
  focusvla::PolicyOptions options;
  const std::string device = text_or(o.device, "cpu");
  try {
    options.device = torch::Device(device);
  } catch (const std::exception&) {
    throw focusvla::Error("options.device '" + device + "': not a device (cpu, cuda or cuda:N)");
  }
  const std::string dtype = text_or(o.dtype, "auto");
  if (dtype == "float32")
    options.dtype = torch::kFloat32;
  else if (dtype == "bfloat16")
    options.dtype = torch::kBFloat16;
  else if (dtype == "float16")
    options.dtype = torch::kFloat16;
  else if (dtype != "auto")
    throw focusvla::Error("options.dtype '" + dtype + "': not auto, float32, bfloat16 or float16");
  options.unnorm_key = text_or(o.unnorm_key, "");
  options.prompt_format = text_or(o.prompt_format, "auto");
  options.center_crop = o.center_crop != 0;
  options.jpeg_roundtrip = o.no_jpeg_roundtrip == 0;
  focusvla::check(o.num_images >= 0, "options.num_images", "negative");
  focusvla::check(o.threads >= 0, "options.threads", "negative");
  options.num_images = o.num_images;
  options.threads = o.threads;
  options.quantize = focusvla::nn::parse_quantize(text_or(o.quantize, "none"), "options.quantize");
  return options;
}

// A C image as the (H, W, 3) uint8 tensor Policy::act takes: a view of the caller's pixels when
// its rows are packed, a contiguous copy when they are padded.
torch::Tensor image_view(const focusvla_image& image, size_t index) {
  const std::string what = "images[" + std::to_string(index) + "]";
  focusvla::check(image.data != nullptr, what, "data is NULL");
  focusvla::check(image.height > 0 && image.width > 0, what,
                  "height and width must be positive, got " + std::to_string(image.height) + " x " +
                      std::to_string(image.width));
  focusvla::check(image.row_stride >= 3 * static_cast<int64_t>(image.width), what,
                  "row_stride " + std::to_string(image.row_stride) + " is below 3 * width = " +
                      std::to_string(3 * static_cast<int64_t>(image.width)));
  return torch::from_blob(const_cast<uint8_t*>(image.data), {image.height, image.width, 3},
                          {image.row_stride, 3, 1}, torch::kUInt8)
      .contiguous();
}

// The C arguments of one observation, checked, as the C++ API's types.
focusvla::Observation observation_of(const focusvla_image* images, size_t n_images, const char* instruction,
                                     const double* proprio, size_t proprio_len) {
  focusvla::Observation obs;
  for (size_t i = 0; i < n_images; ++i) obs.images.push_back(image_view(images[i], i));
  obs.instruction = instruction;
  obs.proprio.assign(proprio, proprio + proprio_len);
  return obs;
}

// NULL checks shared by act and tick; empty when the arguments are usable.
std::string misuse(const char* function, const focusvla_image* images, size_t n_images, const char* instruction,
                   const double* proprio, size_t proprio_len, const double* out) {
  const std::string f = function;
  if (images == nullptr && n_images > 0) return f + ": images is NULL";
  if (instruction == nullptr) return f + ": instruction is NULL";
  if (proprio == nullptr && proprio_len > 0) return f + ": proprio is NULL but proprio_len is " + std::to_string(proprio_len);
  if (out == nullptr) return f + ": out is NULL";
  return {};
}

focusvla::runtime::ExecutorOptions to_executor_options(const focusvla_executor_options& o) {
  focusvla::runtime::ExecutorOptions options;
  options.mode = focusvla::runtime::parse_mode(text_or(o.mode, "async"));
  options.hz = o.hz;
  options.execute_steps = o.execute_steps;
  options.threshold = o.threshold;
  options.aggregate = focusvla::runtime::parse_aggregate(text_or(o.aggregate, "replace"));
  options.new_weight = o.new_weight;
  options.ensemble_m = o.ensemble_m;
  return options;
}

}  // namespace

extern "C" {

const char* focusvla_version(void) { return focusvla::kVersion; }

const char* focusvla_last_error(void) { return last_error.c_str(); }

void focusvla_policy_options_init(focusvla_policy_options* options) {
  if (options == nullptr) return;
  std::memset(options, 0, sizeof(*options));
  options->center_crop = 1;
}

focusvla_status focusvla_policy_load(const char* path, const focusvla_policy_options* options, focusvla_policy** out) {
  if (out == nullptr) return fail(FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_policy_load: out is NULL");
  *out = nullptr;
  if (path == nullptr) return fail(FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_policy_load: path is NULL");
  return guarded("focusvla_policy_load", [&] {
    focusvla_policy_options defaults;
    focusvla_policy_options_init(&defaults);
    auto policy = focusvla::Policy::load(path, to_options(options != nullptr ? *options : defaults));
    *out = new focusvla_policy{std::move(policy)};
    return FOCUSVLA_OK;
  });
}

focusvla_status focusvla_policy_act(focusvla_policy* policy, const focusvla_image* images, size_t n_images,
                                    const char* instruction, const double* proprio, size_t proprio_len, double* out,
                                    size_t out_capacity) {
  if (policy == nullptr) return fail(FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_policy_act: policy is NULL");
  const std::string wrong = misuse("focusvla_policy_act", images, n_images, instruction, proprio, proprio_len, out);
  if (!wrong.empty()) return fail(FOCUSVLA_ERROR_INVALID_ARGUMENT, wrong);
  const auto needed = static_cast<size_t>(policy->policy.chunk_size() * policy->policy.action_dim());
  if (out_capacity < needed)
    return fail(FOCUSVLA_ERROR_BUFFER_TOO_SMALL, "focusvla_policy_act: out_capacity " + std::to_string(out_capacity) +
                                                     " is below chunk_size * action_dim = " + std::to_string(needed));
  return guarded("focusvla_policy_act", [&] {
    const focusvla::Observation obs = observation_of(images, n_images, instruction, proprio, proprio_len);
    const focusvla::ActionChunk chunk = policy->policy.act(obs.images, obs.instruction, obs.proprio);
    std::memcpy(out, chunk.actions.data(), needed * sizeof(double));  // row-major, as documented
    return FOCUSVLA_OK;
  });
}

int64_t focusvla_policy_chunk_size(const focusvla_policy* policy) { return policy ? policy->policy.chunk_size() : -1; }
int64_t focusvla_policy_action_dim(const focusvla_policy* policy) { return policy ? policy->policy.action_dim() : -1; }
int64_t focusvla_policy_num_images(const focusvla_policy* policy) { return policy ? policy->policy.num_images() : -1; }
int64_t focusvla_policy_proprio_dim(const focusvla_policy* policy) { return policy ? policy->policy.proprio_dim() : -1; }

void focusvla_policy_free(focusvla_policy* policy) { delete policy; }

void focusvla_executor_options_init(focusvla_executor_options* options) {
  if (options == nullptr) return;
  const focusvla::runtime::ExecutorOptions defaults;
  std::memset(options, 0, sizeof(*options));
  options->hz = defaults.hz;
  options->execute_steps = defaults.execute_steps;
  options->threshold = defaults.threshold;
  options->new_weight = defaults.new_weight;
  options->ensemble_m = defaults.ensemble_m;
}

focusvla_status focusvla_executor_create(focusvla_policy* policy, const focusvla_executor_options* options,
                                         focusvla_executor** out) {
  if (out == nullptr) return fail(FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_executor_create: out is NULL");
  *out = nullptr;
  if (policy == nullptr) return fail(FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_executor_create: policy is NULL");
  return guarded("focusvla_executor_create", [&] {
    focusvla_executor_options defaults;
    focusvla_executor_options_init(&defaults);
    focusvla::runtime::ChunkExecutor executor(policy->policy, to_executor_options(options ? *options : defaults));
    *out = new focusvla_executor{std::move(executor), policy->policy.action_dim()};
    return FOCUSVLA_OK;
  });
}

focusvla_status focusvla_executor_tick(focusvla_executor* executor, const focusvla_image* images, size_t n_images,
                                       const char* instruction, const double* proprio, size_t proprio_len,
                                       double* action, size_t action_capacity) {
  if (executor == nullptr) return fail(FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_executor_tick: executor is NULL");
  const std::string wrong = misuse("focusvla_executor_tick", images, n_images, instruction, proprio, proprio_len, action);
  if (!wrong.empty()) return fail(FOCUSVLA_ERROR_INVALID_ARGUMENT, wrong);
  const auto needed = static_cast<size_t>(executor->action_dim);
  if (action_capacity < needed)
    return fail(FOCUSVLA_ERROR_BUFFER_TOO_SMALL, "focusvla_executor_tick: action_capacity " +
                                                     std::to_string(action_capacity) + " is below action_dim = " +
                                                     std::to_string(needed));
  return guarded("focusvla_executor_tick", [&] {
    const Eigen::VectorXd now =
        executor->executor.tick(observation_of(images, n_images, instruction, proprio, proprio_len));
    std::memcpy(action, now.data(), needed * sizeof(double));
    return FOCUSVLA_OK;
  });
}

focusvla_status focusvla_executor_metrics_get(const focusvla_executor* executor, focusvla_executor_metrics* out) {
  if (executor == nullptr || out == nullptr)
    return fail(FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_executor_metrics_get: executor or out is NULL");
  return guarded("focusvla_executor_metrics_get", [&] {
    const focusvla::runtime::ExecutorMetrics m = executor->executor.metrics();
    *out = focusvla_executor_metrics{m.ticks, m.inferences, m.failed_inferences, m.deadline_misses, m.held_ticks,
                                     m.dropped_steps, m.merged_steps, m.inference_p50_ms, m.inference_p99_ms,
                                     m.inference_max_ms, m.jitter_p50_ms, m.jitter_p99_ms, m.jitter_max_ms,
                                     m.staleness_mean_ms, m.staleness_max_ms};
    return FOCUSVLA_OK;
  });
}

void focusvla_executor_free(focusvla_executor* executor) { delete executor; }

}  // extern "C"
