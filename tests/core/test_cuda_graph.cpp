// core/cuda_graph.h: on a machine without a GPU, capture is refused with an Error (the policy's
// eager fallback); with one, a captured computation replays on new inputs, a capture that would
// synchronize fails cleanly and leaves the stream usable, and stage timing reads CUDA events.

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

#include "focusvla/core/cuda_graph.h"
#include "focusvla/core/error.h"
#include "test_util.h"

namespace focusvla {
namespace {

using testing::expect_error;

TEST(CudaGraph, RefusedOnTheCpu) {
  CudaGraph graph(torch::kCPU);
  bool ran = false;
  expect_error([&] { graph.capture([&] { ran = true; }); }, {"CudaGraph"});
  EXPECT_FALSE(graph.captured());
  expect_error([&] { graph.replay(); }, {"CudaGraph", "replay() before a successful capture()"});
}

TEST(CudaGraph, StageTimerOnTheCpuUsesHostClocks) {
  StageTimer timer(torch::kCPU);
  timer.mark();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  timer.mark();
  timer.mark();
  const auto ms = timer.intervals_ms();
  ASSERT_EQ(ms.size(), 2u);
  EXPECT_GE(ms[0], 19.0);
  EXPECT_GE(ms[1], 0.0);
  EXPECT_LT(ms[1], ms[0]);

  // restart(): the next call's marks only.
  timer.restart();
  EXPECT_TRUE(timer.intervals_ms().empty());
  timer.mark();
  timer.mark();
  ASSERT_EQ(timer.intervals_ms().size(), 1u);
  EXPECT_LT(timer.intervals_ms()[0], 19.0);
}

TEST(CudaGraph, CapturesReplaysAndFallsBackOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  ASSERT_TRUE(cuda_graphs_compiled());
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  torch::Tensor x = torch::arange(8, cuda.dtype(torch::kFloat32));
  torch::Tensor y = torch::full({8}, std::numeric_limits<float>::quiet_NaN(), cuda.dtype(torch::kFloat32));
  CudaGraph graph(torch::kCUDA);
  graph.capture([&] { y.copy_(x * 2 + 1); });
  ASSERT_TRUE(graph.captured());
  x.copy_(torch::full({8}, 3.0f, cuda.dtype(torch::kFloat32)));
  graph.replay();
  synchronize_stream(torch::kCUDA);
  EXPECT_TRUE(torch::equal(y.cpu(), torch::full({8}, 7.0f)));

  // A host read inside the capture is not capturable: an Error, and the device still works.
  CudaGraph bad(torch::kCUDA);
  expect_error([&] { bad.capture([&] { (void)x.sum().item<float>(); }); }, {"CudaGraph", "capture failed"});
  EXPECT_FALSE(bad.captured());
  EXPECT_EQ((x + 1).sum().item<float>(), 32.0f);

  StageTimer timer(torch::kCUDA);
  timer.mark();
  (void)torch::matmul(torch::ones({512, 512}, cuda), torch::ones({512, 512}, cuda));
  timer.mark();
  synchronize_stream(torch::kCUDA);
  ASSERT_EQ(timer.intervals_ms().size(), 1u);
  EXPECT_GT(timer.intervals_ms()[0], 0.0);
  // A second call on the same timer reuses its events and reports its own marks only.
  timer.restart();
  timer.mark();
  timer.mark();
  timer.mark();
  synchronize_stream(torch::kCUDA);
  ASSERT_EQ(timer.intervals_ms().size(), 2u);
  EXPECT_GE(timer.intervals_ms()[0], 0.0);
}

}  // namespace
}  // namespace focusvla
