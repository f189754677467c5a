// gradclip internals: quantiles of a stream of norms.
//
// linear_quantile: the exact quantile of sorted data, interpolated linearly with
// the very arithmetic of numpy.percentile's default method (numpy >= 1.22), so a
// threshold matches the reference implementations bit for bit (unless the
// compiler contracts a*b+c into an FMA: then within an ulp).
//
// p2_quantile: the P-square estimator of one quantile (R. Jain and I. Chlamtac,
// "The P^2 algorithm for dynamic calculation of quantiles and histograms without
// storing observations", CACM 28(10), 1985): five markers, O(1) memory and time
// per observation. Implemented as published (desired positions advanced by their
// increments, parabolic prediction with the linear fallback), with two exact
// special cases: up to five observations it returns linear_quantile of them, and
// q = 0 / q = 1 return the extreme markers, which the algorithm keeps exactly at
// the minimum and maximum.
#ifndef GRADCLIP_DETAIL_P2_QUANTILE_HPP
#define GRADCLIP_DETAIL_P2_QUANTILE_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "float_bits.hpp"

namespace gradclip::detail {

// numpy's _lerp: from a toward b by t in [0, 1), computed from the nearer end.
inline double numpy_lerp(double a, double b, double t) noexcept {
  const double diff = b - a;
  return t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;
}

// q in [0, 1]; sorted ascending, n > 0. numpy: index (n - 1) * q; at or past the
// last index the maximum; else numpy_lerp between floor(index) and the next one.
inline double linear_quantile(const double* sorted, std::size_t n, double q) noexcept {
  const double index = static_cast<double>(n - 1) * q;
  if (index >= static_cast<double>(n - 1)) return sorted[n - 1];
  const double below = std::floor(index);
  const auto lo = static_cast<std::size_t>(below);
  return numpy_lerp(sorted[lo], sorted[lo + 1], index - below);
}

class p2_quantile {
 public:
  explicit p2_quantile(double q = 0.5) noexcept : q_(q) {}

  double q() const noexcept { return q_; }
  std::uint64_t count() const noexcept { return count_; }

  // x must be finite (the callers filter).
  void add(double x) noexcept {
    if (count_ < 5) {
      // Keep the first observations sorted in the marker heights.
      std::size_t i = static_cast<std::size_t>(count_);
      while (i > 0 && height_[i - 1] > x) {
        height_[i] = height_[i - 1];
        --i;
      }
      height_[i] = x;
      ++count_;
      if (count_ == 5) {
        const double init[5] = {1.0, 1.0 + 2.0 * q_, 1.0 + 4.0 * q_, 3.0 + 2.0 * q_, 5.0};
        for (int j = 0; j < 5; ++j) {
          position_[j] = static_cast<double>(j + 1);
          desired_[j] = init[j];
        }
      }
      return;
    }
    ++count_;
    // B1: the cell k holding x; the extreme markers follow the minimum and maximum.
    int k;
    if (x < height_[0]) {
      height_[0] = x;
      k = 0;
    } else if (x >= height_[4]) {
      if (x > height_[4]) height_[4] = x;
      k = 3;
    } else {
      k = 0;
      while (k < 3 && x >= height_[k + 1]) ++k;
    }
    // B2: markers above the cell move up one; every desired position advances.
    for (int j = k + 1; j < 5; ++j) position_[j] += 1.0;
    const double increment[5] = {0.0, q_ / 2.0, q_, (1.0 + q_) / 2.0, 1.0};
    for (int j = 0; j < 5; ++j) desired_[j] += increment[j];
    // B3: move each middle marker at most one position toward its desired one.
    for (int j = 1; j <= 3; ++j) {
      const double d = desired_[j] - position_[j];
      if ((d >= 1.0 && position_[j + 1] - position_[j] > 1.0) ||
          (d <= -1.0 && position_[j - 1] - position_[j] < -1.0)) {
        const int s = d >= 0.0 ? 1 : -1;
        const double candidate = parabolic(j, s);
        if (height_[j - 1] < candidate && candidate < height_[j + 1]) {
          height_[j] = candidate;
        } else {
          height_[j] = linear(j, s);
        }
        position_[j] += static_cast<double>(s);
      }
    }
  }

  // NaN before the first observation.
  double estimate() const noexcept {
    if (count_ == 0) return std::numeric_limits<double>::quiet_NaN();
    if (count_ <= 5) return linear_quantile(height_, static_cast<std::size_t>(count_), q_);
    if (q_ <= 0.0) return height_[0];
    if (q_ >= 1.0) return height_[4];
    return height_[2];
  }

  // The raw state, for save/load: marker heights, actual and desired positions.
  const double* heights() const noexcept { return height_; }
  const double* positions() const noexcept { return position_; }
  const double* desired() const noexcept { return desired_; }

  // Restores a saved state; returns false (changing nothing) when it is not one
  // the algorithm can reach: negative (norms are not) or unsorted heights,
  // positions that are not 1 < ... < count. (Heights of both signs near DBL_MAX
  // would make the next interpolation overflow.)
  bool restore(std::uint64_t count, const double* heights, const double* positions, const double* desired) noexcept {
    const std::size_t used = count < 5 ? static_cast<std::size_t>(count) : 5;
    for (std::size_t j = 0; j < used; ++j) {
      if (!is_finite(heights[j]) || heights[j] < 0.0 || (j > 0 && heights[j - 1] > heights[j])) return false;
    }
    if (count >= 5) {
      if (positions[0] != 1.0 || positions[4] != static_cast<double>(count)) return false;
      for (int j = 0; j < 5; ++j) {
        if (!is_finite(desired[j]) || positions[j] != std::floor(positions[j])) return false;
        if (j > 0 && !(positions[j - 1] < positions[j])) return false;
      }
    }
    count_ = count;
    for (int j = 0; j < 5; ++j) {
      height_[j] = heights[j];
      position_[j] = positions[j];
      desired_[j] = desired[j];
    }
    return true;
  }

 private:
  // The piecewise-parabolic (P^2) prediction of marker j moved by s = +-1.
  double parabolic(int j, int s) const noexcept {
    const double d = static_cast<double>(s);
    const double n0 = position_[j - 1], n1 = position_[j], n2 = position_[j + 1];
    const double q0 = height_[j - 1], q1 = height_[j], q2 = height_[j + 1];
    return q1 + d / (n2 - n0) * ((n1 - n0 + d) * (q2 - q1) / (n2 - n1) + (n2 - n1 - d) * (q1 - q0) / (n1 - n0));
  }

  double linear(int j, int s) const noexcept {
    return height_[j] + static_cast<double>(s) * (height_[j + s] - height_[j]) / (position_[j + s] - position_[j]);
  }

  double q_;
  std::uint64_t count_ = 0;
  double height_[5] = {0, 0, 0, 0, 0};
  double position_[5] = {0, 0, 0, 0, 0};
  double desired_[5] = {0, 0, 0, 0, 0};
};

}  // namespace gradclip::detail

#endif  // GRADCLIP_DETAIL_P2_QUANTILE_HPP
