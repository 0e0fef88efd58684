// Speed of the Qwen2.5-0.5B decoder (SPEC 7, 12): one causal forward over L input embeddings
// keeping all 25 hidden states, the shape of one `act` (L ~ 600 for two cameras), fp32 and bf16
// (with LibTorch's bf16 matmuls, and as fp32 matmuls: nn::CpuBf16Matmul).
//
//   focusvla_bench_llm [--benchmark_filter=...] [google benchmark flags]
//
// Weights are random (N(0, 0.02), norms 1): the full architecture of the released checkpoints,
// with a 1024-row embedding table (ids are not on the timed path). benchmarks/bench_llm_hf.py
// runs this binary and times transformers' Qwen2Model on the same shape for the ratio table.
// Counters: tokens/s, and GFLOP/s counting 2 x (non-embedding weights) per token plus the
// causal attention products. "CPU" is the process CPU time over all threads: on a shared machine
// it shows the work done when wall time shows mostly the neighbours.

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>
#include <map>
#include <memory>

#include "focusvla/llm/qwen2.h"
#include "focusvla/nn/matmul.h"

namespace {

using focusvla::io::Qwen2Config;
using focusvla::nn::CpuBf16Matmul;
using focusvla::llm::Qwen2Model;

// The released text_config (assets/vla-adapter-reference/config.json); Qwen2Config's defaults.
Qwen2Config full_config() { return Qwen2Config{}; }

Qwen2Model& model_for(torch::ScalarType dtype) {
  static std::map<torch::ScalarType, std::unique_ptr<Qwen2Model>> models;
  auto& slot = models[dtype];
  if (!slot) {
    torch::NoGradGuard no_grad;
    torch::manual_seed(0);
    slot = std::make_unique<Qwen2Model>(full_config(), torch::TensorOptions().dtype(dtype), /*embedding_rows=*/1024);
    for (auto& p : (*slot)->named_parameters()) {
      if (p.key().find("norm") != std::string::npos)
        p.value().fill_(1.0);
      else
        p.value().normal_(0.0, 0.02);
    }
  }
  return *slot;
}

double flops_per_forward(const Qwen2Config& c, int64_t length) {
  const double d = static_cast<double>(c.hidden_size);
  const double kv = static_cast<double>(c.num_key_value_heads * c.head_dim());
  const double per_layer_weights = d * d * 2 + d * kv * 2 + 3 * d * static_cast<double>(c.intermediate_size);
  const double linear = 2.0 * per_layer_weights * static_cast<double>(c.num_hidden_layers) * static_cast<double>(length);
  // q k^T and p v over the causal half, all heads.
  const double attention = 2.0 * 2.0 * static_cast<double>(c.num_hidden_layers * c.num_attention_heads * c.head_dim()) *
                           static_cast<double>(length) * static_cast<double>(length + 1) / 2.0;
  return linear + attention;
}

void BM_Qwen2Forward(benchmark::State& state, torch::ScalarType dtype, CpuBf16Matmul matmul) {
  const int64_t length = state.range(0);
  auto& model = model_for(dtype);
  focusvla::nn::set_cpu_bf16_matmul(*model, matmul);
  const auto& config = model->config();
  torch::manual_seed(1);
  const auto embeds = torch::randn({1, length, config.hidden_size}).to(dtype);
  auto out = torch::empty({config.num_hidden_layers + 1, 1, length, config.hidden_size}, embeds.options());
  model->forward_into(out, embeds);  // warm-up: RoPE tables, allocator, oneDNN kernels
  for (auto _ : state) {
    model->forward_into(out, embeds);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(length) * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_forward(config, length) * 1e-9 * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
  state.counters["threads"] = static_cast<double>(torch::get_num_threads());
}

// bf16: LibTorch's bf16 matmuls (the default, bit-identical to transformers); bf16_fp32mm: the
// same products as fp32 matmuls of the upcast operands (CpuBf16Matmul::kFloat32), for CPUs
// without native bf16 dot products.
BENCHMARK_CAPTURE(BM_Qwen2Forward, fp32, torch::kFloat32, CpuBf16Matmul::kNative)
    ->Arg(600)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_Qwen2Forward, bf16, torch::kBFloat16, CpuBf16Matmul::kNative)
    ->Arg(600)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_Qwen2Forward, bf16_fp32mm, torch::kBFloat16, CpuBf16Matmul::kFloat32)
    ->Arg(600)->Unit(benchmark::kMillisecond)->UseRealTime()->MeasureProcessCPUTime()->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
