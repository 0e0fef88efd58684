// A robot control loop on focusvla::runtime::ChunkExecutor: load the policy once, warm it up, then
// at a fixed rate read the robot, tick the executor and send the action it returns. The executor
// decides when to infer (open loop, asynchronously while the current chunk runs, or every tick
// with ACT's temporal ensembling); the loop only keeps the rate. Prints the executor's metrics.
//
//   example_control_loop CHECKPOINT_DIR [--mode open-loop|async|ensemble] [--hz 20] [--steps 100]
//       [--threshold 4] [--aggregate replace|average] [--new-weight 0.7] [--execute-steps 0]
//       [--ensemble-m 0.01] [--device cpu|cuda] [--dtype float32|bfloat16] [--unnorm-key KEY]
//       [--threads N] [--trace]
//
// The "robot" is a simulation: fixed random camera frames and a state that integrates the
// actions; replace `SimulatedRobot` with your drivers.

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/policy/policy.h"
#include "focusvla/runtime/chunk_executor.h"

namespace {

using focusvla::runtime::ChunkExecutor;
using focusvla::runtime::ExecutorOptions;

// Stand-in for real drivers: fixed random camera frames and a state that follows the actions.
struct SimulatedRobot {
  std::vector<torch::Tensor> cameras;  // uint8 (224, 224, 3)
  std::vector<double> state;  // proprio_dim values (none when the policy takes no proprio)

  SimulatedRobot(int64_t num_cameras, int64_t state_dim) : state(static_cast<size_t>(state_dim), 0.0) {
    torch::manual_seed(0);
    for (int64_t c = 0; c < num_cameras; ++c) cameras.push_back(torch::randint(0, 256, {224, 224, 3}, torch::kUInt8));
  }
  focusvla::Observation observe(const std::string& task) const { return {cameras, task, state}; }
  void execute(const Eigen::VectorXd& action) {
    for (size_t i = 0; i < state.size() && i < static_cast<size_t>(action.size()); ++i) state[i] += 1e-3 * action[static_cast<Eigen::Index>(i)];
  }
};

struct Args {
  std::string checkpoint;
  focusvla::PolicyOptions policy;
  ExecutorOptions executor;
  int steps = 100;
  bool trace = false;
};

const char* const kUsage =
    "usage: example_control_loop CHECKPOINT_DIR [--mode open-loop|async|ensemble] [--hz 20] [--steps 100]\n"
    "    [--threshold 4] [--aggregate replace|average] [--new-weight 0.7] [--execute-steps 0]\n"
    "    [--ensemble-m 0.01] [--device cpu|cuda] [--dtype float32|bfloat16] [--unnorm-key KEY]\n"
    "    [--threads N] [--trace]\n";

double number(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    const double value = std::stod(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  throw focusvla::Error(flag + ": expected a number, got '" + text + "'");
}

Args parse(int argc, char** argv) {
  Args args;
  args.policy.unnorm_key = "libero_spatial_no_noops";
  std::vector<std::string> rest(argv + 1, argv + argc);
  for (size_t i = 0; i < rest.size(); ++i) {
    const std::string flag = rest[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (flag == "--trace") {
      args.trace = true;
      continue;
    }
    if (flag.rfind("--", 0) != 0) {
      if (!args.checkpoint.empty()) throw focusvla::Error("unexpected argument '" + flag + "'");
      args.checkpoint = flag;
      continue;
    }
    if (i + 1 >= rest.size()) throw focusvla::Error(flag + ": missing value");
    const std::string value = rest[++i];
    if (flag == "--mode") args.executor.mode = focusvla::runtime::parse_mode(value);
    else if (flag == "--hz") args.executor.hz = number(flag, value);
    else if (flag == "--steps") args.steps = static_cast<int>(number(flag, value));
    else if (flag == "--threshold") args.executor.threshold = static_cast<int>(number(flag, value));
    else if (flag == "--aggregate") args.executor.aggregate = focusvla::runtime::parse_aggregate(value);
    else if (flag == "--new-weight") args.executor.new_weight = number(flag, value);
    else if (flag == "--execute-steps") args.executor.execute_steps = static_cast<int>(number(flag, value));
    else if (flag == "--ensemble-m") args.executor.ensemble_m = number(flag, value);
    else if (flag == "--device") args.policy.device = torch::Device(value);
    else if (flag == "--dtype") {
      if (value != "float32" && value != "bfloat16") throw focusvla::Error("--dtype: expected float32 or bfloat16, got '" + value + "'");
      args.policy.dtype = value == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
    } else if (flag == "--unnorm-key") args.policy.unnorm_key = value;
    else if (flag == "--threads") args.policy.threads = static_cast<int>(number(flag, value));
    else throw focusvla::Error("unknown option '" + flag + "'");
  }
  if (args.checkpoint.empty()) throw focusvla::Error("missing CHECKPOINT_DIR");
  return args;
}

std::string describe(const ExecutorOptions& o) {
  char text[256];
  switch (o.mode) {
    case focusvla::runtime::ExecutionMode::kOpenLoop:
      std::snprintf(text, sizeof text, "open-loop, %g Hz, execute %s", o.hz,
                    o.execute_steps > 0 ? (std::to_string(o.execute_steps) + " steps per chunk").c_str() : "whole chunks");
      break;
    case focusvla::runtime::ExecutionMode::kAsync:
      if (o.aggregate == focusvla::runtime::Aggregate::kReplace)
        std::snprintf(text, sizeof text, "async, %g Hz, threshold %d, aggregate replace", o.hz, o.threshold);
      else
        std::snprintf(text, sizeof text, "async, %g Hz, threshold %d, aggregate average (new weight %g)", o.hz,
                      o.threshold, o.new_weight);
      break;
    case focusvla::runtime::ExecutionMode::kEnsemble:
      std::snprintf(text, sizeof text, "ensemble, %g Hz, m %g", o.hz, o.ensemble_m);
      break;
  }
  return text;
}

void trace_tick(const focusvla::runtime::TickReport& r, const Eigen::VectorXd& action) {
  std::printf("tick %3lld  action [%+.4f %+.4f %+.4f ...]  from tick %lld (%.0f ms old)", static_cast<long long>(r.tick),
              action[0], action[1], action[2], static_cast<long long>(r.source_tick), r.staleness_ms);
  if (r.inferred_inline) std::printf("  inferred here");
  if (r.inference_started) std::printf("  started inference");
  if (r.chunk_landed)
    std::printf("  landed chunk of tick %lld (dropped %lld stale, merged %lld)", static_cast<long long>(r.landed_from_tick),
                static_cast<long long>(r.dropped_steps), static_cast<long long>(r.merged_steps));
  if (r.predictions > 0) std::printf("  %lld predictions", static_cast<long long>(r.predictions));
  if (r.held) std::printf("  HELD");
  if (r.deadline_misses > 0) std::printf("  %lld deadline miss(es)", static_cast<long long>(r.deadline_misses));
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    const focusvla::Policy policy = focusvla::Policy::load(args.checkpoint, args.policy);
    // num_images() 0: the checkpoint fixes no camera count (released config.json): LIBERO's two.
    SimulatedRobot robot(policy.num_images() > 0 ? policy.num_images() : 2, policy.proprio_dim());
    const std::string task = "put the bowl on the plate";
    // Warm-up outside the loop (on a GPU the second call of a shape captures its CUDA graph).
    for (int i = 0; i < 2; ++i) policy.act(robot.cameras, task, robot.observe(task).proprio);

    const auto& s = policy.settings();
    std::printf("policy: %s, %s, %s, chunk %lld x %lld\n", s.head.c_str(), focusvla::dtype_name(s.dtype).c_str(),
                s.device.str().c_str(), static_cast<long long>(policy.chunk_size()),
                static_cast<long long>(policy.action_dim()));
    std::printf("executor: %s; %d ticks\n", describe(args.executor).c_str(), args.steps);

    ChunkExecutor executor(policy, args.executor);
    const auto period = std::chrono::duration<double>(1.0 / args.executor.hz);
    for (int step = 0; step < args.steps; ++step) {
      const auto start = std::chrono::steady_clock::now();
      const Eigen::VectorXd action = executor.tick(robot.observe(task));
      robot.execute(action);
      if (args.trace) trace_tick(executor.last_tick(), action);
      // As LeRobot's robot client: sleep what is left of the period; a late tick starts the next at once.
      std::this_thread::sleep_until(start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(period));
    }
    executor.close();
    std::printf("%s\n", focusvla::runtime::format_metrics(executor.metrics()).c_str());
  } catch (const focusvla::Error& e) {
    std::fprintf(stderr, "error: %s\n%s", e.what(), kUsage);
    return 1;
  } catch (const std::exception& e) {  // LibTorch's (a device it does not know, ...)
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
