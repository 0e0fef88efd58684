// A robot control loop around focusvla::Policy: load once, warm up, then every control step
// read the cameras and the robot state, call act, and execute the 8 actions of the chunk
// open-loop before asking again. Reports latency percentiles of act at the end.
//
//   example_control_loop CHECKPOINT_DIR [--steps N] [--dtype bfloat16] [--device cuda] [--unnorm-key KEY]
//
// The "robot" here is a stand-in that returns the LIBERO sample observation (uint8 camera
// images and an 8-dim state); replace `Robot` with your drivers.

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "focusvla/core/error.h"
#include "focusvla/policy/policy.h"

namespace {

// Stand-in for real drivers: fixed random camera frames and a slowly moving state.
struct Robot {
  std::vector<torch::Tensor> cameras;  // uint8 (224, 224, 3)
  std::vector<double> state = std::vector<double>(8, 0.0);

  explicit Robot(int64_t num_cameras) {
    torch::manual_seed(0);
    for (int64_t c = 0; c < num_cameras; ++c) cameras.push_back(torch::randint(0, 256, {224, 224, 3}, torch::kUInt8));
  }
  void execute(const Eigen::Ref<const Eigen::RowVectorXd>& action) {
    for (int i = 0; i < std::min<int>(7, static_cast<int>(action.size())); ++i) state[i] += 1e-3 * action[i];
  }
};

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const size_t index = std::min(values.size() - 1, static_cast<size_t>(p / 100.0 * values.size()));
  return values[index];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_DIR [--steps N] [--dtype bfloat16] [--device cuda] [--unnorm-key KEY]\n", argv[0]);
    return 2;
  }
  focusvla::PolicyOptions options;
  options.unnorm_key = "libero_spatial_no_noops";
  int steps = 20;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--steps") steps = std::stoi(value);
    else if (flag == "--dtype") options.dtype = value == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
    else if (flag == "--device") options.device = torch::Device(value);
    else if (flag == "--unnorm-key") options.unnorm_key = value;
  }
  try {
    const focusvla::Policy policy = focusvla::Policy::load(argv[1], options);
    Robot robot(policy.num_images());
    const std::string task = "put the bowl on the plate";
    for (int i = 0; i < 2; ++i) policy.act(robot.cameras, task, robot.state);  // warm-up

    std::vector<double> latencies;
    for (int step = 0; step < steps; ++step) {
      const auto start = std::chrono::steady_clock::now();
      const focusvla::ActionChunk chunk = policy.act(robot.cameras, task, robot.state);
      latencies.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
      for (Eigen::Index t = 0; t < chunk.actions.rows(); ++t) robot.execute(chunk.actions.row(t));  // open loop
    }
    std::printf("%d chunks of %lld actions: act latency p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms "
                "(%.1f actions/s)\n",
                steps, (long long)policy.chunk_size(), percentile(latencies, 50), percentile(latencies, 90),
                percentile(latencies, 99), percentile(latencies, 100),
                1000.0 * policy.chunk_size() / percentile(latencies, 50));
  } catch (const focusvla::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
