// The C ABI (include/focusvla/focusvla.h) over focusvla::Policy. Each entry point checks its
// pointers, converts the C views into the C++ API's types, and turns every exception into a
// status plus the thread's last-error message: nothing throws across the boundary.

#include "focusvla/focusvla.h"

#include <torch/torch.h>

#include <cstddef>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/policy/option_text.h"
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
thread_local bool last_error_lost = false;  // the message could not be stored (out of memory)

// Stores "prefix: message" (or just message) as the thread's last error; never throws, so that the
// catch clauses of guarded() cannot let an exception out.
focusvla_status fail(focusvla_status status, const char* prefix, const char* message) noexcept {
  try {
    last_error = prefix != nullptr ? std::string(prefix) + ": " + message : std::string(message);
    last_error_lost = false;
  } catch (...) {
    last_error_lost = true;
  }
  return status;
}

// A refusal by the ABI itself (a NULL pointer, a small buffer), thrown inside guarded().
struct CallError {
  focusvla_status status;
  std::string message;
};

void require(bool condition, focusvla_status status, const char* function, const char* problem) {
  if (!condition) throw CallError{status, std::string(function) + ": " + problem};
}

// Runs `body`, mapping exceptions to statuses: focusvla::Error is the library refusing the input.
// Every entry point that can fail does all its work (allocations included) inside.
template <typename Body>
focusvla_status guarded(const char* function, Body&& body) noexcept {
  try {
    return body();
  } catch (const CallError& e) {
    return fail(e.status, nullptr, e.message.c_str());
  } catch (const focusvla::Error& e) {
    return fail(FOCUSVLA_ERROR_BAD_INPUT, nullptr, e.what());
  } catch (const std::bad_alloc&) {
    return fail(FOCUSVLA_ERROR_INTERNAL, function, "out of memory");
  } catch (const std::exception& e) {
    return fail(FOCUSVLA_ERROR_INTERNAL, function, e.what());
  } catch (...) {
    return fail(FOCUSVLA_ERROR_INTERNAL, function, "unknown exception");
  }
}

std::string text_or(const char* value, const char* fallback) {
  return value != nullptr && *value != '\0' ? value : fallback;
}

// The end of each field of focusvla_policy_options, in order: a caller's struct_size keeps the
// fields that end within it (an older, shorter struct: the rest are defaults).
constexpr size_t kOptionFieldEnds[] = {
#define FOCUSVLA_FIELD_END(field) offsetof(focusvla_policy_options, field) + sizeof(focusvla_policy_options::field)
    FOCUSVLA_FIELD_END(struct_size),    FOCUSVLA_FIELD_END(device),         FOCUSVLA_FIELD_END(dtype),
    FOCUSVLA_FIELD_END(unnorm_key),     FOCUSVLA_FIELD_END(prompt_format),  FOCUSVLA_FIELD_END(no_center_crop),
    FOCUSVLA_FIELD_END(num_images),     FOCUSVLA_FIELD_END(threads),        FOCUSVLA_FIELD_END(quantize),
    FOCUSVLA_FIELD_END(no_jpeg_roundtrip), FOCUSVLA_FIELD_END(no_cuda_graphs), FOCUSVLA_FIELD_END(normalization),
    FOCUSVLA_FIELD_END(max_cached_shapes),
#undef FOCUSVLA_FIELD_END
};

// The same for focusvla_executor_options.
constexpr size_t kExecutorFieldEnds[] = {
#define FOCUSVLA_FIELD_END(field) offsetof(focusvla_executor_options, field) + sizeof(focusvla_executor_options::field)
    FOCUSVLA_FIELD_END(struct_size), FOCUSVLA_FIELD_END(mode),       FOCUSVLA_FIELD_END(hz),
    FOCUSVLA_FIELD_END(execute_steps), FOCUSVLA_FIELD_END(threshold), FOCUSVLA_FIELD_END(aggregate),
    FOCUSVLA_FIELD_END(new_weight),  FOCUSVLA_FIELD_END(ensemble_m), FOCUSVLA_FIELD_END(ensemble_uniform),
#undef FOCUSVLA_FIELD_END
};

// The caller's options struct as this library's: zeros (defaults) past the caller's struct_size
// (0: this header's size); a struct_size beyond this library's struct is refused.
template <typename Options, size_t N>
Options read_struct(const Options* given, const size_t (&field_ends)[N], const char* function, const char* type) {
  Options o;
  std::memset(&o, 0, sizeof(o));
  if (given == nullptr) return o;
  const size_t size = given->struct_size == 0 ? sizeof(o) : given->struct_size;
  if (size > sizeof(o))
    throw CallError{FOCUSVLA_ERROR_INVALID_ARGUMENT,
                    std::string(function) + ": options.struct_size " + std::to_string(size) + " is larger than this "
                    "library's " + type + " (" + std::to_string(sizeof(o)) +
                    " bytes): the program was built against a newer focusvla.h"};
  size_t usable = 0;
  for (const size_t end : field_ends)
    if (end <= size) usable = end;
  std::memcpy(&o, given, usable);
  return o;
}

focusvla_policy_options read_options(const focusvla_policy_options* given) {
  return read_struct(given, kOptionFieldEnds, "focusvla_policy_load", "focusvla_policy_options");
}

// Every zero / NULL field is PolicyOptions' default.
focusvla::PolicyOptions to_options(const focusvla_policy_options& o) {
  focusvla::PolicyOptions options;
  options.device = focusvla::parse_device(text_or(o.device, "cpu"), "options.device");
  options.dtype = focusvla::parse_dtype(text_or(o.dtype, "auto"), "options.dtype");
  options.unnorm_key = text_or(o.unnorm_key, "");
  options.prompt_format = focusvla::check_prompt_format(text_or(o.prompt_format, "auto"), "options.prompt_format");
  options.center_crop = o.no_center_crop == 0;
  options.jpeg_roundtrip = o.no_jpeg_roundtrip == 0;
  options.cuda_graphs = o.no_cuda_graphs == 0;
  focusvla::check(o.num_images >= 0, "options.num_images", "negative");
  focusvla::check(o.threads >= 0, "options.threads", "negative");
  focusvla::check(o.max_cached_shapes >= 0, "options.max_cached_shapes", "negative");
  options.num_images = o.num_images;
  options.threads = o.threads;
  if (o.max_cached_shapes > 0) options.max_cached_shapes = o.max_cached_shapes;
  options.normalization = focusvla::check_normalization(text_or(o.normalization, "bounds_q99"), "options.normalization");
  options.quantize = focusvla::parse_quantize(text_or(o.quantize, "none"), "options.quantize");
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

// Every zero / NULL field is ExecutorOptions' default.
focusvla::runtime::ExecutorOptions to_executor_options(const focusvla_executor_options& o) {
  focusvla::runtime::ExecutorOptions options;
  options.mode = focusvla::runtime::parse_mode(text_or(o.mode, "async"));
  if (o.hz != 0) options.hz = o.hz;
  options.execute_steps = o.execute_steps;
  if (o.threshold != 0) options.threshold = o.threshold;
  options.aggregate = focusvla::runtime::parse_aggregate(text_or(o.aggregate, "replace"));
  if (o.new_weight != 0) options.new_weight = o.new_weight;
  focusvla::check(o.ensemble_uniform == 0 || o.ensemble_uniform == 1, "options.ensemble_uniform", "not 0 or 1");
  focusvla::check(o.ensemble_uniform == 0 || o.ensemble_m == 0, "options.ensemble_m",
                  "set together with ensemble_uniform (equal weights are m = 0)");
  if (o.ensemble_uniform != 0)
    options.ensemble_m = 0;
  else if (o.ensemble_m != 0)
    options.ensemble_m = o.ensemble_m;
  return options;
}

}  // namespace

extern "C" {

const char* focusvla_version(void) noexcept { return focusvla::kVersion; }

const char* focusvla_last_error(void) noexcept {
  return last_error_lost ? "focusvla: out of memory while storing an error message" : last_error.c_str();
}

void focusvla_policy_options_init(focusvla_policy_options* options) noexcept {
  if (options == nullptr) return;
  std::memset(options, 0, sizeof(*options));  // every zero field is the default
  options->struct_size = static_cast<uint32_t>(sizeof(*options));
}

focusvla_status focusvla_policy_load(const char* path, const focusvla_policy_options* options,
                                     focusvla_policy** out) noexcept {
  return guarded("focusvla_policy_load", [&] {
    require(out != nullptr, FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_policy_load", "out is NULL");
    *out = nullptr;
    require(path != nullptr, FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_policy_load", "path is NULL");
    auto policy = focusvla::Policy::load(path, to_options(read_options(options)));
    *out = new focusvla_policy{std::move(policy)};
    return FOCUSVLA_OK;
  });
}

focusvla_status focusvla_policy_act(focusvla_policy* policy, const focusvla_image* images, size_t n_images,
                                    const char* instruction, const double* proprio, size_t proprio_len, double* out,
                                    size_t out_capacity) noexcept {
  return guarded("focusvla_policy_act", [&] {
    require(policy != nullptr, FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_policy_act", "policy is NULL");
    const std::string wrong = misuse("focusvla_policy_act", images, n_images, instruction, proprio, proprio_len, out);
    if (!wrong.empty()) throw CallError{FOCUSVLA_ERROR_INVALID_ARGUMENT, wrong};
    const auto needed = static_cast<size_t>(policy->policy.chunk_size() * policy->policy.action_dim());
    if (out_capacity < needed)
      throw CallError{FOCUSVLA_ERROR_BUFFER_TOO_SMALL, "focusvla_policy_act: out_capacity " +
                                                           std::to_string(out_capacity) +
                                                           " is below chunk_size * action_dim = " + std::to_string(needed)};
    const focusvla::Observation obs = observation_of(images, n_images, instruction, proprio, proprio_len);
    const focusvla::ActionChunk chunk = policy->policy.act(obs.images, obs.instruction, obs.proprio);
    std::memcpy(out, chunk.actions.data(), needed * sizeof(double));  // row-major, as documented
    return FOCUSVLA_OK;
  });
}

int64_t focusvla_policy_chunk_size(const focusvla_policy* policy) noexcept {
  return policy ? policy->policy.chunk_size() : -1;
}
int64_t focusvla_policy_action_dim(const focusvla_policy* policy) noexcept {
  return policy ? policy->policy.action_dim() : -1;
}
int64_t focusvla_policy_num_images(const focusvla_policy* policy) noexcept {
  return policy ? policy->policy.num_images() : -1;
}
int64_t focusvla_policy_proprio_dim(const focusvla_policy* policy) noexcept {
  return policy ? policy->policy.proprio_dim() : -1;
}

void focusvla_policy_free(focusvla_policy* policy) noexcept { delete policy; }

void focusvla_executor_options_init(focusvla_executor_options* options) noexcept {
  if (options == nullptr) return;
  std::memset(options, 0, sizeof(*options));  // every zero field is the default
  options->struct_size = static_cast<uint32_t>(sizeof(*options));
}

focusvla_status focusvla_executor_create(focusvla_policy* policy, const focusvla_executor_options* options,
                                         focusvla_executor** out) noexcept {
  return guarded("focusvla_executor_create", [&] {
    require(out != nullptr, FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_executor_create", "out is NULL");
    *out = nullptr;
    require(policy != nullptr, FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_executor_create", "policy is NULL");
    const focusvla_executor_options given =
        read_struct(options, kExecutorFieldEnds, "focusvla_executor_create", "focusvla_executor_options");
    focusvla::runtime::ChunkExecutor executor(policy->policy, to_executor_options(given));
    *out = new focusvla_executor{std::move(executor), policy->policy.action_dim()};
    return FOCUSVLA_OK;
  });
}

focusvla_status focusvla_executor_tick(focusvla_executor* executor, const focusvla_image* images, size_t n_images,
                                       const char* instruction, const double* proprio, size_t proprio_len,
                                       double* action, size_t action_capacity) noexcept {
  return guarded("focusvla_executor_tick", [&] {
    require(executor != nullptr, FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_executor_tick", "executor is NULL");
    const std::string wrong =
        misuse("focusvla_executor_tick", images, n_images, instruction, proprio, proprio_len, action);
    if (!wrong.empty()) throw CallError{FOCUSVLA_ERROR_INVALID_ARGUMENT, wrong};
    const auto needed = static_cast<size_t>(executor->action_dim);
    if (action_capacity < needed)
      throw CallError{FOCUSVLA_ERROR_BUFFER_TOO_SMALL, "focusvla_executor_tick: action_capacity " +
                                                           std::to_string(action_capacity) +
                                                           " is below action_dim = " + std::to_string(needed)};
    const Eigen::VectorXd now =
        executor->executor.tick(observation_of(images, n_images, instruction, proprio, proprio_len));
    std::memcpy(action, now.data(), needed * sizeof(double));
    return FOCUSVLA_OK;
  });
}

focusvla_status focusvla_executor_metrics_get(const focusvla_executor* executor,
                                              focusvla_executor_metrics* out) noexcept {
  return guarded("focusvla_executor_metrics_get", [&] {
    require(executor != nullptr && out != nullptr, FOCUSVLA_ERROR_INVALID_ARGUMENT, "focusvla_executor_metrics_get",
            "executor or out is NULL");
    const focusvla::runtime::ExecutorMetrics m = executor->executor.metrics();
    *out = focusvla_executor_metrics{m.ticks, m.inferences, m.failed_inferences, m.deadline_misses, m.held_ticks,
                                     m.dropped_steps, m.merged_steps, m.inference_p50_ms, m.inference_p99_ms,
                                     m.inference_max_ms, m.jitter_p50_ms, m.jitter_p99_ms, m.jitter_max_ms,
                                     m.staleness_mean_ms, m.staleness_max_ms};
    return FOCUSVLA_OK;
  });
}

void focusvla_executor_free(focusvla_executor* executor) noexcept { delete executor; }

}  // extern "C"
