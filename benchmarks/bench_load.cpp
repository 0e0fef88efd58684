// Loading a large safetensors file into a module: time, and peak resident memory relative to
// the file size. The file comes from benchmarks/bench_load.sh (pip safetensors writes it).
//   focusvla_bench_load FILE.safetensors [benchmark flags]
// Each case runs in a fresh process (the script calls one filter per run) because peak RSS is
// monotonic within a process.

#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "focusvla/io/state_dict.h"

namespace {

std::string g_file;

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // kB on Linux
}

// A module tree with one uninitialised parameter per tensor of the file, named like it.
std::shared_ptr<torch::nn::Module> module_like(const focusvla::io::StateDict& state) {
  auto root = std::make_shared<torch::nn::Module>();
  for (const auto& name : state.keys()) {
    std::shared_ptr<torch::nn::Module> node = root;
    size_t start = 0;
    for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', start)) {
      const std::string part = name.substr(start, dot - start);
      auto children = node->named_children();
      node = children.contains(part) ? children[part] : node->register_module(part, std::make_shared<torch::nn::Module>());
      start = dot + 1;
    }
    const auto& t = state.at(name);
    node->register_parameter(name.substr(start), torch::empty(t.sizes(), t.options()), false);
  }
  return root;
}

void load(benchmark::State& bench, bool release_pages) {
  const double file_mb = static_cast<double>(std::filesystem::file_size(g_file)) / (1024.0 * 1024.0);
  const double baseline = peak_rss_mb();
  for (auto _ : bench) {
    const auto state = focusvla::io::StateDict::from_safetensors(g_file);
    auto module = module_like(state);
    focusvla::io::LoadOptions options;
    options.release_pages = release_pages;
    focusvla::io::load_module(*module, state, "", options);
    benchmark::DoNotOptimize(module->parameters().front().data_ptr());
  }
  const double peak = peak_rss_mb();
  bench.counters["file_MB"] = file_mb;
  bench.counters["peak_rss_MB"] = peak;
  bench.counters["peak_over_file"] = (peak - baseline) / file_mb;
  bench.SetBytesProcessed(static_cast<int64_t>(bench.iterations() * file_mb * 1024 * 1024));
}

void BM_LoadIntoModule(benchmark::State& bench) { load(bench, true); }
void BM_LoadIntoModuleKeepPages(benchmark::State& bench) { load(bench, false); }
BENCHMARK(BM_LoadIntoModule)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LoadIntoModuleKeepPages)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: focusvla_bench_load FILE.safetensors [benchmark flags]\n");
    return 2;
  }
  g_file = argv[1];
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
