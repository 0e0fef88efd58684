#pragma once
// Proprio in, actions out (SPEC 10): the dataset statistics a checkpoint carries map raw robot
// state to [-1, 1] before the proprio projector, and the head's [-1, 1] actions back to robot
// units, per dimension, as the reference's normalize_proprio / predict_action do:
//   normalized = clip(2 (x - low) / (high - low + 1e-8) - 1, -1, 1)
//   raw        = 0.5 (n + 1) (high - low + 1e-8) + low
// with (low, high) = (q01, q99) for "bounds_q99" (LIBERO), (min, max) for "bounds". Dimensions
// whose mask is false pass through (clipped on the way in, untouched on the way out).

#include <Eigen/Core>

#include <string>
#include <vector>

#include "focusvla/io/checkpoint_config.h"

namespace focusvla::policy {

class Normalizer {
 public:
  using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  // `what` names the statistics in errors (e.g. "libero_spatial_no_noops action statistics").
  // Throws Error for an unknown normalization or missing min / max with "bounds".
  static Normalizer from_stats(const io::NormStats& stats, const std::string& normalization, const std::string& what);

  size_t dim() const { return low_.size(); }
  // raw (dim values) -> out[0 .. dim) in [-1, 1].
  void normalize(const std::vector<double>& raw, float* out) const;
  // (rows, dim) in [-1, 1] -> robot units.
  Matrix unnormalize(const Matrix& normalized) const;

 private:
  std::vector<double> low_, high_;
  std::vector<bool> mask_;
};

}  // namespace focusvla::policy
