#pragma once
// Named intermediates: one hook idiom for every model (as llama.cpp's `cb(cur, "attn_norm", il)`),
// so a whole act can be diffed against Python layer by layer.
//
// A component calls tap("layers.3.attn_norm", x) at each point worth seeing; names are the
// checkpoint's module path below the component, so `policy.set_tap(...)` sees
// "llm.layers.3.attn_norm", "head.blocks.7.kept", "vision.featurizer.blocks.22" and can find the
// same tensor in a PyTorch forward hook of the module of that name. The tensor is valid during
// the call only (copy it to keep it); taps cost nothing when unset.
//
// Interventions (diagnostics only): a few named points let a caller *replace* the tensor that
// flows on, so that an ablation runs through the one forward instead of a second implementation
// of it (policy/explain.h: the visual tokens zeroed after the projector, the head's conditioning
// zeroed). Only the points a component documents as intervention points call one; everywhere else
// nothing changes, and an unset Intervention costs one branch. The tap at such a point sees the
// computed value; the replacement is what flows on.

#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>

#include "focusvla/core/error.h"

namespace focusvla {

using Tap = std::function<void(const std::string& name, const torch::Tensor& value)>;

// Returns the tensor to use instead of `value` at the intervention point `name`, or an undefined
// tensor to leave it. The replacement must have value's shape; it is converted to value's dtype
// and device.
using Intervention = std::function<torch::Tensor(const std::string& name, const torch::Tensor& value)>;

// `value`, or what `intervention` replaces it with at `name` (unset: `value`, at no cost). Throws
// Error naming the point when the replacement has another shape.
inline torch::Tensor intervene(const Intervention& intervention, const std::string& name, const torch::Tensor& value) {
  if (!intervention) return value;
  const torch::Tensor replacement = intervention(name, value);
  if (!replacement.defined()) return value;
  check(replacement.sizes() == value.sizes(), "intervention at '" + name + "'",
        "replacement has shape " + c10::str(replacement.sizes()) + ", the value " + c10::str(value.sizes()));
  return replacement.to(value.options());
}

// A Tap that adds `prefix` + "." to every name before passing it to `tap` (unset stays unset).
inline Tap prefixed(const std::string& prefix, Tap tap) {
  if (!tap) return {};
  return [prefix, tap = std::move(tap)](const std::string& name, const torch::Tensor& value) {
    tap(prefix + "." + name, value);
  };
}

// "blocks.7" from ("blocks", 7): layer-qualified names.
inline std::string indexed(const std::string& name, int64_t index) { return name + "." + std::to_string(index); }

}  // namespace focusvla
