#include "focusvla/nn/matmul.h"

#include <fstream>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "focusvla/nn/fused_linear.h"
#include "focusvla/nn/linear.h"

namespace focusvla::nn {

bool cpu_has_any_flag(std::initializer_list<const char*> wanted, bool if_unknown) {
  std::ifstream in("/proc/cpuinfo");
  if (!in) return if_unknown;
  std::string line;
  while (std::getline(in, line)) {
    // x86: "flags : ... avx512_bf16 ... amx_bf16"; aarch64: "Features : ... bf16".
    if (line.rfind("flags", 0) != 0 && line.rfind("Features", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') == std::string::npos ? 0 : line.find(':') + 1));
    std::string word;
    while (words >> word)
      for (const char* w : wanted)
        if (word == w) return true;
    return false;  // the first CPU's flags decide
  }
  return if_unknown;
}

bool cpu_has_native_bf16() {
  static const bool native = cpu_has_any_flag({"avx512_bf16", "amx_bf16", "bf16"}, /*if_unknown=*/true);
  return native;
}

const char* matmul_mode_name(MatmulMode mode) {
  switch (mode) {
    case MatmulMode::kNative: return "native";
    case MatmulMode::kFp32Copies: return "fp32-copies";
    case MatmulMode::kInt8: return "int8";
    case MatmulMode::kInt8WeightOnly: return "int8-weight-only";
    case MatmulMode::kFp8: return "fp8";
  }
  return "native";
}

bool is_quantized(MatmulMode mode) {
  return mode == MatmulMode::kInt8 || mode == MatmulMode::kInt8WeightOnly || mode == MatmulMode::kFp8;
}

MatmulMode matmul_mode_for(CpuBf16Matmul mode) {
  switch (mode) {
    case CpuBf16Matmul::kNative: return MatmulMode::kNative;
    case CpuBf16Matmul::kFloat32: return MatmulMode::kFp32Copies;
    case CpuBf16Matmul::kAuto: break;
  }
  return cpu_has_native_bf16() ? MatmulMode::kNative : MatmulMode::kFp32Copies;
}

bool bf16_matmul_in_fp32(CpuBf16Matmul mode, torch::ScalarType dtype, const torch::Device& device) {
  return dtype == torch::kBFloat16 && device.is_cpu() && matmul_mode_for(mode) == MatmulMode::kFp32Copies;
}

int64_t set_matmul_mode(torch::nn::Module& root, MatmulMode mode) {
  // root itself, then every module under it (Module::modules(true) would need root to be owned
  // by a shared_ptr).
  std::vector<torch::nn::Module*> tree{&root};
  for (const auto& module : root.modules(/*include_self=*/false)) tree.push_back(module.get());
  // The fused blocks first: each derives once for the whole block and its parts view their rows,
  // so the parts are not derived on their own.
  std::unordered_set<const LinearImpl*> parts;
  for (auto* module : tree) {
    if (auto* fused = dynamic_cast<FusedLinearImpl*>(module)) {
      if (!fused->linear()->weight_released()) fused->set_matmul_mode(mode);
      for (const auto& part : fused->parts()) parts.insert(part.get());
    }
  }
  int64_t count = 0;
  for (auto* module : tree) {
    if (auto* linear = dynamic_cast<LinearImpl*>(module)) {
      if (parts.count(linear) == 0 && !linear->weight_released()) linear->set_matmul_mode(mode);
      count += linear->active_matmul_mode() == mode ? 1 : 0;
    }
  }
  return count;
}

int64_t set_matmul_mode(torch::nn::Module& root, MatmulMode mode,
                        const std::function<bool(const std::string& path, const LinearImpl& layer)>& select) {
  const auto named = root.named_modules(/*name_prefix=*/"", /*include_self=*/false);
  std::unordered_set<const LinearImpl*> parts;
  int64_t count = 0;
  for (const auto& item : named) {
    if (auto* fused = dynamic_cast<FusedLinearImpl*>(item.value().get())) {
      for (const auto& part : fused->parts()) parts.insert(part.get());
      if (!select(item.key(), *fused->linear())) continue;
      fused->set_matmul_mode(mode);
      for (const auto& part : fused->parts()) count += part->active_matmul_mode() == mode ? 1 : 0;
    }
  }
  for (const auto& item : named) {
    auto* linear = dynamic_cast<LinearImpl*>(item.value().get());
    if (linear == nullptr || parts.count(linear) != 0 || !select(item.key(), *linear)) continue;
    linear->set_matmul_mode(mode);
    count += linear->active_matmul_mode() == mode ? 1 : 0;
  }
  return count;
}

int64_t set_cpu_bf16_matmul(torch::nn::Module& root, CpuBf16Matmul mode) {
  const MatmulMode resolved = matmul_mode_for(mode);
  const int64_t count = set_matmul_mode(root, resolved);
  return resolved == MatmulMode::kFp32Copies ? count : 0;
}

}  // namespace focusvla::nn
