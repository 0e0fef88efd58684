// Speed of the vision encoders (SPEC 4, 12): one 224x224 image through DINOv2-L/14-reg4 (blocks
// 0..22) and SigLIP-SO400M/14 (blocks 0..25) at full size, fp32, bf16 and bf16 with int8 linear
// layers (what --quantize int8 runs), plus the whole tower (both encoders and the projector), the
// image preprocessing and the LIBERO resize's JPEG round trip.
//
//   focusvla_bench_vision [--benchmark_filter=...] [google benchmark flags]
//
// Weights are random (the released architecture); benchmarks/bench_vision_timm.py runs this
// binary and times timm's VisionTransformer on the same input for the ratio table.
// Counters: images/s, GFLOP/s (2 x weights x tokens for the linear layers, plus attention) and
// process_cpu_ms (CPU time of all threads per forward: less disturbed by other load than wall time).

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <sys/resource.h>

#include <string>

#include "focusvla/nn/matmul.h"
#include "focusvla/vision/jpeg.h"
#include "focusvla/vision/preprocess.h"
#include "focusvla/vision/vision_tower.h"
#include "focusvla/vision/vit.h"

namespace {

using focusvla::nn::CpuBf16Matmul;
using focusvla::vision::ImagePreprocessor;
using focusvla::vision::VisionTower;
using focusvla::vision::VisionTowerConfig;
using focusvla::vision::VisionTransformer;
using focusvla::vision::VitConfig;

enum class Encoder { dino, siglip };

VitConfig config_of(Encoder e) {
  return e == Encoder::dino ? VitConfig::dinov2_vit_large_reg4() : VitConfig::siglip_so400m();
}

// Random values of a sensible scale (no denormals): norms 1, LayerScale 0.1, weights N(0, 0.02).
void randomize(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  for (auto& p : module.named_parameters()) {
    const auto& name = p.key();
    if (name.find("norm") != std::string::npos && name.find("weight") != std::string::npos)
      p.value().fill_(1.0);
    else if (name.find("scale_factor") != std::string::npos)
      p.value().fill_(0.1);
    else
      p.value().normal_(0.0, 0.02);
  }
}

double encoder_flops(const VitConfig& c) {
  const double d = static_cast<double>(c.dim), t = static_cast<double>(c.num_tokens());
  const double weights = 4 * d * d + 2 * d * static_cast<double>(c.mlp_hidden);
  const double per_block = 2 * weights * t + 2 * 2 * t * t * d;  // linear layers + q k^T and p v
  const double patch = 2.0 * static_cast<double>(c.num_patches()) * d *
                       static_cast<double>(c.in_channels * c.patch_size * c.patch_size);
  return per_block * static_cast<double>(c.blocks_run()) + patch;
}

// CPU seconds used by this process, all threads (user + system).
double process_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Per iteration: the process's CPU time over the timed loop (a measure of the work that other
// load on the machine disturbs less than the wall clock), started by `cpu_start`.
void set_counters(benchmark::State& state, double flops, double cpu_start) {
  const auto n = static_cast<double>(state.iterations());
  state.counters["process_cpu_ms"] = (process_cpu_seconds() - cpu_start) * 1e3 / n;
  state.counters["images/s"] = benchmark::Counter(n, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9 * n, benchmark::Counter::kIsRate);
  state.counters["threads"] = static_cast<double>(torch::get_num_threads());
}

// How the encoder's linear layers multiply: the dtype's own kernels, bf16 as fp32 matmuls, or int8
// (W8A8, with the fast kernels quantized policies run: vision::use_fast_kernels).
enum class Matmul { kNative, kBf16AsFp32, kInt8 };

void BM_Encoder(benchmark::State& state, Encoder e, torch::ScalarType dtype, Matmul matmul = Matmul::kNative) {
  // Built per run (one call: fixed iterations), so that only one model is resident at a time.
  VisionTransformer vit(config_of(e), torch::TensorOptions().dtype(dtype));
  randomize(*vit);
  if (matmul == Matmul::kInt8) {
    focusvla::nn::set_matmul_mode(*vit, focusvla::nn::MatmulMode::kInt8);
    focusvla::vision::use_fast_kernels(*vit);
  } else {
    focusvla::nn::set_cpu_bf16_matmul(*vit, matmul == Matmul::kBf16AsFp32 ? CpuBf16Matmul::kFloat32 : CpuBf16Matmul::kNative);
  }
  torch::manual_seed(1);
  const auto pixels = torch::randn({1, 3, 224, 224}).to(dtype);
  vit->forward(pixels);  // warm-up: allocator, oneDNN primitives
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state) {
    const auto out = vit->forward(pixels);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  set_counters(state, encoder_flops(vit->config), cpu_start);
}

void BM_Tower(benchmark::State& state, torch::ScalarType dtype, bool bf16_in_fp32 = false) {
  VisionTower t(VisionTowerConfig{}, torch::TensorOptions().dtype(dtype));
  randomize(*t);
  focusvla::nn::set_cpu_bf16_matmul(*t, bf16_in_fp32 ? CpuBf16Matmul::kFloat32 : CpuBf16Matmul::kNative);
  torch::manual_seed(1);
  const auto pixels = torch::randn({1, 6, 224, 224});
  t->forward(pixels);
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state) {
    const auto out = t->forward(pixels);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  const auto& c = t->config;
  const double projector = 2.0 * static_cast<double>(c.tokens_per_image()) *
                           static_cast<double>(c.projector.vision_dim * c.projector.hidden +
                                               c.projector.hidden * c.projector.llm_dim +
                                               c.projector.llm_dim * c.projector.llm_dim);
  double encoders = 0;
  for (const auto& e : c.encoders) encoders += encoder_flops(focusvla::vision::vit_config(e));
  set_counters(state, encoders + projector, cpu_start);
}

// A 256x256 frame as LIBERO renders them: smooth (sums of low-frequency waves), or random noise
// (the worst case for the JPEG coder: nothing compresses).
torch::Tensor frame_256(bool smooth) {
  torch::manual_seed(2);
  if (!smooth) return torch::randint(0, 256, {256, 256, 3}, torch::kUInt8);
  const auto y = torch::arange(256, torch::kFloat32).view({256, 1, 1}), x = torch::arange(256, torch::kFloat32).view({1, 256, 1});
  const auto c = torch::arange(3, torch::kFloat32).view({1, 1, 3});
  const auto waves = (y * 0.031 + x * 0.017 + c).sin() + (y * 0.011 - x * 0.043 + 2 * c).sin();
  return (128 + 60 * waves).clamp(0, 255).to(torch::kUInt8).contiguous();
}

// The LIBERO resize's JPEG round trip alone (vision/jpeg.h: TF's encode_jpeg + decode_image), per
// 256x256 camera frame.
void BM_JpegRoundTrip(benchmark::State& state, bool smooth) {
  const auto image = frame_256(smooth);
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state) {
    const auto out = focusvla::vision::jpeg_roundtrip(image);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.counters["process_cpu_ms"] = (process_cpu_seconds() - cpu_start) * 1e3 / static_cast<double>(state.iterations());
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// One camera image (480x640, a common sensor size) to the 6 x 224 x 224 pixels, as the reference
// processor does it (Pillow bicubic, normalization), and the LIBERO steps on a 256x256 render
// (with the JPEG round trip, the default, or without).
void BM_Preprocess(benchmark::State& state, bool libero, bool jpeg = true) {
  focusvla::io::PreprocessorConfig config;
  config.backbones.resize(2);
  config.backbones[0].mean = {0.484375, 0.455078125, 0.40625};
  config.backbones[0].std = {0.228515625, 0.2236328125, 0.224609375};
  config.backbones[1].mean = {0.5, 0.5, 0.5};
  config.backbones[1].std = {0.5, 0.5, 0.5};
  focusvla::vision::PreprocessOptions options;
  options.libero_resize = options.center_crop = libero;
  options.jpeg_roundtrip = jpeg;
  const ImagePreprocessor preprocess(config, options);
  torch::manual_seed(2);
  const auto image = libero ? frame_256(/*smooth=*/true) : torch::randint(0, 256, {480, 640, 3}, torch::kUInt8);
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state) {
    const auto out = preprocess(image);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.counters["process_cpu_ms"] = (process_cpu_seconds() - cpu_start) * 1e3 / static_cast<double>(state.iterations());
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// Full-size forwards take seconds on a CPU: one timed forward after one warm-up, three repetitions
// (the minimum is the figure least disturbed by other load on the machine).
BENCHMARK_CAPTURE(BM_Encoder, dino_fp32, Encoder::dino, torch::kFloat32)
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);
BENCHMARK_CAPTURE(BM_Encoder, siglip_fp32, Encoder::siglip, torch::kFloat32)
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);
BENCHMARK_CAPTURE(BM_Encoder, dino_bf16, Encoder::dino, torch::kBFloat16)
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);
BENCHMARK_CAPTURE(BM_Encoder, siglip_bf16, Encoder::siglip, torch::kBFloat16)
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);
// bf16 with the linear layers as fp32 matmuls (nn::set_cpu_bf16_matmul kFloat32), for CPUs without bf16.
BENCHMARK_CAPTURE(BM_Encoder, dino_bf16_f32mm, Encoder::dino, torch::kBFloat16, Matmul::kBf16AsFp32)
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);
BENCHMARK_CAPTURE(BM_Encoder, siglip_bf16_f32mm, Encoder::siglip, torch::kBFloat16, Matmul::kBf16AsFp32)
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);
// int8 W8A8 in bf16 (what --quantize int8 runs in the encoders; docs/QUANTIZATION.md).
BENCHMARK_CAPTURE(BM_Encoder, dino_bf16_int8, Encoder::dino, torch::kBFloat16, Matmul::kInt8)
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);
BENCHMARK_CAPTURE(BM_Encoder, siglip_bf16_int8, Encoder::siglip, torch::kBFloat16, Matmul::kInt8)
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);
BENCHMARK_CAPTURE(BM_Tower, fp32, torch::kFloat32)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);
BENCHMARK_CAPTURE(BM_Tower, bf16, torch::kBFloat16)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);
BENCHMARK_CAPTURE(BM_Tower, bf16_f32mm, torch::kBFloat16, true)
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1)->Repetitions(3);
BENCHMARK_CAPTURE(BM_Preprocess, pil_480x640, false)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Preprocess, libero_256, true)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Preprocess, libero_256_no_jpeg, true, false)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_JpegRoundTrip, smooth_256, true)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_JpegRoundTrip, random_256, false)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
