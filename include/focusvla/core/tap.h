#pragma once
// Named intermediates: one hook idiom for every model (as llama.cpp's `cb(cur, "attn_norm", il)`),
// so a whole act can be diffed against Python layer by layer.
//
// A component calls tap("layers.3.attn_norm", x) at each point worth seeing; names are the
// checkpoint's module path below the component, so `policy.set_tap(...)` sees
// "llm.layers.3.attn_norm", "head.blocks.7.kept", "vision.featurizer.blocks.22" and can find the
// same tensor in a PyTorch forward hook of the module of that name. The tensor is valid during
// the call only (copy it to keep it); taps cost nothing when unset.

#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>

namespace focusvla {

using Tap = std::function<void(const std::string& name, const torch::Tensor& value)>;

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
