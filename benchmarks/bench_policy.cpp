// Speed of Policy::act end to end and per stage (SPEC 12): uint8 images on the host to actions on
// the host, for each device, dtype, batch size and camera count asked for.
//
//   FOCUSVLA_BENCH_CHECKPOINT=DIR focusvla_bench_policy [google benchmark flags]
//
// DIR is a checkpoint in the release layout (scripts/make_checkpoint.py --size full writes one
// with random weights; speed does not depend on the values). Settings, from the environment:
//   FOCUSVLA_BENCH_DEVICES  cpu,cuda   (default: cuda when there is a GPU, else cpu)
//   FOCUSVLA_BENCH_DTYPES   bf16,fp32  (default: both); a dtype with a quantization after a dash,
//                           e.g. bf16-int8, fp32-int8, bf16-fp8: PolicyOptions::quantize, the
//                           other layers in that dtype
//   FOCUSVLA_BENCH_BATCHES  1,4,8      (default)
//   FOCUSVLA_BENCH_CAMERAS  1,2        (default)
//   FOCUSVLA_BENCH_ITERS    timed calls per case (default: 100 on a GPU, 3 on the CPU)
//   FOCUSVLA_BENCH_THREADS  CPU threads (default: LibTorch's)
//   FOCUSVLA_BENCH_UNNORM_KEY  the dataset statistics to use (required when the checkpoint has
//                           several, as the demo checkpoint has: libero_spatial_no_noops)
// Two families per case:
//   act/<device>/<dtype>/b<B>/cam<N>     the call a robot makes (CUDA graphs on a GPU): counters
//                                        p50_ms, p99_ms, actions_per_s (B x 8 / p50), peak memory
//   stages/<device>/<dtype>/b<B>/cam<N>  eager, p50 of each stage (StageTiming; CUDA events on a GPU)
// Memory: on a GPU gpu_weights_gb (allocated after load) and gpu_peak_gb (peak allocated during
// the case, weights included); on the CPU rss_peak_gb, the process's peak resident set so far.
// load_s: the wall time of the Policy::load behind the case (checkpoint files to device weights).
// benchmarks/bench_policy_reference.py runs this binary next to the Python reference pipeline and
// prints the ratio table.

#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#ifdef FOCUSVLA_BENCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "focusvla/policy/policy.h"

namespace {

using focusvla::ActionChunk;
using focusvla::Observation;
using focusvla::Policy;
using focusvla::PolicyOptions;

std::string env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

struct Case {
  std::string device, dtype;
  int64_t batch = 1, cameras = 2;
};

// One policy at a time (full size: the weights of one dtype fill a GPU's or a laptop's memory
// budget), kept while consecutive cases share device and dtype.
struct Loaded {
  std::string device, dtype;
  int64_t cameras = 0;
  bool graphs = true;
  std::unique_ptr<Policy> policy;
  double weights_gb = 0;
  double load_s = 0;  // Policy::load wall time (the page cache is warm after the first load)
};

double gpu_allocated_gb(bool peak) {
#ifdef FOCUSVLA_BENCH_CUDA
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  const auto& s = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
  return static_cast<double>(peak ? s.peak : s.current) / 1e9;
#else
  (void)peak;
  return 0;
#endif
}

void reset_gpu_peak() {
#ifdef FOCUSVLA_BENCH_CUDA
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
#endif
}

Loaded& loaded_policy() {
  static Loaded loaded;
  return loaded;
}
double weights_gb() { return loaded_policy().weights_gb; }

Policy& policy_for(const Case& c, bool graphs) {
  Loaded& loaded = loaded_policy();
  if (!loaded.policy || loaded.device != c.device || loaded.dtype != c.dtype || loaded.cameras != c.cameras ||
      loaded.graphs != graphs) {
    loaded.policy.reset();
    PolicyOptions o;
    o.device = c.device == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    const auto dash = c.dtype.find('-');
    const std::string base = c.dtype.substr(0, dash);
    o.dtype = base == "bf16" ? torch::kBFloat16 : torch::kFloat32;
    if (dash != std::string::npos) o.quantize = focusvla::nn::parse_quantize(c.dtype.substr(dash + 1));
    o.num_images = c.cameras;
    // The same work as bench_policy_reference.py's reference call: `In: ... Out:` prompt, no crop.
    o.prompt_format = "openvla";
    o.center_crop = false;
    o.cuda_graphs = graphs;
    o.threads = std::stoi(env("FOCUSVLA_BENCH_THREADS", "0"));
    const std::string key = env("FOCUSVLA_BENCH_UNNORM_KEY", "");
    o.unnorm_key = key;
    const auto start = std::chrono::steady_clock::now();
    loaded.policy = std::make_unique<Policy>(Policy::load(env("FOCUSVLA_BENCH_CHECKPOINT", ""), o));
    loaded.load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    loaded.device = c.device;
    loaded.dtype = c.dtype;
    loaded.cameras = c.cameras;
    loaded.graphs = graphs;
    loaded.weights_gb = c.device == "cuda" ? gpu_allocated_gb(false) : 0;
  }
  return *loaded.policy;
}

std::vector<Observation> observations(const Policy& policy, int64_t batch) {
  torch::manual_seed(0);
  const char* tasks[] = {"put both the alphabet soup and the tomato sauce in the basket",
                         "open the top drawer and put the bowl inside", "pick up the ketchup and place it in the basket",
                         "turn on the stove"};
  std::vector<Observation> out;
  for (int64_t b = 0; b < batch; ++b) {
    Observation obs;
    const int64_t cameras = policy.num_images() > 0 ? policy.num_images() : 2;  // 0: per call; LIBERO's two
    for (int64_t n = 0; n < cameras; ++n)
      obs.images.push_back(torch::randint(0, 256, {224, 224, 3}, torch::kUInt8));
    obs.instruction = tasks[b % 4];
    for (int64_t i = 0; i < policy.proprio_dim(); ++i) obs.proprio.push_back(0.01 * static_cast<double>(i));
    out.push_back(std::move(obs));
  }
  return out;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const auto i = static_cast<size_t>(std::min<double>(static_cast<double>(v.size() - 1), q * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

// The peak resident set of this process image: VmHWM of /proc/self/status. (Not getrusage's
// ru_maxrss, which Linux keeps across execve: run from bench_policy_reference.py it reported the
// Python parent's size at fork, 10 GB, whatever this process used.)
double rss_peak_gb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) * 1024 / 1e9;  // "VmHWM:  123 kB"
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024 / 1e9;
}

// A case that cannot run (a bad checkpoint, an unnorm_key missing, out of memory) is reported
// with its error message and the others go on.
template <typename Body>
void run_case(benchmark::State& state, const Body& body) {
  try {
    body();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// The same observations every call: a robot re-plans one task, so prompt lengths repeat.
void act_case(benchmark::State& state, const Case& c) {
  Policy& policy = policy_for(c, /*graphs=*/true);
  const auto batch = observations(policy, c.batch);
  const int warmup = c.device == "cuda" ? 5 : 1;  // the 2nd call of a shape captures the CUDA graph
  for (int i = 0; i < warmup; ++i) policy.act_batch(batch);
  if (c.device == "cuda") reset_gpu_peak();
  std::vector<double> ms;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    auto chunks = policy.act_batch(batch);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    benchmark::DoNotOptimize(chunks);
    state.SetIterationTime(elapsed);
    ms.push_back(elapsed * 1e3);
  }
  const double p50 = percentile(ms, 0.5);
  state.counters["p50_ms"] = p50;
  state.counters["p99_ms"] = percentile(ms, 0.99);
  state.counters["actions_per_s"] = static_cast<double>(c.batch * policy.chunk_size()) * 1e3 / p50;
  if (c.device == "cuda") {
    state.counters["gpu_weights_gb"] = weights_gb();
    state.counters["gpu_peak_gb"] = gpu_allocated_gb(true);
  } else {
    state.counters["rss_peak_gb"] = rss_peak_gb();
  }
  state.counters["load_s"] = loaded_policy().load_s;
  state.SetLabel(policy.last_execution());
}

void stages_case(benchmark::State& state, const Case& c) {
  Policy& policy = policy_for(c, /*graphs=*/false);
  const auto batch = observations(policy, c.batch);
  policy.act_batch(batch);
  std::vector<double> pre, vision, projector, llm, head;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    const auto chunks = policy.act_batch(batch);
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    const auto& t = chunks.front().timing;
    pre.push_back(t.preprocess_ms);
    vision.push_back(t.vision_ms);
    projector.push_back(t.projector_ms);
    llm.push_back(t.llm_ms);
    head.push_back(t.head_ms);
  }
  state.counters["preprocess_ms"] = percentile(pre, 0.5);
  state.counters["vision_ms"] = percentile(vision, 0.5);
  state.counters["projector_ms"] = percentile(projector, 0.5);
  state.counters["llm_ms"] = percentile(llm, 0.5);
  state.counters["head_ms"] = percentile(head, 0.5);
  state.SetLabel(policy.last_execution());
}

void BM_Act(benchmark::State& state, Case c) {
  run_case(state, [&] { act_case(state, c); });
}
void BM_Stages(benchmark::State& state, Case c) {
  run_case(state, [&] { stages_case(state, c); });
}

void register_cases() {
  const bool gpu = torch::cuda::is_available();
  for (const auto& device : split(env("FOCUSVLA_BENCH_DEVICES", gpu ? "cuda" : "cpu"))) {
    if (device == "cuda" && !gpu) continue;
    const int iters = std::stoi(env("FOCUSVLA_BENCH_ITERS", device == "cuda" ? "100" : "3"));
    for (const auto& dtype : split(env("FOCUSVLA_BENCH_DTYPES", "bf16,fp32")))
      for (const auto& cameras : split(env("FOCUSVLA_BENCH_CAMERAS", "1,2")))
        for (const auto& family : {"act", "stages"})
          for (const auto& batch : split(env("FOCUSVLA_BENCH_BATCHES", "1,4,8"))) {
            const Case c{device, dtype, std::stoll(batch), std::stoll(cameras)};
            const std::string name = std::string(family) + "/" + device + "/" + dtype + "/b" + batch + "/cam" + cameras;
            auto* b = std::string(family) == "act" ? benchmark::RegisterBenchmark(name.c_str(), BM_Act, c)
                                                   : benchmark::RegisterBenchmark(name.c_str(), BM_Stages, c);
            b->Iterations(std::string(family) == "act" ? iters : std::max(1, iters / 2))
                ->UseManualTime()
                ->Unit(benchmark::kMillisecond);
          }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (env("FOCUSVLA_BENCH_CHECKPOINT", "").empty()) {
    std::fprintf(stderr, "set FOCUSVLA_BENCH_CHECKPOINT to a checkpoint directory (scripts/make_checkpoint.py)\n");
    return 2;
  }
  register_cases();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
