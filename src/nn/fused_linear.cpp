#include "focusvla/nn/fused_linear.h"

#include "focusvla/core/error.h"

namespace focusvla::nn {
namespace {

// Copies `parts` into one tensor stacked along dim 0 (or, without `copy`, allocates it) and makes
// each part a view of its rows.
torch::Tensor fuse_rows(const std::vector<torch::Tensor>& parts, bool copy) {
  torch::NoGradGuard no_grad;
  torch::Tensor whole;
  if (copy) {
    whole = torch::cat(parts, 0);
  } else {
    std::vector<int64_t> shape = parts.front().sizes().vec();
    shape.front() = 0;
    for (const auto& part : parts) shape.front() += part.size(0);
    whole = torch::empty(shape, parts.front().options());
  }
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

}  // namespace

FusedLinearImpl::FusedLinearImpl(std::vector<Linear> parts, Init init) : parts_(std::move(parts)) {
  check(!parts_.empty(), "FusedLinear", "no parts");
  for (const auto& p : parts_) {
    check(p->weight.size(1) == parts_.front()->weight.size(1), "FusedLinear", "the parts differ in in_features");
    check(p->bias.defined() == parts_.front()->bias.defined(), "FusedLinear", "some parts have a bias, some not");
    check(p->weight.dtype() == parts_.front()->weight.dtype() && p->weight.device() == parts_.front()->weight.device(),
          "FusedLinear", "the parts differ in dtype or device");
  }
  fuse_weights(/*copy=*/init == Init::kCopy);
  fuse();
}

bool FusedLinearImpl::rows_fused() const {
  if (linear_.is_empty()) return false;
  int64_t row = 0;
  for (const auto& p : parts_) {
    if (!is_row_block(p->weight, linear_->weight, row)) return false;
    if (p->bias.defined() && !is_row_block(p->bias, linear_->bias, row)) return false;
    row += p->weight.size(0);
  }
  return row == linear_->weight.size(0);
}

bool FusedLinearImpl::fused() const {
  if (!rows_fused()) return false;
  const auto whole = linear_->derived_tensors();
  int64_t row = 0;
  for (const auto& p : parts_) {
    if (p->mode_ != linear_->mode_) return false;
    const auto mine = p->derived_tensors();
    for (size_t i = 0; i < whole.size(); ++i) {
      if (whole[i]->defined() != mine[i]->defined()) return false;
      if (whole[i]->defined() && !is_row_block(*mine[i], *whole[i], row)) return false;
    }
    row += p->weight.size(0);
  }
  return true;
}

void FusedLinearImpl::share_with_parts() {
  const auto whole = linear_->derived_tensors();
  int64_t row = 0;
  for (auto& p : parts_) {
    const int64_t rows = p->weight.size(0);
    p->mode_ = linear_->mode_;
    const auto mine = p->derived_tensors();
    for (size_t i = 0; i < whole.size(); ++i)
      *mine[i] = whole[i]->defined() ? whole[i]->narrow(0, row, rows) : torch::Tensor();
    if (linear_->released_ && !p->released_) {
      // Quantized: the parts' weights become row blocks of the block's placeholder, and the
      // float rows they viewed are freed with the last view.
      torch::NoGradGuard no_grad;
      p->weight.set_data(linear_->weight.narrow(0, row, rows));
      p->released_ = true;
    }
    p->note_derived_from_current();
    row += rows;
  }
}

void FusedLinearImpl::fuse_weights(bool copy) {
  if (rows_fused()) return;
  std::vector<torch::Tensor> weights, biases;
  for (const auto& p : parts_) {
    weights.push_back(p->weight);
    biases.push_back(p->bias);
  }
  auto weight = fuse_rows(weights, copy);
  auto bias = biases.front().defined() ? fuse_rows(biases, copy) : torch::Tensor();
  linear_ = Linear(std::move(weight), std::move(bias));
}

void FusedLinearImpl::derive(MatmulMode mode) {
  // The parts' derived tensors go first, so that old and new are never held together.
  for (auto& p : parts_)
    for (auto* t : p->derived_tensors()) *t = torch::Tensor();
  linear_->set_matmul_mode(mode);
  share_with_parts();
}

void FusedLinearImpl::fuse() {
  fuse_weights();
  // The parts' mode, when they agree (else they keep their own and run separately).
  const MatmulMode mode = parts_.front()->mode_;
  for (const auto& p : parts_)
    if (p->mode_ != mode) return;
  if (!fused()) derive(mode);
}

void FusedLinearImpl::set_matmul_mode(MatmulMode mode) {
  // Checked before anything changes: a released block keeps working as it is.
  for (const auto& p : parts_) p->check_not_released(std::string("set matmul mode ") + matmul_mode_name(mode));
  if (!linear_.is_empty()) linear_->check_not_released(std::string("set matmul mode ") + matmul_mode_name(mode));
  fuse_weights();
  derive(mode);
}

std::vector<torch::Tensor> FusedLinearImpl::forward(const torch::Tensor& x) const {
  std::vector<torch::Tensor> out;
  out.reserve(parts_.size());
  if (fused()) {
    const auto y = linear_->forward(x);
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

void FusedLinearImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, dtype, non_blocking);
  fuse();
}

void FusedLinearImpl::to(torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(dtype, non_blocking);
  fuse();
}

void FusedLinearImpl::to(torch::Device device, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  fuse();
}

}  // namespace focusvla::nn
