#include "focusvla/nn/fused_linear.h"

#include "focusvla/core/error.h"

namespace focusvla::nn {
namespace {

// Copies `parts` into one tensor stacked along dim 0 and makes each part a view of its rows.
torch::Tensor fuse_rows(const std::vector<torch::Tensor>& parts) {
  torch::NoGradGuard no_grad;
  auto whole = torch::cat(parts, 0);
  int64_t row = 0;
  for (auto part : parts) {
    const int64_t rows = part.size(0);
    part.set_data(whole.narrow(0, row, rows));
    row += rows;
  }
  return whole;
}

// True when `part` is exactly rows [row, row + part.size(0)) of `whole`.
bool is_row_block(const torch::Tensor& part, const torch::Tensor& whole, int64_t row) {
  return part.defined() && whole.defined() && part.is_alias_of(whole) && part.dim() == whole.dim() &&
         part.strides() == whole.strides() && part.sizes().slice(1) == whole.sizes().slice(1) &&
         part.storage_offset() == whole.storage_offset() + row * whole.stride(0);
}

torch::Tensor fp32_copy(const torch::Tensor& t, bool on) {
  torch::NoGradGuard no_grad;
  return on && t.defined() ? t.to(torch::kFloat32) : torch::Tensor();
}

}  // namespace

FusedLinear::FusedLinear(std::vector<Linear> parts) : parts_(std::move(parts)) {
  check(!parts_.empty(), "FusedLinear", "no parts");
  for (const auto& p : parts_) {
    check(p->weight.size(1) == parts_.front()->weight.size(1), "FusedLinear", "the parts differ in in_features");
    check(p->bias.defined() == parts_.front()->bias.defined(), "FusedLinear", "some parts have a bias, some not");
  }
  fuse();
}

void FusedLinear::fuse() {
  if (fused()) return;
  std::vector<torch::Tensor> weights, biases;
  for (const auto& p : parts_) {
    weights.push_back(p->weight);
    biases.push_back(p->bias);
  }
  weight_ = fuse_rows(weights);
  bias_ = biases.front().defined() ? fuse_rows(biases) : torch::Tensor();
  weight_fp32_ = bias_fp32_ = torch::Tensor();
}

bool FusedLinear::fused() const {
  int64_t row = 0;
  for (const auto& p : parts_) {
    if (!is_row_block(p->weight, weight_, row)) return false;
    if (p->bias.defined() && !is_row_block(p->bias, bias_, row)) return false;
    row += p->weight.size(0);
  }
  return !parts_.empty();
}

void FusedLinear::keep_fp32_copy(bool on) {
  on = on && fused();
  weight_fp32_ = fp32_copy(weight_, on);
  bias_fp32_ = fp32_copy(bias_, on);
}

std::vector<torch::Tensor> FusedLinear::forward(const torch::Tensor& x) const {
  std::vector<torch::Tensor> out;
  if (fused()) {
    const bool in_fp32 = weight_fp32_.defined() && x.scalar_type() == torch::kBFloat16 && x.is_cpu();
    const auto y = in_fp32 ? linear_bf16_as_fp32(x, weight_fp32_, bias_fp32_) : torch::linear(x, weight_, bias_);
    int64_t column = 0;
    for (const auto& p : parts_) {
      out.push_back(y.narrow(-1, column, p->weight.size(0)));
      column += p->weight.size(0);
    }
    return out;
  }
  for (const auto& p : parts_) out.push_back(p->forward(x));
  return out;
}

void FusingModule::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, dtype, non_blocking);
  after_to();
}
void FusingModule::to(torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(dtype, non_blocking);
  after_to();
}
void FusingModule::to(torch::Device device, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  after_to();
}

}  // namespace focusvla::nn
