#pragma once
// VLA-Adapter's `ProprioProjector` (prismatic/models/projectors.py; SPEC section 1 and 10): the
// normalized proprio state (8 floats for LIBERO) to one token of the LLM width,
//   fc1 (P -> D) -> exact GELU -> fc2 (D -> D),
// keys `fc1.*`, `fc2.*` (the torch.save file `proprio_projector--*checkpoint.pt`, `module.`
// stripped). The action head takes the token as (B, 1, D): project (B, P) and unsqueeze(1).

#include <torch/torch.h>

#include <string>

#include "focusvla/core/error.h"
#include "focusvla/io/state_dict.h"
#include "focusvla/nn/layers.h"

namespace focusvla::policy {

class ProprioProjector;

class ProprioProjectorImpl : public torch::nn::Module {
 public:
  ProprioProjectorImpl(int64_t proprio_dim, int64_t hidden, const torch::TensorOptions& options)
      : fc1(register_module("fc1", nn::Linear(proprio_dim, hidden, true, options))),
        fc2(register_module("fc2", nn::Linear(hidden, hidden, true, options))) {}

  // proprio (..., P), any floating dtype and device -> (..., D) in the module's dtype and device.
  // Throws Error when the last dimension is not P.
  torch::Tensor forward(const torch::Tensor& proprio) const {
    check(proprio.defined() && proprio.dim() >= 1 && proprio.size(-1) == proprio_dim(), "ProprioProjector",
          "expected proprio of shape (..., " + std::to_string(proprio_dim()) + "), got " +
              (proprio.defined() ? io::shape_string(proprio.sizes()) : std::string("an undefined tensor")));
    check(proprio.is_floating_point(), "ProprioProjector", "expected a floating-point proprio tensor");
    const c10::InferenceMode inference;
    const auto x = proprio.to(fc1->weight.options());
    return fc2->forward(torch::gelu(fc1->forward(x)));
  }

  // Dimensions from `fc1.weight` (D, P); every key checked by io::load_module.
  static ProprioProjector load(const io::StateDict& state, const torch::TensorOptions& options);

  int64_t proprio_dim() const { return fc1->weight.size(1); }
  int64_t hidden() const { return fc1->weight.size(0); }

  nn::Linear fc1;
  nn::Linear fc2;
};
TORCH_MODULE(ProprioProjector);

inline ProprioProjector ProprioProjectorImpl::load(const io::StateDict& state, const torch::TensorOptions& options) {
  const auto& w = state.at("fc1.weight");
  check(w.dim() == 2 && w.size(0) > 0 && w.size(1) > 0, "proprio projector",
        "'fc1.weight': expected a matrix [D, P], found " + io::shape_string(w.sizes()));
  ProprioProjector module(w.size(1), w.size(0), options);
  io::load_module(*module, state, "");
  return module;
}

}  // namespace focusvla::policy
