#include "focusvla/policy/normalization.h"

#include <algorithm>

#include "focusvla/core/error.h"

namespace focusvla::policy {

Normalizer Normalizer::from_stats(const io::NormStats& stats, const std::string& normalization, const std::string& what) {
  Normalizer n;
  if (normalization == "bounds_q99") {
    n.low_ = stats.q01;
    n.high_ = stats.q99;
  } else {
    check(normalization == "bounds", what, "unknown normalization '" + normalization + "' (bounds_q99 or bounds)");
    check(!stats.min.empty() && !stats.max.empty(), what, "has no min/max for 'bounds' normalization");
    n.low_ = stats.min;
    n.high_ = stats.max;
  }
  check(n.low_.size() == n.high_.size(), what, "low and high bounds differ in length");
  n.mask_ = stats.mask.empty() ? std::vector<bool>(n.low_.size(), true) : stats.mask;
  check(n.mask_.size() == n.low_.size(), what, "mask and bounds differ in length");
  return n;
}

void Normalizer::normalize(const std::vector<double>& raw, float* out) const {
  for (size_t i = 0; i < raw.size() && i < dim(); ++i) {
    const double x = raw[i];
    const double n = mask_[i] ? 2 * (x - low_[i]) / (high_[i] - low_[i] + 1e-8) - 1 : x;
    out[i] = static_cast<float>(std::clamp(n, -1.0, 1.0));
  }
}

Normalizer::Matrix Normalizer::unnormalize(const Matrix& normalized) const {
  Matrix raw = normalized;
  for (Eigen::Index r = 0; r < raw.rows(); ++r)
    for (Eigen::Index c = 0; c < raw.cols() && static_cast<size_t>(c) < dim(); ++c)
      if (mask_[static_cast<size_t>(c)])
        raw(r, c) = 0.5 * (normalized(r, c) + 1) * (high_[static_cast<size_t>(c)] - low_[static_cast<size_t>(c)] + 1e-8) +
                    low_[static_cast<size_t>(c)];
  return raw;
}

}  // namespace focusvla::policy
