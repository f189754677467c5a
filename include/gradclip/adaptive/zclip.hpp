// gradclip: ZClip, adaptive clipping of the global norm by z-score anomaly detection.
//
//   Kumar, Owen, Chowdhury, Güra, "ZClip: Adaptive Spike Mitigation for LLM
//   Pre-Training", arXiv:2504.02507 (2025). The rule, its order of updates and the
//   defaults follow the authors' reference code, github.com/bluorion-com/ZClip
//   (zclip/zclip.py, v1.0.0).
//
//   gradclip::zclip clip;                  // alpha 0.97, z_thresh 2.5, 25 warm-up steps
//   ... backward ...   auto r = clip(grads);   // r.total_norm, r.scale, r.clipped
//
// Each step, with g the total norm of the group (computed once):
//   warm-up, while fewer than warmup_steps norms are recorded: g is recorded and the
//     group is clipped by max_grad_norm alone; the last warm-up step sets
//     mean = the mean of the recorded norms, var = their population variance.
//   afterwards: std = sqrt(var), z = (g - mean) / (std + eps), and a threshold by mode:
//     zscore      spike when z > z_thresh: (mean + z_thresh * std / (z / z_thresh)) * clip_factor
//                 (= mean + z_thresh^2 * std / z, times clip_factor: the larger the
//                 outlier, the harder it is cut back)
//     mean        spike when z > z_thresh: mean
//     percentile  spike when g > mean + z_thresh * std: that bound
//     the group is clipped to min(threshold, max_grad_norm) after a spike, else to
//     max_grad_norm, with the core coefficient (clip_by_global_norm's), then
//       mean <- alpha * mean + (1 - alpha) * x
//       var  <- alpha * var + (1 - alpha) * (x - mean)^2     (with the new mean)
//     where x is the threshold after a spike and g otherwise (no update at all after
//     a spike under skip_update_on_spike).
//
// Where this differs from the reference code, and why:
//   - max_grad_norm defaults to infinity (no fixed cap); the reference's default is 1.0.
//   - A NaN or infinite g is never recorded nor folded into mean/var (the reference
//     would poison them for good): the step is clipped exactly as
//     clip_by_global_norm(group, max_grad_norm) would under on_nonfinite, and the
//     warm-up waits for warmup_steps finite norms.
//   - The scale is the core coefficient threshold / (g + eps), clamped to 1, with
//     the eps of these options; the reference scales by threshold / (g + 1e-6) only
//     when g > threshold. The two differ only for g within eps of the threshold.
//   - warmup_steps = 0 behaves as 1, as in the reference: the statistics need a norm.
//   - The standard deviation is kept, not the variance: the square of a spread above
//     ~1e154 overflows, after which the reference never sees a spike again. Where
//     var fits in a double the update is the reference's; beyond, the same with
//     hypot / scaled sums.
//   - A spike's threshold beyond double's range (a large clip_factor) is folded
//     into mean/var as DBL_MAX, and a mean or std whose update rounds past DBL_MAX
//     is the larger of its two inputs (the reference would turn them inf or NaN).
//   - norm_type may be any p; the reference uses 2.
#ifndef GRADCLIP_ADAPTIVE_ZCLIP_HPP
#define GRADCLIP_ADAPTIVE_ZCLIP_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../clip_norm.hpp"
#include "../detail/float_bits.hpp"
#include "../detail/state_io.hpp"
#include "../detail/validate.hpp"

namespace gradclip {

enum class zclip_mode {
  zscore,     // the paper's rule: adaptive threshold mean + z_thresh^2 * std / z ("adaptive_scaling")
  mean,       // clip a spike to the running mean (the reference's clip_option "mean")
  percentile  // clip anything above mean + z_thresh * std to that bound (the reference's mode "percentile")
};

// The clip_options core (norm_type; eps, added to std in z and to the norm in the
// clip coefficient; on_nonfinite), and ZClip's own.
struct zclip_options : clip_options {
  double alpha = 0.97;         // EMA smoothing of mean and variance, in [0, 1)
  double z_thresh = 2.5;       // z-score above which a norm is a spike, > 0
  std::int64_t warmup_steps = 25;  // finite norms recorded before the statistics start, >= 0
  double max_grad_norm = std::numeric_limits<double>::infinity();  // fixed cap: alone during
                                                                   // warm-up, an upper bound after
  double clip_factor = 1.0;    // multiplies the zscore-mode threshold, > 0
  zclip_mode mode = zclip_mode::zscore;
  bool skip_update_on_spike = false;  // leave mean/var unchanged after a spike
};

namespace detail {

inline void check_zclip_options(const zclip_options& o) {
  const auto fail = [](const std::string& what) { throw std::invalid_argument("gradclip::zclip: " + what); };
  if (!(o.alpha >= 0.0 && o.alpha < 1.0)) fail("alpha must be in [0, 1), got " + number_text(o.alpha));
  if (!(o.z_thresh > 0.0) || !is_finite(o.z_thresh)) fail("z_thresh must be finite and > 0, got " + number_text(o.z_thresh));
  if (o.warmup_steps < 0) fail("warmup_steps must be >= 0, got " + std::to_string(o.warmup_steps));
  if (!(o.clip_factor > 0.0) || !is_finite(o.clip_factor)) {
    fail("clip_factor must be finite and > 0, got " + number_text(o.clip_factor));
  }
  if (o.mode != zclip_mode::zscore && o.mode != zclip_mode::mean && o.mode != zclip_mode::percentile) {
    fail("unknown mode");
  }
  check_max_norm(o.max_grad_norm);
  check_options(o);
}

// ZClip's threshold for a finite norm g given the statistics; spike says whether
// the norm is an outlier (and the threshold applies). Written as the reference
// computes it, so the rounding is the same.
struct zclip_threshold {
  double value;
  bool spike;
};

inline zclip_threshold zclip_rule(double g, double mean, double std_dev, const zclip_options& o) noexcept {
  if (o.mode == zclip_mode::percentile) {
    const double bound = mean + o.z_thresh * std_dev;
    return {bound, g > bound};
  }
  // z is NaN only for g == mean with std + eps == 0: no spike.
  const double z = (g - mean) / (std_dev + o.eps);
  if (!(z > o.z_thresh)) return {0.0, false};
  if (o.mode == zclip_mode::mean) return {mean, true};
  const double eta = z / o.z_thresh;
  return {(mean + (o.z_thresh * std_dev) / eta) * o.clip_factor, true};
}

}  // namespace detail

class zclip {
 public:
  // Throws std::invalid_argument for an option out of range (see zclip_options).
  explicit zclip(const zclip_options& options = {}) : options_(options) { detail::check_zclip_options(options); }

  // Measures the group's norm, clips it by ZClip's rule and updates the statistics.
  // Returns the norm before clipping and the factor applied. Under
  // nonfinite::error a NaN or infinite norm throws nonfinite_error with the group
  // and this clipper unchanged.
  template <class Group>
  clip_result operator()(Group&& group) {
    static_assert(is_group_v<Group> || is_buffer_v<Group>,
                  "gradclip::zclip: not a group of buffers (see gradclip/buffer.hpp)");
    const double total = detail::total_norm(group, detail::spec_of(options_));
    return apply(group, total);
  }

  // The same for a total norm computed elsewhere (another pass, other ranks: every
  // rank then takes the same decision and keeps the same statistics).
  // options().norm_type is not used. Throws std::invalid_argument for a negative
  // total_norm.
  template <class Group>
  clip_result with_norm(Group&& group, double total_norm) {
    static_assert(is_group_v<Group> || is_buffer_v<Group>,
                  "gradclip::zclip::with_norm: not a group of buffers (see gradclip/buffer.hpp)");
    if (!detail::is_nan(total_norm) && total_norm < 0.0) {
      throw std::invalid_argument("gradclip::zclip: total_norm must be >= 0, got " + detail::number_text(total_norm));
    }
    return apply(group, total_norm);
  }

  const zclip_options& options() const noexcept { return options_; }
  // Calls completed (finite norm or not).
  std::uint64_t step() const noexcept { return step_; }
  // Whether the warm-up is over and mean/variance are set.
  bool warmed_up() const noexcept { return warmed_up_; }
  // Finite norms recorded so far in the warm-up (0 once it is over).
  std::size_t warmup_count() const noexcept { return warmup_.size(); }
  // The running statistics; NaN during the warm-up. The standard deviation is what
  // is kept (it is finite for any finite norms); variance() is its square, inf once
  // the norms' spread passes ~1e154.
  double mean() const noexcept { return warmed_up_ ? mean_ : nan(); }
  double stddev() const noexcept { return warmed_up_ ? std_ : nan(); }
  double variance() const noexcept { return warmed_up_ ? std_ * std_ : nan(); }

  void save(std::ostream& out) const {
    detail::state_writer w(kind, version);
    w.put_double(options_.alpha);
    w.put_double(options_.z_thresh);
    w.put_u64(static_cast<std::uint64_t>(options_.warmup_steps));
    w.put_double(options_.eps);
    w.put_double(options_.max_grad_norm);
    w.put_double(options_.clip_factor);
    w.put_u64(static_cast<std::uint64_t>(options_.mode));
    w.put_bool(options_.skip_update_on_spike);
    w.put_double(options_.norm_type);
    w.put_u64(static_cast<std::uint64_t>(options_.on_nonfinite));
    w.put_u64(step_);
    w.put_bool(warmed_up_);
    w.put_double(mean_);
    w.put_double(std_);
    w.put_doubles(warmup_);
    w.write(out);
  }

  // Replaces this clipper, options included, with a saved one; on any error throws
  // gradclip::state_error and leaves it unchanged. Reads this version's records and
  // version 1's (which stored the variance).
  void load(std::istream& in) {
    detail::state_reader r(in, kind, 1, version);
    zclip_options o;
    o.alpha = r.get_double();
    o.z_thresh = r.get_double();
    const std::uint64_t warmup_steps = r.get_u64();
    o.eps = r.get_double();
    o.max_grad_norm = r.get_double();
    o.clip_factor = r.get_double();
    const std::uint64_t mode = r.get_u64();
    o.skip_update_on_spike = r.get_bool();
    o.norm_type = r.get_double();
    const std::uint64_t policy = r.get_u64();
    if (warmup_steps > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) || mode > 2 ||
        policy > 2) {
      r.fail("inconsistent options");
    }
    o.warmup_steps = static_cast<std::int64_t>(warmup_steps);
    o.mode = static_cast<zclip_mode>(mode);
    o.on_nonfinite = static_cast<nonfinite>(policy);
    try {
      detail::check_zclip_options(o);
    } catch (const std::invalid_argument& e) {
      r.fail(std::string("invalid options (") + e.what() + ")");
    }
    zclip s(o);
    s.step_ = r.get_u64();
    s.warmed_up_ = r.get_bool();
    s.mean_ = r.get_double();
    const double spread = r.get_double();  // version 1: the variance; since 2: the standard deviation
    s.warmup_ = r.get_doubles();
    r.finish();
    const bool spread_ok = detail::is_finite(spread) && spread >= 0.0;
    s.std_ = spread_ok && r.version() == 1 ? std::sqrt(spread) : spread;
    const bool consistent =
        s.warmed_up_ ? (s.warmup_.empty() && detail::is_finite(s.mean_) && s.mean_ >= 0.0 && spread_ok)
                     : (s.warmup_.size() < s.warmup_target() && s.mean_ == 0.0 && spread == 0.0);
    bool norms_ok = s.warmup_.size() <= s.step_;
    for (double x : s.warmup_) norms_ok = norms_ok && detail::is_finite(x) && x >= 0.0;
    if (!consistent || !norms_ok) r.fail("inconsistent fields");
    *this = std::move(s);
  }

 private:
  static constexpr const char* kind = "zclip";
  // Version 2 keeps the standard deviation (version 1 the variance, which overflows
  // for norms above ~1e154).
  static constexpr std::uint32_t version = 2;
  static double nan() noexcept { return std::numeric_limits<double>::quiet_NaN(); }

  std::size_t warmup_target() const noexcept {
    return options_.warmup_steps > 1 ? static_cast<std::size_t>(options_.warmup_steps) : 1;
  }

  template <class Group>
  clip_result apply(Group&& group, double g) {
    const clip_options& core = options_;
    const double cap = options_.max_grad_norm;
    if (!detail::is_finite(g) || !warmed_up_) {
      const bool records = detail::is_finite(g);
      // Room first, so that nothing can throw once the data is written.
      if (records && warmup_.size() == warmup_.capacity()) {
        warmup_.reserve(std::min(warmup_target(), std::max<std::size_t>(16, 2 * warmup_.capacity())));
      }
      // Throws (under nonfinite::error) before anything changes.
      const clip_result r = detail::clip_given_norm(group, cap, g, core);
      if (records) record(g);
      ++step_;
      return r;
    }
    const detail::zclip_threshold t = detail::zclip_rule(g, mean_, std_, options_);
    const double limit = t.spike && t.value < cap ? t.value : cap;
    const clip_result r = detail::clip_given_norm(group, limit, g, core);
    // A threshold past double's range (a large clip_factor) is folded as the
    // largest double: the statistics stay finite and the state saves and loads.
    if (!(t.spike && options_.skip_update_on_spike)) {
      update(t.spike ? std::min(t.value, std::numeric_limits<double>::max()) : g);
    }
    ++step_;
    return r;
  }

  void record(double g) noexcept {
    warmup_.push_back(g);  // within the capacity reserved by apply
    if (warmup_.size() < warmup_target()) return;
    // As the reference: plain sums in order, population variance about the mean;
    // where a sum overflows (norms near DBL_MAX, or spread beyond ~1e154) the same
    // with every term scaled, so the statistics stay finite.
    const double n = static_cast<double>(warmup_.size());
    double sum = 0.0;
    for (double x : warmup_) sum += x;
    if (!detail::is_finite(sum)) {
      sum = 0.0;
      for (double x : warmup_) sum += x / n;
      mean_ = sum;
    } else {
      mean_ = sum / n;
    }
    double squares = 0.0;
    for (double x : warmup_) squares += (x - mean_) * (x - mean_);
    if (detail::is_finite(squares)) {
      std_ = std::sqrt(squares / n);
    } else {
      double largest = 0.0;
      for (double x : warmup_) largest = std::max(largest, std::fabs(x - mean_));
      squares = 0.0;
      for (double x : warmup_) squares += ((x - mean_) / largest) * ((x - mean_) / largest);
      std_ = largest * std::sqrt(squares / n);
    }
    warmed_up_ = true;
    std::vector<double>().swap(warmup_);
  }

  // x finite and >= 0. Both statistics are convex combinations, so each is bounded
  // by the larger of its two inputs: where the rounding of the reference's form
  // steps past DBL_MAX (inputs near it), that bound is the result.
  void update(double x) noexcept {
    const double mean = options_.alpha * mean_ + (1.0 - options_.alpha) * x;
    mean_ = detail::is_finite(mean) ? mean : std::max(mean_, x);
    const double d = x - mean_;
    const double var = options_.alpha * (std_ * std_) + (1.0 - options_.alpha) * (d * d);
    // The same without squaring where the variance is beyond double's range.
    const double spread = detail::is_finite(var)
                              ? std::sqrt(var)
                              : std::hypot(std::sqrt(options_.alpha) * std_, std::sqrt(1.0 - options_.alpha) * d);
    std_ = detail::is_finite(spread) ? spread : std::max(std_, std::fabs(d));
  }

  zclip_options options_;
  std::uint64_t step_ = 0;
  bool warmed_up_ = false;
  double mean_ = 0.0, std_ = 0.0;
  std::vector<double> warmup_;  // the finite norms of the warm-up so far
};

}  // namespace gradclip

#endif  // GRADCLIP_ADAPTIVE_ZCLIP_HPP
