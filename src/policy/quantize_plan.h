#pragma once
// The quantization plan of Policy::load (PolicyOptions::quantize; docs/QUANTIZATION.md): which
// mode the quantized layers run on a device, which layers of a component are quantized, and what
// settings().quantize_detail says. Internal to src/policy/.

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "focusvla/io/state_dict.h"
#include "focusvla/nn/linear.h"
#include "focusvla/nn/matmul.h"
#include "focusvla/nn/quantize.h"

namespace focusvla::policy {

// int8 -> W8A8 on the CPU, weight-only int8 on CUDA; fp8 -> CUDA 8.9+, weight-only int8 on older
// GPUs (warned), an Error on a CPU. Checked before any I/O.
nn::MatmulMode resolve_quantize(nn::Quantize quantize, const torch::Device& device);

// Quantizes `component`'s planned layers (every linear layer; fp8 only those whose dimensions are
// multiples of 16) that are not quantized yet and hands the released float weights back to the
// system; returns how many it quantized.
int64_t quantize_component(torch::nn::Module& component, nn::MatmulMode mode);

// The io::StageHook that quantizes each stage of a component (a block, a layer) as soon as it is
// loaded, adding the count to `*count`; empty when `mode` is not quantized. A load then holds the
// float weights of one stage at a time, not of the whole component (docs/QUANTIZATION.md,
// Memory); quantize_component afterwards takes whatever no stage held.
io::StageHook quantize_while_loading(nn::MatmulMode mode, int64_t* count);

// A quantized policy (not bit for bit with the reference anyway) runs faster kernels than the
// reference's in the vision encoders: the patch embeddings as GEMMs instead of a convolution
// (vision::PatchConvImpl::forward_gemm: the same products; ~3 instead of 39 ms per encoder in bf16
// on a CPU), and self-attention over keys padded to a multiple of 16 (vision::AttentionImpl::
// pad_keys_to: the same attention; DINOv2's 261 keys ~2x slower than 272 in LibTorch's CPU SDPA),
// and on as many threads as encoders the encoders side by side, one thread each
// (vision::VisionBackboneImpl::side_by_side; ~14% less vision time on 2 cores). Returns how many
// modules it switched; none when `mode` is not quantized.
int64_t use_fast_vision_kernels(torch::nn::Module& vision, nn::MatmulMode mode);

// "W8A8, 8-bit weights (...); linear layers: vision encoders N, projector N, llm N; ... in <dtype>"
// (and "; vision encoders side by side ..." when they run so).
std::string quantize_detail(nn::MatmulMode mode, int64_t vision, int64_t projector, int64_t llm,
                            torch::ScalarType dtype, bool encoders_side_by_side);

}  // namespace focusvla::policy
