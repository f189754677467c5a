// gradclip: skip the optimizer steps whose loss or gradient norm spikes, judged
// against the statistics of the recent steps (OLMo-core's skip-step rule), or
// whose gradient norm passes a fixed bound; give up after too many in a row.
//
//   gradclip::spike_guard guard;                      // window 128, sigma 6
//   ... loss = forward(); backward(); ...
//   auto r = gradclip::clip_by_global_norm(grads, 1.0);
//   if (guard(loss, r.total_norm)) optimizer.step();  // or guard(loss): the loss alone
//
// The rule is that of allenai/OLMo-core, src/olmo_core/optim/skip_step_optimizer.py
// (SkipStepOptimizer, read at main fa6c5014 of June 2026; the rule as below since
// commit 7633461 of January 2025, which lowered the warm-up from max(20, ...) to
// max(2, ...)). There, each step the train module sets latest_loss (the cross-entropy loss
// of the batch) and, when it clips, latest_grad_norm (the total norm before
// clipping that clip_grad_norm_ returns); each setter appends the value to its list
// and drops the oldest beyond rolling_interval_length + 1. get_step_factor() then
// takes the step while fewer than max(2, rolling_interval_length // 2) losses are
// listed; afterwards it takes torch.std_mean (Bessel-corrected std) of each list
// without its newest value and takes the step when
//     latest_loss - mean <= sigma_factor * std
// and, if any grad norm was ever set, the same holds for latest_grad_norm with its
// own list. Defaults: rolling_interval_length 128, sigma_factor 6. The values of a
// skipped step stay in the lists. Here, with x the loss (or grad norm), mean and
// std those of the last `window` values recorded before it:
//   skip  when  x - mean > sigma * std        (|x - mean| > sigma * std: two_sided)
// Upstream keeps window + 1 values because the newest is the one judged; here a
// value is recorded after its judgement, so the last `window` are kept.
// The comparison is upstream's, without a division, so a zero standard deviation
// is no special case: x == mean is taken (0 > 0 is false), x above the mean skips.
// (0/0 skipped only in the form before OLMo-core commit a14de852, "remove .abs()
// and avoid division by zero", on the branch of PR #43 that introduced the class in
// September 2024; the merged PR already compared as today. That form took a step
// when |x - mean| / std <= sigma, so 0/0 = NaN failed it and skipped. two_sided is
// its sidedness with today's comparison and warm-up; one-sided is current and the
// default.)
//
// Where this differs from upstream, and why:
//   - A NaN or infinite loss, or a NaN or +inf grad norm, skips the step and is
//     never recorded (nor is the other value of that step): upstream appends it,
//     and while it is in the list every comparison is false or NaN, so it skips
//     the next `window` steps too. Non-finite steps do not count toward the warm-up.
//   - A step is judged only when at least 2 values precede it: the standard
//     deviation of one value is undefined (torch returns NaN, so upstream skips
//     every step at that point: with window <= 5 the first judged one, with
//     window 1 every step from the second on). Here those steps are taken, so
//     window 1 never skips on statistics.
//   - The grad norm has its own warm-up: it is judged once max(2, window / 2)
//     norms (this one included, and 2 before it) are recorded. Upstream counts the
//     losses only and judges a stale or missing newest norm when the setter was not
//     called; here guard(loss) judges and records the loss alone. Calling
//     guard(loss, grad_norm) every step gives upstream's rule exactly.
//   - Arithmetic is in double, statistics over the values oldest first, two-pass
//     (mean, then squared deviations); upstream computes in the tensors' dtype
//     (float32 for the loss). Where a sum would overflow (values near DBL_MAX) it
//     is scaled, so no NaN arises; differences beyond DBL_MAX count as an infinite
//     spread (inf > inf is false: taken).
//   - sigma = infinity turns the statistical rule off (upstream's inf * 0 = NaN
//     would skip on a zero spread).
//   - max_grad_norm (not upstream; default infinity, off): skip whenever the grad
//     norm is above it, from the first step, in addition to the statistical rule.
//     With sigma = infinity this is the fixed-threshold form. The value is still
//     recorded, as any skipped step's.
//   - max_consecutive_skips (not upstream, which never gives up): when > 0, the
//     step that would be the (max + 1)-th skipped in a row throws
//     gradclip::spike_streak_error. Like every gradclip call that throws, it
//     changes nothing: its values are not recorded and the counters stay, so
//     calling again with them throws again, and a taken step resets the run.
// A negative (or -inf) grad norm throws std::invalid_argument, before any change.
// The guard never touches gradients; it only decides.
#ifndef GRADCLIP_ADAPTIVE_SPIKE_GUARD_HPP
#define GRADCLIP_ADAPTIVE_SPIKE_GUARD_HPP

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

#include "../errors.hpp"
#include "../detail/float_bits.hpp"
#include "../detail/state_io.hpp"
#include "../detail/validate.hpp"

namespace gradclip {

struct spike_guard_options {
  std::size_t window = 128;  // rolling_interval_length: statistics over the previous `window` values, >= 1
  double sigma = 6.0;        // sigma_factor: > 0; infinity turns the statistical rule off
  bool two_sided = false;    // also skip values more than sigma std *below* the mean
  std::uint64_t max_consecutive_skips = 0;  // 0: never give up; else throw spike_streak_error past that many
  double max_grad_norm = std::numeric_limits<double>::infinity();  // skip any grad norm above it (>= 0)
};

// Why the last step was skipped (or not).
enum class spike_verdict {
  taken,            // no step yet, or the last was taken
  nonfinite,        // a NaN or infinite loss or grad norm
  grad_norm_limit,  // grad norm > max_grad_norm
  loss_spike,       // the loss is more than sigma standard deviations from its mean
  grad_norm_spike   // the grad norm is, and the loss is not
};

inline const char* to_string(spike_verdict v) noexcept {
  switch (v) {
    case spike_verdict::taken: return "a taken step";
    case spike_verdict::nonfinite: return "a non-finite loss or grad norm";
    case spike_verdict::grad_norm_limit: return "a grad norm above max_grad_norm";
    case spike_verdict::loss_spike: return "a loss spike";
    case spike_verdict::grad_norm_spike: return "a grad norm spike";
  }
  return "an unknown verdict";
}

namespace detail {

inline void check_spike_guard_options(const spike_guard_options& o) {
  const auto fail = [](const std::string& what) { throw std::invalid_argument("gradclip::spike_guard: " + what); };
  if (o.window < 1) fail("window must be >= 1, got 0");
  if (is_nan(o.sigma) || !(o.sigma > 0.0)) fail("sigma must be > 0 (or infinity), got " + number_text(o.sigma));
  if (is_nan(o.max_grad_norm) || !(o.max_grad_norm >= 0.0)) {
    fail("max_grad_norm must be >= 0 (or infinity), got " + number_text(o.max_grad_norm));
  }
}

// The recent values of one series, oldest first, in a ring of at most `limit`.
class spike_series {
 public:
  std::size_t size() const noexcept { return data_.size(); }
  double operator[](std::size_t i) const noexcept {  // i-th oldest
    const std::size_t at = start_ + i;
    return data_[at < data_.size() ? at : at - data_.size()];
  }
  // Room for one more value; may throw (std::bad_alloc) and then changes nothing seen.
  void reserve_one(std::size_t limit) {
    if (data_.size() < limit && data_.size() == data_.capacity()) {
      data_.reserve(std::min(limit, std::max<std::size_t>(16, 2 * data_.capacity())));
    }
  }
  void push(double x, std::size_t limit) noexcept {  // after reserve_one(limit)
    if (data_.size() < limit) {
      data_.push_back(x);  // start_ is 0 until the ring is full
    } else {
      data_[start_] = x;
      start_ = start_ + 1 == data_.size() ? 0 : start_ + 1;
    }
  }
  std::vector<double> values() const {
    std::vector<double> v(data_.size());
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = (*this)[i];
    return v;
  }
  void assign(std::vector<double> v) noexcept {
    data_ = std::move(v);
    start_ = 0;
  }

 private:
  std::vector<double> data_;
  std::size_t start_ = 0;
};

struct spike_moments {
  double mean, stddev;  // stddev NaN for fewer than 2 values, mean for none
};

// Mean and Bessel-corrected standard deviation of the newest n values of s.
inline spike_moments spike_moments_of(const spike_series& s, std::size_t n) noexcept {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (n == 0) return {nan, nan};
  const std::size_t first = s.size() - n;
  const double count = static_cast<double>(n);
  double sum = 0.0;
  for (std::size_t i = first; i < s.size(); ++i) sum += s[i];
  double mean = sum / count;
  if (!is_finite(sum)) {  // finite values whose sum overflows
    mean = 0.0;
    for (std::size_t i = first; i < s.size(); ++i) mean += s[i] / count;
  }
  if (n < 2) return {mean, nan};
  double squares = 0.0, largest = 0.0;
  for (std::size_t i = first; i < s.size(); ++i) {
    const double d = s[i] - mean;
    squares += d * d;
    largest = std::max(largest, std::fabs(d));
  }
  if (is_finite(squares)) return {mean, std::sqrt(squares / (count - 1.0))};
  if (is_inf(largest)) return {mean, largest};
  squares = 0.0;
  for (std::size_t i = first; i < s.size(); ++i) {
    const double d = (s[i] - mean) / largest;
    squares += d * d;
  }
  return {mean, largest * std::sqrt(squares / (count - 1.0))};
}

}  // namespace detail

class spike_guard {
 public:
  // Throws std::invalid_argument for an option out of range (see spike_guard_options).
  explicit spike_guard(const spike_guard_options& options = {}) : options_(options) {
    detail::check_spike_guard_options(options);
  }

  // Judges the step by its loss and its total gradient norm (before clipping, e.g.
  // clip_result::total_norm), records both and returns true when the step should
  // be taken. Throws std::invalid_argument for a negative grad_norm and
  // spike_streak_error past max_consecutive_skips, both with the guard unchanged.
  bool operator()(double loss, double grad_norm) {
    if (!detail::is_nan(grad_norm) && grad_norm < 0.0) {
      throw std::invalid_argument("gradclip::spike_guard: grad_norm must be >= 0, got " +
                                  detail::number_text(grad_norm));
    }
    return judge(loss, grad_norm, true);
  }
  // Judges and records the loss alone.
  bool operator()(double loss) { return judge(loss, std::numeric_limits<double>::quiet_NaN(), false); }

  const spike_guard_options& options() const noexcept { return options_; }
  std::uint64_t steps() const noexcept { return steps_; }                        // calls that returned
  std::uint64_t skipped() const noexcept { return skipped_; }                    // of which skipped
  std::uint64_t consecutive_skips() const noexcept { return consecutive_; }      // the current run of skips
  spike_verdict last_verdict() const noexcept { return verdict_; }

  // The statistics the next call is judged against: mean and standard deviation
  // (Bessel-corrected) of the last `window` values recorded, oldest dropped first.
  // The mean is NaN with no value recorded, the deviation with fewer than 2.
  double loss_mean() const noexcept { return recent(losses_).mean; }
  double loss_stddev() const noexcept { return recent(losses_).stddev; }
  double grad_norm_mean() const noexcept { return recent(norms_).mean; }
  double grad_norm_stddev() const noexcept { return recent(norms_).stddev; }
  // Values recorded and kept (the last `window` of each).
  std::size_t loss_count() const noexcept { return losses_.size(); }
  std::size_t grad_norm_count() const noexcept { return norms_.size(); }

  void save(std::ostream& out) const {
    detail::state_writer w(kind, version);
    w.put_u64(options_.window);
    w.put_double(options_.sigma);
    w.put_bool(options_.two_sided);
    w.put_u64(options_.max_consecutive_skips);
    w.put_double(options_.max_grad_norm);
    w.put_u64(steps_);
    w.put_u64(skipped_);
    w.put_u64(consecutive_);
    w.put_u64(static_cast<std::uint64_t>(verdict_));
    w.put_doubles(losses_.values());
    w.put_doubles(norms_.values());
    w.write(out);
  }

  // Replaces this guard, options included, with a saved one; on any error throws
  // gradclip::state_error and leaves it unchanged.
  void load(std::istream& in) {
    detail::state_reader r(in, kind, version);
    spike_guard_options o;
    const std::uint64_t window = r.get_u64();
    o.sigma = r.get_double();
    o.two_sided = r.get_bool();
    o.max_consecutive_skips = r.get_u64();
    o.max_grad_norm = r.get_double();
    o.window = static_cast<std::size_t>(window);
    if (window < 1 || o.window != window) r.fail("invalid options (window)");
    try {
      detail::check_spike_guard_options(o);
    } catch (const std::invalid_argument& e) {
      r.fail(std::string("invalid options (") + e.what() + ")");
    }
    spike_guard s(o);
    s.steps_ = r.get_u64();
    s.skipped_ = r.get_u64();
    s.consecutive_ = r.get_u64();
    const std::uint64_t verdict = r.get_u64();
    std::vector<double> losses = r.get_doubles();
    std::vector<double> norms = r.get_doubles();
    r.finish();
    bool ok = s.skipped_ <= s.steps_ && s.consecutive_ <= s.skipped_ &&
              (o.max_consecutive_skips == 0 || s.consecutive_ <= o.max_consecutive_skips) &&
              verdict <= static_cast<std::uint64_t>(spike_verdict::grad_norm_spike) &&
              (verdict == 0) == (s.consecutive_ == 0) && losses.size() <= s.limit() && norms.size() <= s.limit() &&
              losses.size() <= s.steps_ && norms.size() <= s.steps_;
    for (double x : losses) ok = ok && detail::is_finite(x);
    for (double x : norms) ok = ok && detail::is_finite(x) && x >= 0.0;
    if (!ok) r.fail("inconsistent fields");
    s.verdict_ = static_cast<spike_verdict>(verdict);
    s.losses_.assign(std::move(losses));
    s.norms_.assign(std::move(norms));
    *this = std::move(s);
  }

 private:
  static constexpr const char* kind = "spike_guard";
  static constexpr std::uint32_t version = 1;

  std::size_t limit() const noexcept { return options_.window; }  // values kept per series

  detail::spike_moments recent(const detail::spike_series& s) const noexcept {
    return detail::spike_moments_of(s, std::min(s.size(), options_.window));
  }

  // Whether x, the next value of s, is a spike by the statistical rule.
  bool spike(const detail::spike_series& s, double x) const noexcept {
    if (detail::is_inf(options_.sigma)) return false;
    const std::size_t before = std::min(s.size(), options_.window);
    const std::size_t warmup = std::max<std::size_t>(2, options_.window / 2);
    if (before + 1 < warmup || before < 2) return false;
    const detail::spike_moments m = detail::spike_moments_of(s, before);
    const double d = x - m.mean;
    const double bound = options_.sigma * m.stddev;
    return (options_.two_sided ? std::fabs(d) : d) > bound;
  }

  bool judge(double loss, double grad_norm, bool with_norm) {
    spike_verdict v = spike_verdict::taken;
    const bool finite = detail::is_finite(loss) && (!with_norm || detail::is_finite(grad_norm));
    if (!finite) {
      v = spike_verdict::nonfinite;
    } else if (with_norm && grad_norm > options_.max_grad_norm) {
      v = spike_verdict::grad_norm_limit;
    } else if (spike(losses_, loss)) {
      v = spike_verdict::loss_spike;
    } else if (with_norm && spike(norms_, grad_norm)) {
      v = spike_verdict::grad_norm_spike;
    }
    const bool take = v == spike_verdict::taken;
    const std::uint64_t max = options_.max_consecutive_skips;
    if (!take && max != 0 && consecutive_ >= max) {
      const double norm = with_norm ? grad_norm : std::numeric_limits<double>::quiet_NaN();
      throw spike_streak_error(consecutive_ + 1, max, to_string(v), loss, norm);
    }
    // Room first, so that nothing can throw once the state changes.
    if (finite) {
      losses_.reserve_one(limit());
      if (with_norm) norms_.reserve_one(limit());
      losses_.push(loss, limit());
      if (with_norm) norms_.push(grad_norm, limit());
    }
    ++steps_;
    if (take) {
      consecutive_ = 0;
    } else {
      ++skipped_;
      ++consecutive_;
    }
    verdict_ = v;
    return take;
  }

  spike_guard_options options_;
  std::uint64_t steps_ = 0, skipped_ = 0, consecutive_ = 0;
  spike_verdict verdict_ = spike_verdict::taken;
  detail::spike_series losses_, norms_;  // the last `window` finite values of each
};

}  // namespace gradclip

#endif  // GRADCLIP_ADAPTIVE_SPIKE_GUARD_HPP
