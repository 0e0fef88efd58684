#pragma once
// A toy head family for the factory tests, written as a new family would be: one file with a
// PolicyHead and its HeadFamily, then register_head(toy_head_family()) (or one line in
// builtin_families(), src/policy/head.cpp, for a family of the library).
//
// "toy-flow": keys toy_flow.proj.{weight, bias} (Linear(D, A)); the actions are the projected
// mean visual state of the last layer, repeated over a chunk of 4. Tap: "pooled".

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>

#include "focusvla/io/state_dict.h"
#include "focusvla/policy/head.h"

namespace focusvla::testing {

class ToyHeadModuleImpl : public torch::nn::Module {
 public:
  ToyHeadModuleImpl(int64_t hidden, int64_t action_dim)
      : proj(register_module("proj", torch::nn::Linear(hidden, action_dim))) {}
  torch::nn::Linear proj;
};
TORCH_MODULE(ToyHeadModule);

class ToyHead : public policy::PolicyHead {
 public:
  explicit ToyHead(ToyHeadModule module) : module_(std::move(module)) {}
  torch::Tensor forward(const torch::Tensor& visual, const torch::Tensor&, const torch::Tensor&,
                        policy::HeadDiagnostics*) const override {
    const auto pooled = visual.select(1, visual.size(1) - 1).mean(1).to(module_->proj->weight.dtype());
    if (tap_) tap_("pooled", pooled);
    return torch::linear(pooled, module_->proj->weight, module_->proj->bias).unsqueeze(1).expand({-1, chunk(), -1});
  }
  int64_t chunk() const override { return 4; }
  int64_t action_dim() const override { return module_->proj->weight.size(0); }
  int64_t hidden() const override { return module_->proj->weight.size(1); }
  std::string name() const override { return "toy-flow"; }
  torch::nn::Module& module() override { return *module_; }
  void set_tap(Tap tap) override { tap_ = std::move(tap); }

 private:
  ToyHeadModule module_;
  Tap tap_;
};

inline policy::HeadFamily toy_head_family() {
  policy::HeadFamily family;
  family.name = "toy-flow";
  family.description = "keys toy_flow.*";
  family.detect = [](const io::StateDict& state, const io::VlaConfig&) { return state.has_prefix("toy_flow"); };
  family.load = [](const io::StateDict& state, const io::VlaConfig&,
                   const torch::TensorOptions& options) -> std::shared_ptr<policy::PolicyHead> {
    const auto& weight = state.at("toy_flow.proj.weight");
    ToyHeadModule module(weight.size(1), weight.size(0));
    module->to(options.dtype().toScalarType());
    io::load_module(*module, state, "toy_flow");
    return std::make_shared<ToyHead>(module);
  };
  return family;
}

}  // namespace focusvla::testing
