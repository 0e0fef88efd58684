#include "quantize_plan.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "focusvla/core/error.h"
#include "focusvla/core/log.h"
#include "focusvla/policy/policy.h"
#include "focusvla/vision/vit.h"

namespace focusvla::policy {
namespace {

// The quantization plan (docs/QUANTIZATION.md): every linear layer of the vision encoders and the
// decoder (the projector, the patch embeddings (convolutions) and the head are not asked).
// fp8 GEMMs need both dimensions to be multiples of 16: other layers keep the compute dtype.
bool quantize_layer(nn::MatmulMode mode, const std::string& /*path*/, const nn::LinearImpl& layer) {
  if (mode == nn::MatmulMode::kFp8) return layer.weight.size(0) % 16 == 0 && layer.weight.size(1) % 16 == 0;
  return true;
}

// Hands freed heap memory back to the system. The float weights a quantization releases were
// allocated in one go by the load; glibc keeps them in its heap after free (its mmap threshold
// grows with the first large free), so without this the process would keep their pages.
void return_freed_memory() {
#ifdef __GLIBC__
  ::malloc_trim(0);
#endif
}

}  // namespace

// The quantized layers' mode on `device` (PolicyOptions::quantize): int8 -> W8A8 on the CPU,
// weight-only int8 on CUDA; fp8 -> CUDA 8.9+, weight-only int8 on older GPUs (warned), an Error on
// a CPU. Checked before any I/O.
nn::MatmulMode resolve_quantize(nn::Quantize quantize, const torch::Device& device) {
  switch (quantize) {
    case nn::Quantize::kNone:
      return nn::MatmulMode::kNative;
    case nn::Quantize::kInt8:
      return device.is_cuda() ? nn::MatmulMode::kInt8WeightOnly : nn::MatmulMode::kInt8;
    case nn::Quantize::kFp8: {
      std::string why;
      if (nn::fp8_supported(device, &why)) return nn::MatmulMode::kFp8;
      check(device.is_cuda(), "PolicyOptions::quantize fp8", why + "; on a CPU use int8");
      log_warn("quantize fp8: " + why + "; running int8 weight-only instead");
      return nn::MatmulMode::kInt8WeightOnly;
    }
  }
  return nn::MatmulMode::kNative;
}

// Quantizes `component`'s planned layers; returns how many. The released float weights go back to
// the system every few layers, not only at the end: the load's peak memory is then the component's
// float weights plus a few layers, not float and quantized weights of the whole component
// (measured: docs/QUANTIZATION.md, Memory).
int64_t quantize_component(torch::nn::Module& component, nn::MatmulMode mode) {
  if (!nn::is_quantized(mode)) return 0;
  constexpr int64_t kTrimEvery = 8;  // layers; a trim of a GB-sized heap costs about a millisecond
  int64_t asked = 0;
  const int64_t count =
      nn::set_matmul_mode(component, mode, [mode, &asked](const std::string& path, const nn::LinearImpl& layer) {
        if (layer.weight_released()) return false;  // quantized already (quantize_while_loading)
        // Asked just before each layer is quantized: the layers quantized so far have released theirs.
        if (++asked % kTrimEvery == 0) return_freed_memory();
        return quantize_layer(mode, path, layer);
      });
  if (asked > 0) return_freed_memory();
  return count;
}

io::StageHook quantize_while_loading(nn::MatmulMode mode, int64_t* count) {
  if (!nn::is_quantized(mode)) return {};
  return [mode, count](const std::string& /*path*/, torch::nn::Module& stage) {
    *count += quantize_component(stage, mode);
  };
}

int64_t use_fast_vision_kernels(torch::nn::Module& vision, nn::MatmulMode mode) {
  return nn::is_quantized(mode) ? vision::use_fast_kernels(vision) : 0;
}

// What the quantized layers are, for settings().quantize_detail.
std::string quantize_detail(nn::MatmulMode mode, int64_t vision, int64_t projector, int64_t llm,
                            torch::ScalarType dtype, bool encoders_side_by_side) {
  std::string what;
  switch (mode) {
    case nn::MatmulMode::kInt8:
      what = nn::cpu_has_int8_dot()
                 ? "W8A8, 8-bit weights (CPU int8 dot products)"
                 : "W8A8, 7-bit weights (no int8 dot products on this CPU: its u8 x s8 instruction saturates 8-bit ones)";
      break;
    case nn::MatmulMode::kInt8WeightOnly: what = "int8 weight-only"; break;
    case nn::MatmulMode::kFp8: what = "fp8 e4m3 weights and activations, row-wise scales"; break;
    default: return "";
  }
  return what + "; linear layers: vision encoders " + std::to_string(vision) + ", projector " +
         std::to_string(projector) + ", llm " + std::to_string(llm) + "; projector, head, norms, embeddings, patch " +
         "embeddings (as GEMMs) in " + dtype_name(dtype) +
         (encoders_side_by_side ? "; vision encoders side by side when threads = encoders" : "");
}

}  // namespace focusvla::policy
