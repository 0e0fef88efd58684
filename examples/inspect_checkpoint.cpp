// Using focusvla as a library: open a checkpoint directory, print what it holds, and check that
// its projector loads name for name into a module of the right shape.
//   example_inspect_checkpoint CHECKPOINT_DIR

#include <torch/torch.h>

#include <cstdio>

#include "focusvla/core/error.h"
#include "focusvla/io/checkpoint.h"
#include "focusvla/nn/layers.h"

namespace {

// projector.fc{1,2,3} of a VLA-Adapter checkpoint, shapes taken from the file.
struct ProjectorImpl : torch::nn::Module {
  explicit ProjectorImpl(const focusvla::io::StateDict& state) {
    auto dims = [&](const std::string& name) { return state.at("projector." + name + ".weight").sizes(); };
    fc1 = register_module("fc1", focusvla::nn::Linear(dims("fc1")[1], dims("fc1")[0], true, torch::kFloat32));
    fc2 = register_module("fc2", focusvla::nn::Linear(dims("fc2")[1], dims("fc2")[0], true, torch::kFloat32));
    fc3 = register_module("fc3", focusvla::nn::Linear(dims("fc3")[1], dims("fc3")[0], true, torch::kFloat32));
  }
  focusvla::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT_DIR\n", argv[0]);
    return 2;
  }
  try {
    const auto ckpt = focusvla::io::Checkpoint::open(argv[1]);
    for (const auto& part : focusvla::io::summarize(ckpt))
      std::printf("%-36s %6zu tensors %14lld parameters\n", part.name.c_str(), part.tensors, (long long)part.parameters);
    ProjectorImpl projector(ckpt.model);
    focusvla::io::load_module(projector, ckpt.model, "projector");
    std::printf("projector loaded: fc1 %lld -> %lld\n", (long long)projector.fc1->weight.size(1),
                (long long)projector.fc1->weight.size(0));
  } catch (const focusvla::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
