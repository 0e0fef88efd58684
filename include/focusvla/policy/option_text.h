#pragma once
// The text forms of PolicyOptions, one parser per option, shared by every front end: the CLI
// (--device ...), the C ABI (focusvla_policy_options.device ...), Python (Policy.load(device=...))
// and the Ray app (its `device` option, through Python). The same names and aliases everywhere;
// an error names the option as the front end spells it (`what`) and lists what is accepted.
// docs/OPTIONS.md is the table of every option in every front end.

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "focusvla/nn/matmul.h"
#include "focusvla/nn/quantize.h"

namespace focusvla {

// "cpu", "cuda", "cuda:N", or "auto" (CUDA device 0 when this machine has one, else the CPU).
// A CUDA device must exist here (Error naming how many there are).
torch::Device parse_device(const std::string& text, const std::string& what);

// "auto" (also "" and "none": the checkpoint's dtype where the device computes it natively),
// "float32" / "fp32" / "float", "bfloat16" / "bf16", "float16" / "fp16" / "half"; a "torch."
// prefix is ignored (Python's str(torch.bfloat16)).
std::optional<torch::ScalarType> parse_dtype(const std::string& text, const std::string& what);

// "auto", "native", "float32" (nn::CpuBf16Matmul).
nn::CpuBf16Matmul parse_cpu_bf16_matmul(const std::string& text, const std::string& what);

// "auto", "openvla", "qwen-chat"; returned as given.
std::string check_prompt_format(const std::string& text, const std::string& what);

// "bounds_q99", "bounds"; returned as given.
std::string check_normalization(const std::string& text, const std::string& what);

// "none" / "off", "int8" / "w8a8", "fp8" / "float8" / "e4m3" (nn::parse_quantize).
inline nn::Quantize parse_quantize(const std::string& text, const std::string& what) {
  return nn::parse_quantize(text, what);
}

// The canonical spelling of `text` for `option` ("dtype", "bf16" -> "bfloat16"; "quantize",
// "w8a8" -> "int8"; "device", "cuda:1" -> "cuda:1"), checked for spelling only: no device is
// looked for, so a front end can check options for another machine (the Ray app's ingress).
// Error naming `what` and the accepted spellings otherwise.
std::string canonical_option(const std::string& option, const std::string& text, const std::string& what);

// Every accepted spelling of an option, for a front end's own checks and help
// ("device": {"auto", "cpu", "cuda", "cuda:N"}).
const std::vector<std::string>& option_spellings(const std::string& option);

}  // namespace focusvla
