// gradclip: running statistics of gradient norms, to choose or audit a threshold.
//
//   gradclip::norm_stats stats;
//   stats.record(clip(grads));            // any clipper's clip_result
//   stats.mean(), stats.stddev(), stats.quantile(0.9), stats.clip_rate()
//
// mean, stddev (population), min and max cover every finite norm recorded;
// quantiles cover the most recent `window` finite norms; clip_rate covers all.
#ifndef GRADCLIP_ADAPTIVE_NORM_STATS_HPP
#define GRADCLIP_ADAPTIVE_NORM_STATS_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <vector>

#include "../clip_norm.hpp"
#include "../detail/float_bits.hpp"
#include "../detail/p2_quantile.hpp"
#include "../detail/state_io.hpp"

namespace gradclip {

class norm_stats {
 public:
  // window: how many recent finite norms the quantiles look at (> 0).
  explicit norm_stats(std::size_t window = 1000) : window_(window) {
    if (window == 0) throw std::invalid_argument("gradclip::norm_stats: window must be > 0");
  }

  void record(double total_norm, bool clipped) {
    ++count_;
    if (clipped) ++clipped_;
    if (!detail::is_finite(total_norm)) {
      ++nonfinite_;
      return;
    }
    // Welford's update: stable for long runs.
    ++finite_;
    const double delta = total_norm - mean_;
    mean_ += delta / static_cast<double>(finite_);
    m2_ += delta * (total_norm - mean_);
    min_ = std::min(min_, total_norm);
    max_ = std::max(max_, total_norm);
    if (recent_.size() < window_) {
      recent_.push_back(total_norm);
    } else {
      recent_[next_] = total_norm;
    }
    next_ = (next_ + 1) % window_;
  }
  void record(const clip_result& r) { record(r.total_norm, r.clipped); }

  std::uint64_t count() const noexcept { return count_; }            // every norm recorded
  std::uint64_t nonfinite_count() const noexcept { return nonfinite_; }
  std::uint64_t clipped_count() const noexcept { return clipped_; }
  double clip_rate() const noexcept { return count_ ? static_cast<double>(clipped_) / static_cast<double>(count_) : 0.0; }
  // Over the finite norms; NaN before the first one.
  double mean() const noexcept { return finite_ ? mean_ : nan(); }
  double variance() const noexcept { return finite_ ? m2_ / static_cast<double>(finite_) : nan(); }
  double stddev() const noexcept { return std::sqrt(variance()); }
  double min() const noexcept { return finite_ ? min_ : nan(); }
  double max() const noexcept { return finite_ ? max_ : nan(); }
  std::size_t window() const noexcept { return window_; }

  // The q-quantile (q in [0, 1]) of the recent finite norms, interpolated linearly
  // as numpy's default; NaN when there are none. Throws std::invalid_argument for q
  // outside [0, 1].
  double quantile(double q) const {
    if (detail::is_nan(q) || q < 0.0 || q > 1.0) {
      throw std::invalid_argument("gradclip::norm_stats::quantile: q must be in [0, 1]");
    }
    if (recent_.empty()) return nan();
    std::vector<double> sorted = recent_;
    std::sort(sorted.begin(), sorted.end());
    return detail::linear_quantile(sorted.data(), sorted.size(), q);
  }

  void save(std::ostream& out) const {
    detail::state_writer w(kind, version);
    w.put_u64(window_);
    w.put_u64(count_);
    w.put_u64(finite_);
    w.put_u64(nonfinite_);
    w.put_u64(clipped_);
    w.put_double(mean_);
    w.put_double(m2_);
    w.put_double(min_);
    w.put_double(max_);
    w.put_u64(next_);
    w.put_doubles(recent_);
    w.write(out);
  }

  // Replaces this object's state with a saved one; on any error throws
  // gradclip::state_error and leaves it unchanged.
  void load(std::istream& in) {
    detail::state_reader r(in, kind, version);
    norm_stats s(1);
    s.window_ = static_cast<std::size_t>(r.get_u64());
    s.count_ = r.get_u64();
    s.finite_ = r.get_u64();
    s.nonfinite_ = r.get_u64();
    s.clipped_ = r.get_u64();
    s.mean_ = r.get_double();
    s.m2_ = r.get_double();
    s.min_ = r.get_double();
    s.max_ = r.get_double();
    s.next_ = static_cast<std::size_t>(r.get_u64());
    s.recent_ = r.get_doubles();
    r.finish();
    if (s.window_ == 0 || s.recent_.size() > s.window_ || s.next_ >= s.window_ ||
        s.finite_ + s.nonfinite_ != s.count_ || s.clipped_ > s.count_ ||
        s.recent_.size() != std::min<std::uint64_t>(s.finite_, s.window_) ||
        (s.recent_.size() < s.window_ && s.next_ != s.recent_.size()) ||
        !(s.m2_ >= 0.0) || !s.statistics_consistent()) {
      r.fail("inconsistent fields");
    }
    *this = std::move(s);
  }

 private:
  // What record() can reach: nothing before the first finite norm; after it a finite
  // mean, min <= max, and the recent norms within [min, max]. (m2 may be inf: the
  // spread of norms above ~1e154 squares past DBL_MAX.)
  bool statistics_consistent() const noexcept {
    if (finite_ == 0) return mean_ == 0.0 && m2_ == 0.0 && min_ == std::numeric_limits<double>::infinity() &&
                             max_ == -std::numeric_limits<double>::infinity();
    if (!detail::is_finite(mean_) || !detail::is_finite(min_) || !detail::is_finite(max_) || !(min_ <= max_)) {
      return false;
    }
    return std::all_of(recent_.begin(), recent_.end(), [this](double x) { return x >= min_ && x <= max_; });
  }

  static constexpr const char* kind = "norm_stats";
  static constexpr std::uint32_t version = 1;
  static double nan() noexcept { return std::numeric_limits<double>::quiet_NaN(); }

  std::size_t window_;
  std::uint64_t count_ = 0, finite_ = 0, nonfinite_ = 0, clipped_ = 0;
  double mean_ = 0.0, m2_ = 0.0;
  double min_ = std::numeric_limits<double>::infinity();
  double max_ = -std::numeric_limits<double>::infinity();
  std::vector<double> recent_;  // ring buffer of the last window_ finite norms
  std::size_t next_ = 0;
};

}  // namespace gradclip

#endif  // GRADCLIP_ADAPTIVE_NORM_STATS_HPP
