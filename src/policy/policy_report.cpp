// The policy's reports as data, in the one spelling every front end uses (policy.h): settings,
// stage times, dtype names.
#include <string>
#include <utility>
#include <vector>

#include "focusvla/policy/policy.h"

namespace focusvla {

std::string dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: return c10::toString(dtype);
  }
}
nlohmann::json settings_json(const PolicySettings& s) {
  return {{"head", s.head},
          {"prompt_format", s.prompt_format},
          {"prompt_format_source", s.prompt_format_source},
          {"center_crop", s.center_crop},
          {"jpeg_roundtrip", s.jpeg_roundtrip},
          {"dtype", dtype_name(s.dtype)},
          {"dtype_source", s.dtype_source},
          {"device", s.device.str()},
          {"matmul", s.matmul},
          {"unnorm_key", s.unnorm_key},
          {"normalization", s.normalization},
          {"cameras", s.cameras},
          {"proprio_dim", s.proprio_dim},
          {"quantize", s.quantize},
          {"quantized_layers", s.quantized_layers},
          {"quantize_detail", s.quantize_detail},
          {"batch_buckets", s.batch_buckets}};
}

std::vector<std::pair<std::string, double>> timing_fields(const StageTiming& t) {
  return {{"preprocess_ms", t.preprocess_ms}, {"vision_ms", t.vision_ms}, {"projector_ms", t.projector_ms},
          {"llm_ms", t.llm_ms},               {"head_ms", t.head_ms},     {"device_ms", t.device_ms},
          {"total_ms", t.total_ms}};
}

}  // namespace focusvla
