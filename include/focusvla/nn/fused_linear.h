#pragma once
// Linear layers that read the same input (q/k/v, gate/up), run as one matmul: one nn::Linear over
// the concatenated weight, whose forward does the multiplying (in its MatmulMode), split by part.
// The parts' weights and biases become row blocks of that Linear's, and the parts' parameters
// views of those rows, so they keep their checkpoint names and shapes (loading writes through
// the views). What the mode derives (fp32 copies) is made once for the fused block and the parts
// view their rows of it too: no memory is held twice.
//
// A FusedLinear is a module without parameters of its own. Register it in the owner after its
// parts (the owner's Module::to() then moves the parts first and this re-fuses them):
//
//   q_proj = register_module("q_proj", nn::Linear(...));  ...
//   qkv = register_module("qkv_proj", nn::FusedLinear(std::vector<nn::Linear>{q_proj, k_proj, v_proj}));
//
// When the sharing breaks (a caller replaced a part's weight, or gave one part its own mode),
// forward runs the parts separately, each its own Linear::forward: slower, never wrong; fuse()
// (or Module::to(), or set_matmul_mode) fuses again.

#include <torch/torch.h>

#include <vector>

#include "focusvla/nn/linear.h"

namespace focusvla::nn {

class FusedLinearImpl : public torch::nn::Module {
 public:
  // What the parts hold when the FusedLinear is made: values to keep (kCopy: copied into the fused
  // block), or nothing yet (kUninitialised: parts just constructed, a load follows; the block is
  // only allocated, so that building a model does not write, and make resident, memory the load
  // is about to overwrite).
  enum class Init { kCopy, kUninitialised };
  // The parts share in_features; all have a bias or none has. Fuses them.
  explicit FusedLinearImpl(std::vector<Linear> parts, Init init = Init::kCopy);

  // Makes the parts row blocks of one Linear again (a copy; a no-op when they already are) and
  // gives that Linear the parts' mode (when they agree) with the parts viewing its derived rows.
  void fuse();
  // Whether forward runs one matmul: the parts' weights, biases and derived tensors are row
  // blocks of the fused Linear's, in the same mode.
  bool fused() const;
  // The mode on the fused block and every part, derived once for the block (fuses the parts
  // first when their weights are not row blocks).
  void set_matmul_mode(MatmulMode mode);

  // One output per part, in order: views of the fused Linear's output when fused, else each
  // part's own Linear::forward.
  std::vector<torch::Tensor> forward(const torch::Tensor& x) const;

  const std::vector<Linear>& parts() const { return parts_; }
  // The fused block: weight (sum of out_features, in_features). Not registered (the parameters
  // are the parts'); replaced by fuse() when the parts moved.
  const Linear& linear() const { return linear_; }

  // Module::to(): the parts moved (registered before this, in the owner): fuse again.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

 private:
  // Whether the parts' weights and biases are row blocks of linear_'s.
  bool rows_fused() const;
  // Makes them so (a copy into a new linear_, or with `copy` false a new uninitialised block)
  // unless they are.
  void fuse_weights(bool copy = true);
  // Sets `mode` on linear_ (deriving its tensors from the fused weights, once) and shares it.
  void derive(MatmulMode mode);
  // Gives each part its rows of linear_'s derived tensors and linear_'s mode.
  void share_with_parts();

  std::vector<Linear> parts_;
  Linear linear_{nullptr};
};
TORCH_MODULE(FusedLinear);

}  // namespace focusvla::nn
