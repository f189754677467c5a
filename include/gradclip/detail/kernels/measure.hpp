// gradclip kernels, stage 1: measure. Segments in, partial norms out: for a group
// (combined in group order, optionally with a mask of the buffers counted, and
// each buffer's own from the same pass when asked), and per unit of a matrix
// (measure_units).
//
// Summation: a run is cut into blocks of block_size elements; each block is summed
// in lane_count double lanes (arch/), the lanes are reduced in a fixed tree, block
// sums are added with Neumaier compensation within a chunk, and chunk sums likewise
// in chunk order (chunks may run on threads, parallel.hpp). Runs shorter than a
// block, such as the many small buffers of a group, are summed in lanes of their
// own, folded to one vector by the first steps of the lanes' tree (target.hpp)
// and added to one shared vector (sum_accumulator): no per-buffer reduction, and
// a buffer's own sum is only the rest of its tree. Every rounding is fixed
// by the data alone: the same input gives the same bits on every call, for any
// alignment and any thread count.
//
// Range, written once (checked / rescued): float, half and bfloat16 are squared in
// double, which cannot overflow or underflow for any finite input. For double input
// (and |x|^p with general p) the fast sum is checked and, only when it may have
// overflowed or lost precision to underflow, the segment is summed again with every
// element scaled by a power of two chosen from max |x|. The fast result is handed
// to the check, never recomputed: a segment that needs rescue is read three times
// (fast, max |x|, scaled), and a group's fast pass is followed by max |x| and the
// scaled pass of its range-checked buffers only.
//
// Non-finite data shows in the same pass: an infinite or NaN element makes the sum
// infinite or NaN, and max |x| (by bits) tells which. first_nonfinite, which the
// error policy uses to name a buffer, is the same max over the bit patterns.
#ifndef GRADCLIP_DETAIL_KERNELS_MEASURE_HPP
#define GRADCLIP_DETAIL_KERNELS_MEASURE_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../element.hpp"
#include "../float_bits.hpp"
#include "../view.hpp"
#include "arch/select.hpp"
#include "across.hpp"
#include "parallel.hpp"
#include "partials.hpp"
#include "segments.hpp"

namespace gradclip::detail::kernels {

inline constexpr std::size_t stage_size = 512;  // staging buffer for 16-bit and strided data
inline constexpr std::size_t float_lanes_block_size = 4 * block_size;
static_assert(chunk_size % float_lanes_block_size == 0 && float_lanes_block_size % float_block == 0);
inline constexpr std::size_t stream_min_bytes = std::size_t{1} << 20;  // runs read with prefetch_ahead

// The terms of a contiguous run into the lanes: |x * scale| for L1, (x * scale)^2
// for L2 (scale a power of two) and (|x| / scale)^p for general p. A divisor for
// general p: the range-safe pass divides by max |x| itself, which may be subnormal
// (its reciprocal would overflow); dividing by 1 in the fast pass is exact.
template <term K, bool Scaled>
struct term_form {
  static constexpr term kind = K;
  static constexpr bool scaled = Scaled;
};

// f(term_form<K, Scaled>{}) for spec's term, L1 or L2 (Scaled: scale is not 1).
template <class F>
GRADCLIP_ALWAYS_INLINE void with_term_form(const norm_spec& spec, double scale, F&& f) noexcept {
  if (spec.kind == norm_kind::l1) {
    scale == 1.0 ? f(term_form<term::abs, false>{}) : f(term_form<term::abs, true>{});
  } else {
    scale == 1.0 ? f(term_form<term::square, false>{}) : f(term_form<term::square, true>{});
  }
}

template <class Compute>
void accumulate_run(double* acc, const Compute* x, std::size_t n, const norm_spec& spec, double scale,
                    bool stream = false) noexcept {
  if (spec.kind == norm_kind::l1 || spec.kind == norm_kind::l2) {
    with_term_form(spec, scale, [&](auto form) {
      using F = decltype(form);
      arch::accumulate<F::kind, F::scaled>(acc, x, n, scale, stream);
    });
    return;
  }
  // No vector pow; the lane layout is kept so the blocking above is shared.
  for (std::size_t i = 0; i < n; ++i) {
    acc[i % lane_count] += std::pow(std::fabs(static_cast<double>(x[i])) / scale, spec.p);
  }
}

// Copies `count` elements at src (stride `stride`), each through convert (decoded
// to the compute type, or kept raw), into a contiguous stage in pieces of at most
// stage_size, calling f(stage, n) for each piece. Stages are whole multiples of
// lane_count, so every element keeps the lane it would have had.
template <class Stage, class T, class Convert, class F>
void for_each_staged(const T* src, std::size_t count, std::ptrdiff_t stride, Convert convert, F&& f) noexcept {
  Stage stage[stage_size];
  for (std::size_t done = 0; done < count;) {
    const std::size_t n = std::min(stage_size, count - done);
    for (std::size_t i = 0; i < n; ++i) stage[i] = convert(src[static_cast<std::ptrdiff_t>(done + i) * stride]);
    f(static_cast<const Stage*>(stage), n);
    done += n;
  }
}

// Whether the terms of T go through float lanes: L1 and L2 norms of float, half
// and bfloat16 data, unless the exact sum was asked for.
template <class T>
constexpr bool in_float_lanes(const norm_spec& spec) noexcept {
  return std::is_same_v<typename element_traits<T>::compute_type, float> && !spec.exact &&
         (spec.kind == norm_kind::l1 || spec.kind == norm_kind::l2);
}

// The float-lane terms (scale 1: the range-safe pass of such data is the exact sum)
// of a contiguous run of float, half or bfloat16, decoded in the lanes.
template <class T>
void accumulate_float_run(double* acc, const T* x, std::size_t n, const norm_spec& spec, bool stream) noexcept {
  spec.kind == norm_kind::l1 ? arch::accumulate_float<term::abs>(acc, x, n, stream)
                             : arch::accumulate_float<term::square>(acc, x, n, stream);
}

// Accumulates the terms of `count` elements at `src` (stride `stride`) into the
// lanes; strided data, and 16-bit data summed in double lanes, go through a stage
// of elements (a function of its own, so the contiguous path does not set up the
// stage's frame).
template <class T>
void accumulate_terms(double* acc, const T* src, std::size_t count, std::ptrdiff_t stride, const norm_spec& spec,
                      double scale, bool stream = false) noexcept {
  using compute = typename element_traits<T>::compute_type;
  if constexpr (std::is_same_v<compute, float>) {
    if (in_float_lanes<T>(spec) && scale == 1.0) {
      if (stride == 1) {
        accumulate_float_run(acc, src, count, spec, stream);
        return;
      }
      for_each_staged<T>(src, count, stride, [](const T& e) { return e; },
                         [&](const T* s, std::size_t n) { accumulate_float_run(acc, s, n, spec, false); });
      return;
    }
  }
  if constexpr (std::is_same_v<T, compute>) {
    if (stride == 1) {
      accumulate_run(acc, src, count, spec, scale, stream);
      return;
    }
  }
  if constexpr (!std::is_same_v<T, compute>) {
    if (stride == 1) {  // contiguous 16-bit data summed in double lanes: decoded in vectors
      compute stage[stage_size];
      for (std::size_t done = 0; done < count; done += stage_size) {
        const std::size_t n = std::min(stage_size, count - done);
        arch::decode(stage, src + done, n);
        accumulate_run(acc, static_cast<const compute*>(stage), n, spec, scale);
      }
      return;
    }
  }
  const auto decode = [](const T& e) { return element_traits<T>::to_compute(e); };
  for_each_staged<compute>(src, count, stride, decode, [&](const compute* s, std::size_t n) {
    accumulate_run(acc, s, n, spec, scale);
  });
}

// Sum of the terms of one run: blocks of lanes, compensated across blocks within
// a chunk and across chunks in order.
template <class T>
double run_sum(const T* x, std::size_t n, std::ptrdiff_t stride, const norm_spec& spec, double scale) noexcept {
  // Larger than a typical L2: most of it comes from farther away.
  const bool stream = n * sizeof(T) > stream_min_bytes;
  // Float lanes reach the double lanes once per float block: the double lanes take
  // four blocks' worth before a reduction (still 8 additions per double lane).
  const std::size_t block = in_float_lanes<T>(spec) && scale == 1.0 ? float_lanes_block_size : block_size;
  auto chunk_sum = [&](std::size_t c) {
    const std::size_t end = std::min(n, (c + 1) * chunk_size);
    compensated_sum sum;
    for (std::size_t b = c * chunk_size; b < end; b += block) {
      double acc[lane_count] = {};
      accumulate_terms(acc, x + static_cast<std::ptrdiff_t>(b) * stride, std::min(block, end - b), stride, spec,
                       scale, stream);
      sum.add(arch::reduce_lanes(acc));
    }
    return sum.value();
  };
  compensated_sum total;
  const bool threaded = use_threads(n);
  for_each_chunk_result(n, threaded, chunk_sum, [&total](double s) { total.add(s); });
  return total.value();
}

// max |x| of a run as a double (NaN if any element is NaN), over the bit patterns:
// exact, so any split into chunks or stages gives the same result.
template <class T>
double magnitude_of_bits(bits_of_width<T> b) noexcept {
  T x;
  std::memcpy(static_cast<void*>(&x), &b, sizeof x);  // T may be Eigen::half, trivially copyable
  return to_double(x);
}

template <class T>
double run_max_abs(const T* x, std::size_t n, std::ptrdiff_t stride) noexcept {
  using bits = bits_of_width<T>;
  bits m = 0;
  if (stride == 1) {
    const bool stream = n * sizeof(T) > stream_min_bytes;
    const auto chunk_max = [&](std::size_t c) {
      const std::size_t begin = c * chunk_size;
      return arch::max_magnitude_bits(x + begin, std::min(chunk_size, n - begin), stream);
    };
    for_each_chunk_result(n, use_threads(n), chunk_max, [&m](bits b) { m = b > m ? b : m; });
  } else {
    for_each_staged<T>(x, n, stride, [](T e) { return e; }, [&m](const T* s, std::size_t k) {
      const bits b = arch::max_magnitude_bits(s, k);
      m = b > m ? b : m;
    });
  }
  return magnitude_of_bits<T>(m);
}

// The larger of two maxima, NaN if either is NaN.
inline double nan_max(double m, double s) noexcept { return is_nan(m) ? m : (is_nan(s) || s > m ? s : m); }

template <class T>
double max_abs(const strided_view<const T>& v) noexcept {
  double m = 0.0;
  for_each_run(v, [&](const T* x, std::size_t n, std::ptrdiff_t stride) { m = nan_max(m, run_max_abs(x, n, stride)); });
  return m;
}

// The sum of one view's terms. Runs shorter than a block share the view's lanes,
// reduced once a block's worth of elements has gone in; longer ones are summed on
// their own (run_sum) and added, in order. value() is the view's sum on its own
// (what its norm uses); a group adds each of its views' terms whole
// (sum_accumulator), so a view's sum is the same bits whether or not it is part of
// a group, and reading it (per-buffer norms) changes nothing.
class view_terms {
 public:
  template <class T>
  void add(const strided_view<const T>& v, const norm_spec& spec, double scale) noexcept {
    for_each_run(v, [&](const T* x, std::size_t n, std::ptrdiff_t stride) {
      if (n >= block_size) {
        runs_.add(run_sum(x, n, stride, spec, scale));
        reduced_ = true;
        return;
      }
      accumulate_terms(lanes_, x, n, stride, spec, scale);
      pending_ += n;
      if (pending_ >= block_size) flush();
    });
  }

  // Added up as a group of this one view would (sum_accumulator): the same bits.
  double value() const noexcept {
    compensated_sum total;
    add_runs(total);
    if (pending_ != 0) {
      double lanes[lane_count];  // reduced in place: the view's lanes stay whole for a group
      std::copy(lanes_, lanes_ + lane_count, lanes);
      total.add(arch::reduce_lanes(lanes));
    }
    return total.value();
  }

 private:
  friend class sum_accumulator;

  // (A flag, not a test of the sum: a NaN sum must reach the total under
  // -ffinite-math-only too.)
  void add_runs(compensated_sum& total) const noexcept {
    if (reduced_) total.add(runs_.value());
  }

  void flush() noexcept {
    runs_.add(arch::reduce_lanes(lanes_));
    reduced_ = true;
    for (double& l : lanes_) l = 0.0;
    pending_ = 0;
  }

  double lanes_[lane_count] = {};
  std::size_t pending_ = 0;  // elements in the lanes
  compensated_sum runs_;     // long runs and flushed lanes
  bool reduced_ = false;     // whether runs_ holds anything
};

// Whether a contiguous run of T, shorter than a block, has a kernel that sums its
// terms in lanes of their own and adds those to a group's lanes in registers
// (arch accumulate_own): the bits view_terms would give, without its round trip
// through memory.
template <class T>
constexpr bool sums_apart(const norm_spec& spec, double scale) noexcept {
  if (in_float_lanes<T>(spec)) return scale == 1.0;
  return std::is_same_v<T, typename element_traits<T>::compute_type> &&
         (spec.kind == norm_kind::l1 || spec.kind == norm_kind::l2);
}

// The sum of the terms of many views, each added whole: the lanes of short views
// are folded (arch add_own), added lane by lane and reduced once a block's worth
// of elements has gone in (the many small buffers of a group cost no reduction
// each); what a view already reduced is added to the compensated total, in order.
// The per-buffer steps are forced inline (config.hpp): in a large translation
// unit GCC stopped inlining them, and the calls and the lanes' trips through
// memory cost more than a small buffer's own work.
class sum_accumulator {
 public:
  void add(const view_terms& t) noexcept {
    t.add_runs(total_);
    if (t.pending_ == 0) return;
    arch::add_folded(lanes_, t.lanes_);
    pending_ += t.pending_;
    if (pending_ >= block_size) flush();
  }

  // Adds a view's terms whole; with Own, returns the view's own sum (view_sum's bits).
  template <bool Own = false, class T>
  GRADCLIP_ALWAYS_INLINE double add(const strided_view<const T>& v, const norm_spec& spec, double scale) noexcept {
    const std::size_t n = v.size();
    if (n == 0) return 0.0;
    if (v.outer_size == 1 && v.inner_stride == 1 && n < block_size && sums_apart<T>(spec, scale)) {
      double own = 0.0;
      with_term_form(spec, scale, [&](auto form) GRADCLIP_INLINE_LAMBDA {
        using F = decltype(form);
        if constexpr (std::is_same_v<typename element_traits<T>::compute_type, float> && !F::scaled) {
          if (in_float_lanes<T>(spec)) {  // (sums_apart: only with scale 1)
            own = arch::accumulate_float_own<F::kind, Own>(lanes_, v.data, n);
            return;
          }
        }
        if constexpr (std::is_same_v<T, typename element_traits<T>::compute_type>) {
          own = arch::accumulate_own<F::kind, F::scaled, Own>(lanes_, v.data, n, scale);
        }
      });
      pending_ += n;
      if (pending_ >= block_size) flush();
      return own;  // compensated_sum{} plus one value: that value
    }
    view_terms t;
    t.add(v, spec, scale);
    add(t);
    return Own ? t.value() : 0.0;
  }

  double finish() noexcept {
    flush();
    return total_.value();
  }

 private:
  // (Inline: called out of line it takes the accumulator's address, and the
  // lanes and counts then go through memory on every buffer.)
  GRADCLIP_ALWAYS_INLINE void flush() noexcept {
    if (pending_ == 0) return;
    total_.add(arch::reduce_folded(lanes_));
    for (double& l : lanes_) l = 0.0;
    pending_ = 0;
  }

  double lanes_[folded_lane_count] = {};
  std::size_t pending_ = 0;
  compensated_sum total_;
};

template <class T>
double view_sum(const strided_view<const T>& v, const norm_spec& spec, double scale) noexcept {
  sum_accumulator sum;
  sum.add(v, spec, scale);
  return sum.finish();
}

// ---- the range protocol ------------------------------------------------------

// Can a fast sum of terms of T overflow or underflow? Yes in float lanes (a square
// past FLT_MAX, squares below FLT_MIN), for double, and for general p; not for
// float, half and bfloat16 summed in double lanes.
template <class T>
constexpr bool range_checked(const norm_spec& spec) noexcept {
  return std::is_same_v<typename element_traits<T>::compute_type, double> || spec.kind == norm_kind::lp ||
         in_float_lanes<T>(spec);
}

// Below n * underflow_floor a fast L2 sum of n terms of T may have lost precision
// to underflow. Double lanes: each term below DBL_MIN was rounded by at most
// 2^-1075, kept below 2^-75 of the sum. Float lanes: each rounding below FLT_MIN
// (one per term) is at most 2^-150, kept below 2^-50 of the sum.
template <class T>
constexpr double underflow_floor(const norm_spec& spec) noexcept {
  return in_float_lanes<T>(spec) ? 0x1p-100 : 0x1p-1000;
}

// A sum of fewer than block_size terms in [block_size * floor, DBL_MAX] passes
// both tests of needs_rescue: one comparison of bit patterns (sums are never
// negative; inf and NaN patterns, of either sign, fall outside). The per-buffer
// check of a group of small buffers, where the full test's conversion and
// product cost as much as the buffer's own sum.
GRADCLIP_ALWAYS_INLINE bool short_sum_in_range(double sum, double floor) noexcept {
  const std::uint64_t lo = bits_of(static_cast<double>(block_size) * floor);
  return bits_of(sum) - lo <= bits_of(std::numeric_limits<double>::max()) - lo;
}

// For a range-checked sum of n terms: could it have overflowed, or lost precision
// to underflow?
GRADCLIP_ALWAYS_INLINE bool needs_rescue(double sum, std::size_t n, const norm_spec& spec, double floor) noexcept {
  if (n < block_size && short_sum_in_range(sum, floor)) return false;
  if (!(sum <= std::numeric_limits<double>::max())) return true;  // inf or NaN: let the rescue tell which
  if (spec.kind == norm_kind::l1) return false;                    // sums of |x| cannot underflow
  return sum < static_cast<double>(n) * floor;
}

// The range-safe partial of a view: for float lanes, the exact sum (double lanes
// hold any float's square); otherwise max |x| and one scaled pass.
template <class T>
norm_partial rescued(const strided_view<const T>& v, const norm_spec& spec) noexcept {
  if (in_float_lanes<T>(spec)) return {1.0, view_sum(v, spec.as_exact(), 1.0)};
  const double m = max_abs(v);
  if (!is_finite(m)) return {1.0, m};  // NaN or inf input (an overflow would have a finite max)
  if (m == 0.0) return {};
  // General p: terms (|x| / max |x|)^p, the largest exactly 1, so the sum lies in
  // [1, n] for any p, however large, and any max |x|, subnormal included. Each
  // term's quotient is rounded once: a relative error of p * 2^-53 in the term,
  // 2^-53 again in the norm once the p-th root is taken.
  if (spec.kind == norm_kind::lp) return {m, view_sum(v, spec, m)};
  // L1, L2: scale by 2^-e with max |x| * 2^-e in [0.5, 1), exactly (a power of
  // two, so every term is the fast pass's term times 2^-pe, rounded the same);
  // e is clamped so 2^-e stays finite.
  const int e = std::clamp(std::ilogb(m) + 1, -1021, 1023);
  return {std::ldexp(1.0, e), view_sum(v, spec, std::ldexp(1.0, -e))};
}

// A partial as a group's combination gives it (norm_accumulator: NaN and inf in
// one form each), so a view measured alone and a group of that one view agree to
// the bit, non-finite data included.
inline norm_partial as_combined(const norm_partial& part, const norm_spec& spec) noexcept {
  norm_accumulator acc(spec);
  acc.add(part);
  return acc.partial();
}

template <class T>
GRADCLIP_NOINLINE norm_partial rescued_combined(const strided_view<const T>& v, const norm_spec& spec) noexcept {
  return as_combined(rescued(v, spec), spec);
}

// The partial of a view whose fast sum is known: the bits measure gives for a
// group of this view alone.
template <class T>
GRADCLIP_ALWAYS_INLINE norm_partial checked(const strided_view<const T>& v, const norm_spec& spec,
                                            double fast) noexcept {
  if (!range_checked<T>(spec) || !needs_rescue(fast, v.size(), spec, underflow_floor<T>(spec))) return {1.0, fast};
  return rescued_combined(v, spec);
}

// ---- the stage ----------------------------------------------------------------

template <class T>
norm_partial measure_view(const strided_view<const T>& v, const norm_spec& spec) noexcept {
  if (v.size() == 0) return {};
  if (spec.kind == norm_kind::linf) return as_combined({1.0, max_abs(v)}, spec);
  return checked(v, spec, view_sum(v, spec, 1.0));
}

struct count_all {
  constexpr bool operator()(std::size_t) const noexcept { return true; }
};

// measure's default: no per-buffer partials wanted.
struct report_none {
  constexpr void operator()(std::size_t, const norm_partial&) const noexcept {}
};

// measure's report as norms, buffer i's into out[i], finished after the pass
// (finish_norms): a p-th root taken in the pass waits on its buffer's sum, and
// those waits cost more than the report itself (10,000 x 100 floats: 1.15 of the
// plain pass's time, against 1.04). Meanwhile out[i] holds the partial's sum
// (scale 1: all but range-safe partials, whose norm is taken at once and
// negated to mark it; sums and norms are never negative).
struct norm_sink {
  double* out;
  norm_spec spec;
  void operator()(std::size_t i, const norm_partial& part) const noexcept {
    out[i] = part.scale == 1.0 || !is_finite(part.sum) ? part.sum : -norm_accumulator::finish(part, spec);
  }
};

// out[i] = norm_accumulator::finish's norm for what norm_sink left there.
inline void finish_norms(double* out, std::size_t n, const norm_spec& spec) noexcept {
  if (spec.kind == norm_kind::l2) {
    arch::sqrt_unmarked(out, n);  // finish's scale * sqrt(sum), scale 1
    return;
  }
  for (std::size_t i = 0; i < n; ++i) out[i] = out[i] < 0.0 ? -out[i] : norm_accumulator::finish({1.0, out[i]}, spec);
}

// The partial of a whole group (or of the buffers i with counted(i)). One fast
// pass sums every buffer into shared lanes; only when a range-checked buffer is
// present and the sum says it may have left double's range are the buffers
// measured one by one, the range-checked ones rescued.
//
// report(i, partial), when given, receives every buffer's own partial (counted or
// not; range-safe, the bits measure_view gives) in group order, from the same read
// of the data: the group's partial is the same bits with or without it. report
// must not throw.
template <class G, class Counted = count_all, class Report = report_none>
norm_partial measure(G&& g, const norm_spec& spec, Counted counted = {}, Report&& report = {}) noexcept {
  constexpr bool reporting = !std::is_same_v<std::decay_t<Report>, report_none>;
  norm_accumulator acc(spec);
  if (spec.kind == norm_kind::linf) {
    for_each_buffer_ahead(g, [&](std::size_t i, const auto& v) {
      if (!reporting && !counted(i)) return;
      const norm_partial part{1.0, max_abs(to_const(v))};
      if (counted(i)) acc.add(part);
      if constexpr (reporting) report(i, as_combined(part, spec));
    });
    return acc.partial();
  }
  sum_accumulator fast;
  std::size_t count = 0;
  bool any_checked = false;
  double floor = 0.0;
  // A copy whose address no call out of the loop takes (they get copies of it):
  // the report's stores cannot alias it, so its fields stay in registers.
  const norm_spec local = spec;
  for_each_buffer_ahead(g, [&](std::size_t i, const auto& v) GRADCLIP_INLINE_LAMBDA {
    if (!counted(i)) {
      if constexpr (reporting) report(i, measure_view(to_const(v), norm_spec(local)));
      return;
    }
    using T = std::remove_const_t<view_element_t<std::decay_t<decltype(v)>>>;
    any_checked = any_checked || range_checked<T>(local);
    floor = std::max(floor, underflow_floor<T>(local));
    count += v.size();
    const double own = fast.add<reporting>(to_const(v), local, 1.0);
    if constexpr (reporting) report(i, checked(to_const(v), local, own));
  });
  const double sum = fast.finish();
  if (!any_checked || !needs_rescue(sum, count, spec, floor)) return {1.0, sum};
  for_each_buffer(g, [&](std::size_t i, const auto& v) {
    if (!counted(i) || v.size() == 0) return;
    using T = std::remove_const_t<view_element_t<std::decay_t<decltype(v)>>>;
    acc.add(range_checked<T>(spec) ? rescued(to_const(v), spec) : norm_partial{1.0, view_sum(to_const(v), spec, 1.0)});
  });
  return acc.partial();
}

// The partials of units [first, first + n) of a layout, n <= across_tile: swept
// across the storage order when the units lie across it, else one unit at a time.
template <class P>
void measure_units(const unit_layout<P>& l, std::size_t first, std::size_t n, const norm_spec& spec,
                   norm_partial* out) noexcept {
  using T = std::remove_const_t<P>;
  if (!l.across()) {
    for (std::size_t i = 0; i < n; ++i) out[i] = measure_view(to_const(l[first + i]), spec);
    return;
  }
  double sums[across_tile];
  const T* base = l.unit(first);
  across_measure(base, n, l.unit_stride, l.length, l.element_stride, spec, sums);
  for (std::size_t u = 0; u < n; ++u) {
    const strided_view<const T> unit = to_const(l[first + u]);
    // The sweep sums in double lanes: checked as an exact sum.
    out[u] = spec.kind == norm_kind::linf ? norm_partial{1.0, sums[u]} : checked(unit, spec.as_exact(), sums[u]);
  }
}

// Index of the first buffer holding a NaN or an infinity, or npos.
inline constexpr std::size_t npos = static_cast<std::size_t>(-1);

template <class G>
std::size_t first_nonfinite(G&& g) noexcept {
  std::size_t found = npos;
  for_each_buffer_ahead(g, [&](std::size_t i, const auto& v) {
    if (found == npos && !is_finite(max_abs(to_const(v)))) found = i;
  });
  return found;
}

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_MEASURE_HPP
