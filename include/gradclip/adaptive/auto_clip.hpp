// gradclip: AutoClip, a clipping threshold that follows the history of gradient norms.
//
// P. Seetharaman, G. Wichern, B. Pardo, J. Le Roux, "AutoClip: Adaptive Gradient
// Clipping for Source Separation Networks", IEEE MLSP 2020. Each step, as the
// authors' code does:
//   total_norm = ||g||;  history.append(total_norm)
//   threshold  = numpy.percentile(history, percentile)     (linear interpolation)
//   clip_by_global_norm(g, max_norm = threshold)           (PyTorch's coefficient, eps included)
// The paper keeps the whole history and recommends percentile = 10.
//
//   gradclip::auto_clip clip{10};        ...   auto r = clip(grads);
//
// Options beyond the paper: a window (the percentile of the last W norms only) and
// a streaming mode (the P^2 estimate, Jain & Chlamtac 1985: O(1) memory for very
// long runs; exact for the first five norms and for percentiles 0 and 100).
//
// Non-finite norms: a NaN or infinite norm is never added to the history (one NaN
// would make every later percentile NaN, as it does in the authors' code). The
// step is clipped under options.on_nonfinite with the threshold of the history so
// far (0 when it is empty): propagate behaves as PyTorch with a finite max_norm
// (coefficient NaN for a NaN norm, 0 for an inf norm), error throws
// nonfinite_error and changes nothing (neither the data nor the clipper), skip
// leaves the data alone and returns clipped == false.
#ifndef GRADCLIP_ADAPTIVE_AUTO_CLIP_HPP
#define GRADCLIP_ADAPTIVE_AUTO_CLIP_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <istream>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../buffer.hpp"
#include "../clip_norm.hpp"
#include "../detail/float_bits.hpp"
#include "../detail/p2_quantile.hpp"
#include "../detail/state_io.hpp"
#include "../detail/validate.hpp"

namespace gradclip {

// The clip_options fields (norm_type 2 and eps 1e-6 as the authors' PyTorch
// clip_grad_norm_ call; on_nonfinite), plus where the percentile is taken:
//   gradclip::auto_clip clip{10, {{2.0, 1e-6, gradclip::nonfinite::skip}, 1000}};
struct auto_clip_options : clip_options {
  static constexpr std::size_t unbounded = std::numeric_limits<std::size_t>::max();

  std::size_t window = unbounded;  // percentile of the last `window` finite norms; unbounded: all (the paper)
  bool streaming = false;          // P^2 estimate instead of the stored history; needs window == unbounded
};

class auto_clip {
 public:
  // percentile in [0, 100]. Throws std::invalid_argument for a bad percentile,
  // norm_type or eps, window == 0, or streaming with a bounded window.
  explicit auto_clip(double percentile = 10.0, const auto_clip_options& options = {})
      : percentile_(percentile), options_(options), p2_(percentile / 100.0) {
    check(percentile, options);
  }

  // Measures the group, adds its norm to the history and clips it to the
  // percentile of the history. Nothing is modified when it throws.
  template <class Group>
  clip_result operator()(Group&& group) {
    static_assert(is_group_v<Group> || is_buffer_v<Group>,
                  "gradclip::auto_clip: not a group of buffers (see gradclip/buffer.hpp)");
    const double total = detail::total_norm(group, detail::spec_of(options_));
    return step(group, total);
  }

  // The same with a total norm computed elsewhere (e.g. all-reduced across ranks);
  // options.norm_type is not used. Throws std::invalid_argument for total_norm < 0.
  template <class Group>
  clip_result operator()(Group&& group, double total_norm) {
    static_assert(is_group_v<Group> || is_buffer_v<Group>,
                  "gradclip::auto_clip: not a group of buffers (see gradclip/buffer.hpp)");
    if (!detail::is_nan(total_norm) && total_norm < 0.0) {
      throw std::invalid_argument("gradclip::auto_clip: total_norm must be >= 0, got " +
                                  detail::number_text(total_norm));
    }
    return step(group, total_norm);
  }

  double percentile() const noexcept { return percentile_; }
  const auto_clip_options& options() const noexcept { return options_; }
  // The max_norm used by the last call; NaN before the first.
  double threshold() const noexcept { return threshold_; }
  std::uint64_t count() const noexcept { return count_; }  // calls, non-finite ones included
  std::uint64_t nonfinite_count() const noexcept { return count_ - finite_; }
  // How many norms the percentile is taken over now.
  std::size_t history_size() const noexcept {
    if (options_.streaming) return static_cast<std::size_t>(finite_);
    return windowed() ? ring_.size() : lower_.size() + upper_.size();
  }

  // Saves the configuration and the history (or the P^2 markers).
  void save(std::ostream& out) const {
    detail::state_writer w(kind, version);
    w.put_double(percentile_);
    w.put_double(options_.norm_type);
    w.put_double(options_.eps);
    w.put_u64(static_cast<std::uint64_t>(options_.on_nonfinite));
    w.put_u64(windowed() ? static_cast<std::uint64_t>(options_.window) : unbounded_u64);
    w.put_bool(options_.streaming);
    w.put_u64(count_);
    w.put_u64(finite_);
    w.put_double(threshold_);
    w.put_u64(next_);
    if (windowed()) {
      w.put_doubles(ring_);
    } else {
      std::vector<double> all(lower_);
      all.insert(all.end(), upper_.begin(), upper_.end());
      std::sort(all.begin(), all.end());
      w.put_doubles(all);
    }
    for (const double* a : {p2_.heights(), p2_.positions(), p2_.desired()}) {
      for (int j = 0; j < 5; ++j) w.put_double(a[j]);
    }
    w.write(out);
  }

  // Replaces the configuration and the state with saved ones; on any error throws
  // gradclip::state_error and leaves this object unchanged.
  void load(std::istream& in) {
    detail::state_reader r(in, kind, version);
    const double percentile = r.get_double();
    auto_clip_options o;
    o.norm_type = r.get_double();
    o.eps = r.get_double();
    const std::uint64_t policy = r.get_u64();
    const std::uint64_t window = r.get_u64();
    o.streaming = r.get_bool();
    const std::uint64_t count = r.get_u64();
    const std::uint64_t finite = r.get_u64();
    const double threshold = r.get_double();
    const std::uint64_t next = r.get_u64();
    std::vector<double> history = r.get_doubles();
    double p2[3][5];
    for (auto& a : p2)
      for (double& x : a) x = r.get_double();
    r.finish();

    if (policy > static_cast<std::uint64_t>(nonfinite::skip)) r.fail("unknown non-finite policy");
    o.on_nonfinite = static_cast<nonfinite>(policy);
    // A bounded window is below SIZE_MAX (that value means unbounded).
    if (window == 0 || (window != unbounded_u64 && window >= std::numeric_limits<std::size_t>::max())) {
      r.fail("bad window");
    }
    o.window = window == unbounded_u64 ? auto_clip_options::unbounded : static_cast<std::size_t>(window);
    try {
      check(percentile, o);
    } catch (const std::invalid_argument& e) {
      r.fail(e.what());
    }
    auto_clip s(percentile, o);
    if (finite > count) r.fail("more finite norms than steps");
    if (count == 0 ? !detail::is_nan(threshold) : !(detail::is_finite(threshold) && threshold >= 0.0)) {
      r.fail("bad threshold");
    }
    for (double x : history) {
      // Norms are stored finite and non-negative, zero as +0.
      if (!detail::is_finite(x) || (detail::bits_of(x) >> 63) != 0) r.fail("bad norm in the history");
    }
    s.count_ = count;
    s.finite_ = finite;
    s.threshold_ = threshold;
    if (o.streaming) {
      if (!history.empty() || next != 0) r.fail("history in a streaming state");
      if (!s.p2_.restore(finite, p2[0], p2[1], p2[2])) r.fail("bad P^2 markers");
    } else if (s.windowed()) {
      const std::uint64_t expected = std::min<std::uint64_t>(finite, window);
      if (history.size() != expected || next >= window || (expected < window && next != expected)) {
        r.fail("inconsistent window");
      }
      s.ring_ = std::move(history);
      s.next_ = static_cast<std::size_t>(next);
      s.sorted_ = s.ring_;
      std::sort(s.sorted_.begin(), s.sorted_.end());
    } else {
      if (history.size() != finite || next != 0 || !std::is_sorted(history.begin(), history.end())) {
        r.fail("inconsistent history");
      }
      // The lowest norms form the max-heap, the rest the min-heap (see insert_all).
      const std::size_t low = s.lower_target(history.size());
      s.lower_.assign(history.begin(), history.begin() + static_cast<std::ptrdiff_t>(low));
      s.upper_.assign(history.begin() + static_cast<std::ptrdiff_t>(low), history.end());
      std::make_heap(s.lower_.begin(), s.lower_.end());
      std::make_heap(s.upper_.begin(), s.upper_.end(), std::greater<>());
    }
    *this = std::move(s);
  }

 private:
  static constexpr const char* kind = "auto_clip";
  static constexpr std::uint32_t version = 1;
  static constexpr std::uint64_t unbounded_u64 = std::numeric_limits<std::uint64_t>::max();

  static void check(double percentile, const auto_clip_options& o) {
    if (detail::is_nan(percentile) || !(percentile >= 0.0 && percentile <= 100.0)) {
      throw std::invalid_argument("gradclip::auto_clip: percentile must be in [0, 100], got " +
                                  detail::number_text(percentile));
    }
    detail::check_options(o);
    if (o.window == 0) throw std::invalid_argument("gradclip::auto_clip: window must be > 0");
    if (o.streaming && o.window != auto_clip_options::unbounded) {
      throw std::invalid_argument("gradclip::auto_clip: streaming keeps no history, so it takes no window");
    }
  }

  bool windowed() const noexcept { return options_.window != auto_clip_options::unbounded; }
  double q() const noexcept { return percentile_ / 100.0; }  // as numpy.percentile divides

  template <class Group>
  clip_result step(Group& group, double total) {
    if (!detail::is_finite(total)) {
      // Not recorded; decide() throws under nonfinite::error before anything changes.
      const double t = history_size() == 0 ? 0.0 : current();
      const clip_result r = detail::clip_given_norm(group, t, total, options_);
      ++count_;
      threshold_ = t;
      return r;
    }
    add(total == 0.0 ? 0.0 : total);  // one zero, +0, so ties sort the same after a reload
    const double t = current();
    ++count_;
    ++finite_;
    threshold_ = t;
    return detail::clip_given_norm(group, t, total, options_);  // a finite norm: cannot throw
  }

  // Geometric growth, done before any change: the updates below cannot throw.
  static void make_room(std::vector<double>& v, std::size_t n) {
    if (v.capacity() < n) v.reserve(std::max(n, 2 * v.capacity()));
  }

  // numpy's lower neighbour floor((n - 1) q), clamped to n - 1, plus one: how many
  // of the n smallest norms the max-heap holds, so its top and the min-heap's top
  // are the two values numpy interpolates between.
  std::size_t lower_target(std::size_t n) const noexcept {
    if (n == 0) return 0;
    const double index = static_cast<double>(n - 1) * q();
    if (index >= static_cast<double>(n - 1)) return n;
    return static_cast<std::size_t>(std::floor(index)) + 1;
  }

  void add(double x) {
    if (options_.streaming) {
      p2_.add(x);
    } else if (windowed()) {
      add_windowed(x);
    } else {
      insert_all(x);
    }
  }

  // The whole history as two heaps: O(log n) per step instead of re-sorting.
  void insert_all(double x) {
    const std::size_t n = lower_.size() + upper_.size() + 1;
    const std::size_t low = lower_target(n);
    make_room(lower_, std::max(lower_.size() + 1, low));
    make_room(upper_, std::max(upper_.size() + 1, n - low));
    if (!lower_.empty() && x < lower_.front()) {
      lower_.push_back(x);
      std::push_heap(lower_.begin(), lower_.end());
    } else {
      upper_.push_back(x);
      std::push_heap(upper_.begin(), upper_.end(), std::greater<>());
    }
    while (lower_.size() > low) {
      std::pop_heap(lower_.begin(), lower_.end());
      upper_.push_back(lower_.back());
      lower_.pop_back();
      std::push_heap(upper_.begin(), upper_.end(), std::greater<>());
    }
    while (lower_.size() < low) {
      std::pop_heap(upper_.begin(), upper_.end(), std::greater<>());
      lower_.push_back(upper_.back());
      upper_.pop_back();
      std::push_heap(lower_.begin(), lower_.end());
    }
  }

  // The last `window` norms in arrival order (ring_) and sorted (sorted_).
  void add_windowed(double x) {
    if (ring_.size() < options_.window) {
      make_room(ring_, ring_.size() + 1);
      make_room(sorted_, sorted_.size() + 1);
      ring_.push_back(x);
      next_ = ring_.size() == options_.window ? 0 : ring_.size();
    } else {
      const double old = ring_[next_];
      sorted_.erase(std::lower_bound(sorted_.begin(), sorted_.end(), old));
      ring_[next_] = x;
      next_ = next_ + 1 == options_.window ? 0 : next_ + 1;
    }
    sorted_.insert(std::upper_bound(sorted_.begin(), sorted_.end(), x), x);
  }

  // The percentile of the current history (which is not empty).
  double current() const noexcept {
    if (options_.streaming) return p2_.estimate();
    if (windowed()) return detail::linear_quantile(sorted_.data(), sorted_.size(), q());
    if (upper_.empty()) return lower_.front();  // index n - 1: the maximum
    // The heaps' tops are the neighbours linear_quantile would pick.
    const double index = static_cast<double>(lower_.size() + upper_.size() - 1) * q();
    return detail::numpy_lerp(lower_.front(), upper_.front(), index - std::floor(index));
  }

  double percentile_;
  auto_clip_options options_;
  std::uint64_t count_ = 0, finite_ = 0;
  double threshold_ = std::numeric_limits<double>::quiet_NaN();
  // Unbounded exact history: the lowest lower_target(n) norms in a max-heap, the rest in a min-heap.
  std::vector<double> lower_, upper_;
  // Windowed history.
  std::vector<double> ring_, sorted_;
  std::size_t next_ = 0;
  // Streaming.
  detail::p2_quantile p2_;
};

}  // namespace gradclip

#endif  // GRADCLIP_ADAPTIVE_AUTO_CLIP_HPP
