// One linear layer of each shape the full-size policy multiplies, float and quantized, on the
// CPU: where the int8 path's time goes (the int8 GEMM, the per-token quantization, the epilogue)
// and how it compares with the float kernels the unquantized policy runs.
//
//   focusvla_bench_quantize [google benchmark flags]     (FOCUSVLA_BENCH_THREADS: CPU threads)
//
// Families, per shape "<tokens>x<in>x<out>" (tokens: 2 cameras of DINOv2 / SigLIP, or the
// decoder's ~600 positions):
//   linear/bf16, linear/fp32   torch::linear (LibTorch's kernels: oneDNN / MKL)
//   int8/layer                 nn::Linear in MatmulMode::kInt8 (what the policy runs)
//   int8/int_mm                at::_int_mm alone on quantized operands
//   int8/quantize_tokens       nn::quantize_tokens_int8 alone
// Counter gflops: 2 * tokens * in * out / time.

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>
#include <string>

#include "focusvla/nn/linear.h"
#include "focusvla/nn/quantize.h"

namespace {

struct Shape {
  int64_t m, k, n;
};

// DINOv2-L (1024 -> 3072 qkv, 1024, 4096), SigLIP-SO400M (1152 -> 3456, 1152, 4304), the
// projector (2176 -> 1024 -> 896), Qwen2.5-0.5B (896 -> 1152 qkv, 896 o, 9728 gate/up, 4864 down).
const Shape kShapes[] = {{522, 1024, 3072}, {522, 1024, 1024}, {522, 1024, 4096}, {522, 4096, 1024},
                         {512, 1152, 3456}, {512, 1152, 4304}, {512, 4304, 1152}, {512, 2176, 1024},
                         {600, 896, 1152},  {600, 896, 896},   {600, 896, 9728},  {600, 4864, 896}};

std::string label(const Shape& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n);
}

void flops(benchmark::State& state, const Shape& s) {
  state.counters["gflops"] = benchmark::Counter(2.0 * static_cast<double>(s.m * s.k * s.n) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Linear(benchmark::State& state, Shape s, torch::ScalarType dtype) {
  const c10::InferenceMode guard;
  const auto x = torch::randn({s.m, s.k}).to(dtype);
  const auto w = (torch::randn({s.n, s.k}) * 0.02).to(dtype);
  const auto b = torch::randn({s.n}).to(dtype);
  for (auto _ : state) benchmark::DoNotOptimize(torch::linear(x, w, b));
  flops(state, s);
}

void BM_Int8Layer(benchmark::State& state, Shape s) {
  const c10::InferenceMode guard;
  focusvla::nn::Linear layer((torch::randn({s.n, s.k}) * 0.02).to(torch::kBFloat16), torch::randn({s.n}).to(torch::kBFloat16));
  layer->set_matmul_mode(focusvla::nn::MatmulMode::kInt8);
  const auto x = torch::randn({s.m, s.k}).to(torch::kBFloat16);
  for (auto _ : state) benchmark::DoNotOptimize(layer->forward(x));
  flops(state, s);
}

void BM_IntMm(benchmark::State& state, Shape s) {
  const c10::InferenceMode guard;
  const auto x = torch::randint(-127, 128, {s.m, s.k}, torch::kInt8);
  const auto w = torch::randint(-127, 128, {s.n, s.k}, torch::kInt8);
  for (auto _ : state) benchmark::DoNotOptimize(at::_int_mm(x, w.t()));
  flops(state, s);
}

void BM_QuantizeTokens(benchmark::State& state, Shape s) {
  const c10::InferenceMode guard;
  const auto x = torch::randn({s.m, s.k}).to(torch::kBFloat16);
  for (auto _ : state) benchmark::DoNotOptimize(focusvla::nn::quantize_tokens_int8(x));
}

void register_all() {
  for (const Shape& s : kShapes) {
    const std::string l = label(s);
    benchmark::RegisterBenchmark(("linear/bf16/" + l).c_str(), BM_Linear, s, torch::kBFloat16);
    benchmark::RegisterBenchmark(("linear/fp32/" + l).c_str(), BM_Linear, s, torch::kFloat32);
    benchmark::RegisterBenchmark(("int8/layer/" + l).c_str(), BM_Int8Layer, s);
    benchmark::RegisterBenchmark(("int8/int_mm/" + l).c_str(), BM_IntMm, s);
    benchmark::RegisterBenchmark(("int8/quantize_tokens/" + l).c_str(), BM_QuantizeTokens, s);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* threads = std::getenv("FOCUSVLA_BENCH_THREADS"); threads != nullptr && *threads != '\0')
    torch::set_num_threads(std::atoi(threads));
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
