#include "focusvla/policy/option_text.h"

#include <algorithm>
#include <map>

#include "focusvla/core/error.h"

namespace focusvla {
namespace {

const std::map<std::string, std::vector<std::string>>& spellings() {
  static const std::map<std::string, std::vector<std::string>> table = {
      {"device", {"auto", "cpu", "cuda", "cuda:N"}},
      {"dtype", {"auto", "float32", "fp32", "float", "bfloat16", "bf16", "float16", "fp16", "half"}},
      {"cpu_bf16_matmul", {"auto", "native", "float32"}},
      {"prompt_format", {"auto", "openvla", "qwen-chat"}},
      {"normalization", {"bounds_q99", "bounds"}},
      {"quantize", {"none", "off", "int8", "w8a8", "fp8", "float8", "e4m3"}},
  };
  return table;
}

std::string listed(const std::string& option) {
  std::string text;
  for (const auto& s : option_spellings(option)) text += (text.empty() ? "" : ", ") + s;
  return text;
}

bool one_of(const std::string& text, const std::string& option) {
  const auto& names = option_spellings(option);
  return std::find(names.begin(), names.end(), text) != names.end();
}

}  // namespace

const std::vector<std::string>& option_spellings(const std::string& option) {
  const auto it = spellings().find(option);
  check(it != spellings().end(), "option_spellings", "no option '" + option + "'");
  return it->second;
}

std::string canonical_option(const std::string& option, const std::string& text, const std::string& what) {
  if (option == "device") {
    const bool index = text.rfind("cuda:", 0) == 0 && text.size() > 5 && text.size() <= 8 &&
                       text.find_first_not_of("0123456789", 5) == std::string::npos;
    check(text == "auto" || text == "cpu" || text == "cuda" || index, what + " '" + text + "'",
          "not a device (" + listed("device") + ")");
    return text;
  }
  if (option == "dtype") {
    const auto dtype = parse_dtype(text, what);
    return dtype ? std::string(dtype == torch::kFloat32 ? "float32" : dtype == torch::kBFloat16 ? "bfloat16" : "float16")
                 : "auto";
  }
  if (option == "quantize") return nn::quantize_name(parse_quantize(text, what));
  if (option == "cpu_bf16_matmul") {
    (void)parse_cpu_bf16_matmul(text, what);
    return text;
  }
  if (option == "prompt_format") return check_prompt_format(text, what);
  if (option == "normalization") return check_normalization(text, what);
  throw Error("canonical_option: no option '" + option + "'");
}

torch::Device parse_device(const std::string& text, const std::string& what) {
  if (text == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  std::optional<torch::Device> device;
  try {
    device = torch::Device(text);
  } catch (const std::exception&) {
    throw Error(what + " '" + text + "': not a device (" + listed("device") + ")");
  }
  if (device->is_cuda()) {
    const int64_t count = torch::cuda::is_available() ? static_cast<int64_t>(torch::cuda::device_count()) : 0;
    if (count == 0) throw Error(what + " '" + text + "': this machine has no CUDA device");
    if (device->has_index() && device->index() >= count)
      throw Error(what + " '" + text + "': no such CUDA device (this machine has " + std::to_string(count) +
                  ": cuda:0 .. cuda:" + std::to_string(count - 1) + ")");
  } else if (!device->is_cpu()) {
    throw Error(what + " '" + text + "': only cpu and cuda are supported");
  }
  return *device;
}

std::optional<torch::ScalarType> parse_dtype(const std::string& given, const std::string& what) {
  const std::string text = given.rfind("torch.", 0) == 0 ? given.substr(6) : given;
  if (text.empty() || text == "auto" || text == "none") return std::nullopt;
  if (text == "float32" || text == "fp32" || text == "float") return torch::kFloat32;
  if (text == "bfloat16" || text == "bf16") return torch::kBFloat16;
  if (text == "float16" || text == "fp16" || text == "half") return torch::kFloat16;
  throw Error(what + " '" + given + "': not a dtype (" + listed("dtype") + ")");
}

nn::CpuBf16Matmul parse_cpu_bf16_matmul(const std::string& text, const std::string& what) {
  if (text == "auto") return nn::CpuBf16Matmul::kAuto;
  if (text == "native") return nn::CpuBf16Matmul::kNative;
  if (text == "float32") return nn::CpuBf16Matmul::kFloat32;
  throw Error(what + " '" + text + "': not " + listed("cpu_bf16_matmul"));
}

std::string check_prompt_format(const std::string& text, const std::string& what) {
  check(one_of(text, "prompt_format"), what + " '" + text + "'", "not " + listed("prompt_format"));
  return text;
}

std::string check_normalization(const std::string& text, const std::string& what) {
  check(one_of(text, "normalization"), what + " '" + text + "'", "not " + listed("normalization"));
  return text;
}

}  // namespace focusvla
