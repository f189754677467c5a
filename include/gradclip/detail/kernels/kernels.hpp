// gradclip kernels: the narrow interface every norm, clip and clamp goes through.
//
//   partial_norm(view, spec)  -> norm_partial  (sum of |x|^p, or max |x|, range-safe)
//   scale(view, c)                              (x *= c, skipped by callers when c == 1)
//   clamp(view, lo, hi)                         (NaN preserved)
//   has_nonfinite(view)                         (NaN or +-inf present)
//   add_scaled(dst, src, a)                     (dst += a * src, element by element)
//
// Everything above this layer calls these; nothing above loops over elements.
//
// Summation: a segment is cut into blocks of block_size elements; each block is
// summed in lane_count double lanes (lanes.hpp), the lanes are reduced in a fixed
// tree, block sums are added with Neumaier compensation within a chunk, and chunk
// sums likewise in chunk order (chunks may run on threads, parallel.hpp). Short
// segments, such as the many small buffers of a group, share one set of lanes
// (sum_accumulator) so they cost no per-buffer reduction. Every rounding is fixed
// by the data alone: the same input gives the same bits on every call, for any
// alignment of the data and any thread count.
//
// Range: float, half and bfloat16 are squared in double, which cannot overflow or
// underflow for any finite input. For double input (and |x|^p with general p) the
// fast pass checks its result and, only when it may have overflowed or lost
// precision to underflow, recomputes with every element scaled by a power of two
// chosen from max |x|, so the partial is exact-range for any finite input.
#ifndef GRADCLIP_DETAIL_KERNELS_KERNELS_HPP
#define GRADCLIP_DETAIL_KERNELS_KERNELS_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../element.hpp"
#include "../float_bits.hpp"
#include "../view.hpp"
#include "lanes.hpp"
#include "parallel.hpp"

namespace gradclip::detail::kernels {

inline constexpr std::size_t stage_size = 512;  // staging buffer for 16-bit and strided data
inline constexpr std::size_t stream_min_bytes = std::size_t{1} << 20;  // segments read with prefetch_ahead

enum class norm_kind { l1, l2, linf, lp };

// Which norm: p = norm_type; kind picks the specialised kernel.
struct norm_spec {
  norm_kind kind;
  double p;

  static norm_spec from(double norm_type) noexcept {
    if (norm_type == 1.0) return {norm_kind::l1, 1.0};
    if (norm_type == 2.0) return {norm_kind::l2, 2.0};
    if (is_inf(norm_type)) return {norm_kind::linf, norm_type};
    return {norm_kind::lp, norm_type};
  }
};

// One buffer's contribution to a norm. For finite p: norm^p = scale^p * sum, where
// scale is 1 unless the range-safe pass was needed; then it is a power of two for
// p = 1 and 2, and max |x| for general p. For L-inf:
// sum holds max |x| and scale is 1. A NaN or infinite sum marks a non-finite input.
struct norm_partial {
  double scale = 1.0;
  double sum = 0.0;
};

// Neumaier's compensated sum. value() of a non-finite sum is that sum: the
// compensation term of an infinity is NaN and must not leak into the result.
struct compensated_sum {
  double sum = 0.0;
  double comp = 0.0;

  void add(double v) noexcept {
    const double t = sum + v;
    if (std::fabs(sum) >= std::fabs(v)) {
      comp += (sum - t) + v;
    } else {
      comp += (v - t) + sum;
    }
    sum = t;
  }
  double value() const noexcept { return is_finite(sum) ? sum + comp : sum; }
};

// The terms of a contiguous run into the lanes: |x * scale| for L1, (x * scale)^2
// for L2 (scale a power of two) and (|x| / scale)^p for general p.
template <class Compute>
void accumulate_run(double* acc, const Compute* x, std::size_t n, const norm_spec& spec, double scale,
                    bool stream = false) noexcept {
  switch (spec.kind) {
    case norm_kind::l1:
      scale == 1.0 ? accumulate<term::abs, false>(acc, x, n, 1.0, stream)
                   : accumulate<term::abs, true>(acc, x, n, scale, stream);
      break;
    case norm_kind::l2:
      scale == 1.0 ? accumulate<term::square, false>(acc, x, n, 1.0, stream)
                   : accumulate<term::square, true>(acc, x, n, scale, stream);
      break;
    default:
      accumulate_pow(acc, x, n, scale, spec.p);
      break;
  }
}

// 16-bit or strided data: decoded into a small contiguous stage. Stages are whole
// multiples of lane_count, so every element keeps the lane it would have had. A
// function of its own, so that the contiguous path (one call per buffer of a
// group) does not set up the stage's stack frame.
template <class Compute, class T>
void accumulate_staged(double* acc, const T* src, std::size_t count, std::ptrdiff_t stride, const norm_spec& spec,
                       double scale) noexcept {
  Compute stage[stage_size];
  for (std::size_t done = 0; done < count;) {
    const std::size_t n = std::min(stage_size, count - done);
    for (std::size_t i = 0; i < n; ++i) {
      stage[i] = element_traits<T>::to_compute(src[static_cast<std::ptrdiff_t>(done + i) * stride]);
    }
    accumulate_run(acc, stage, n, spec, scale);
    done += n;
  }
}

// Accumulates the terms of `count` elements at `src` (stride `stride`) into the
// lanes, reading them as Compute (float or double). The terms are |x * scale| for
// L1, (x * scale)^2 for L2 (scale a power of two) and (|x| / scale)^p for general p.
template <class Compute, class T>
void accumulate_terms(double* acc, const T* src, std::size_t count, std::ptrdiff_t stride, const norm_spec& spec,
                      double scale, bool stream = false) noexcept {
  if constexpr (std::is_same_v<T, Compute>) {
    if (stride == 1) {
      accumulate_run(acc, src, count, spec, scale, stream);
      return;
    }
  }
  accumulate_staged<Compute>(acc, src, count, stride, spec, scale);
}

// Sum of the terms of one segment: blocks of lanes, compensated across blocks
// within a chunk and across chunks in order.
template <class T>
double segment_sum(const T* x, std::size_t n, std::ptrdiff_t stride, const norm_spec& spec, double scale) noexcept {
  using compute = typename element_traits<T>::compute_type;
  // Larger than a typical L2: most of it comes from farther away.
  const bool stream = n * sizeof(T) > stream_min_bytes;
  auto chunk_sum = [&](std::size_t c) {
    const std::size_t end = std::min(n, (c + 1) * chunk_size);
    compensated_sum sum;
    for (std::size_t b = c * chunk_size; b < end; b += block_size) {
      double acc[lane_count] = {};
      accumulate_terms<compute>(acc, x + static_cast<std::ptrdiff_t>(b) * stride, std::min(block_size, end - b),
                                stride, spec, scale, stream);
      sum.add(reduce_lanes(acc));
    }
    return sum.value();
  };
  const std::size_t chunks = (n + chunk_size - 1) / chunk_size;
  if (chunks <= 1) return chunk_sum(0);
  compensated_sum total;
  const bool threaded = use_threads(n);
  // Chunk results held at once (8 KiB on the stack, no allocation): one parallel
  // region covers 1024 chunks = 64 Mi elements.
  constexpr std::size_t round = 1024;
  double sums[round];
  for (std::size_t first = 0; first < chunks; first += round) {
    const std::size_t count = std::min(round, chunks - first);
    for_each_chunk(count, threaded, [&](std::size_t c) { sums[c] = chunk_sum(first + c); });
    for (std::size_t c = 0; c < count; ++c) total.add(sums[c]);
  }
  return total.value();
}

inline double max_abs_value(const float* x, std::size_t n, bool stream = false) noexcept {
  return static_cast<double>(float_from_bits(max_abs_bits(x, n, stream)));
}
inline double max_abs_value(const double* x, std::size_t n, bool stream = false) noexcept {
  return double_from_bits(max_abs_bits(x, n, stream));
}

// The larger of two maxima, NaN if either is NaN.
inline double nan_max(double m, double s) noexcept { return is_nan(m) ? m : (is_nan(s) || s > m ? s : m); }

// max |x| of a long contiguous run, over chunks (on threads when large). The
// maximum is exact, so any split gives the same result; NaN wins.
template <class T>
double contiguous_max_abs(const T* x, std::size_t n) noexcept {
  const bool stream = n * sizeof(T) > stream_min_bytes;
  const std::size_t chunks = (n + chunk_size - 1) / chunk_size;
  if (chunks <= 1 || !use_threads(n)) return max_abs_value(x, n, stream);
  constexpr std::size_t round = 1024;  // chunk results held at once, as in segment_sum
  double maxima[round];
  double m = 0.0;
  for (std::size_t first = 0; first < chunks; first += round) {
    const std::size_t count = std::min(round, chunks - first);
    for_each_chunk(count, true, [&](std::size_t c) {
      const std::size_t begin = (first + c) * chunk_size;
      maxima[c] = max_abs_value(x + begin, std::min(chunk_size, n - begin), stream);
    });
    for (std::size_t c = 0; c < count; ++c) m = nan_max(m, maxima[c]);
  }
  return m;
}

// max |x| of one segment, as a double; NaN if any element is NaN.
template <class T>
double segment_max_abs(const T* x, std::size_t n, std::ptrdiff_t stride) noexcept {
  using compute = typename element_traits<T>::compute_type;
  if constexpr (std::is_same_v<T, compute>) {
    if (stride == 1) return contiguous_max_abs(x, n);
  }
  compute stage[stage_size];
  double m = 0.0;
  for (std::size_t done = 0; done < n;) {
    const std::size_t k = std::min(stage_size, n - done);
    for (std::size_t i = 0; i < k; ++i) {
      stage[i] = element_traits<T>::to_compute(x[static_cast<std::ptrdiff_t>(done + i) * stride]);
    }
    m = nan_max(m, max_abs_value(stage, k));
    if (is_nan(m)) break;
    done += k;
  }
  return m;
}

template <class T, class F>
void for_each_segment(const strided_view<T>& v, F&& f) {
  for (std::size_t k = 0; k < v.outer_size; ++k) f(v.segment(k), v.inner_size, v.inner_stride);
}

template <class T>
double max_abs(const strided_view<const T>& v) noexcept {
  double m = 0.0;
  for_each_segment(v, [&](const T* x, std::size_t n, std::ptrdiff_t stride) {
    m = nan_max(m, segment_max_abs(x, n, stride));
  });
  return m;
}

// Sums the terms of many views. Segments shorter than a block share one set of
// lanes, reduced only once a block's worth of elements has gone in; longer ones
// are summed on their own (segment_sum) and added, in order.
class sum_accumulator {
 public:
  template <class T>
  void add(const strided_view<const T>& v, const norm_spec& spec, double scale) noexcept {
    using compute = typename element_traits<T>::compute_type;
    for_each_segment(v, [&](const T* x, std::size_t n, std::ptrdiff_t stride) {
      if (n >= block_size) {
        total_.add(segment_sum(x, n, stride, spec, scale));
        return;
      }
      accumulate_terms<compute>(lanes_, x, n, stride, spec, scale);
      pending_ += n;
      if (pending_ >= block_size) flush();
    });
  }

  double finish() noexcept {
    if (pending_ != 0) total_.add(reduce_lanes(lanes_));
    pending_ = 0;
    return total_.value();
  }

 private:
  void flush() noexcept {
    if (pending_ == 0) return;
    total_.add(reduce_lanes(lanes_));
    for (double& l : lanes_) l = 0.0;
    pending_ = 0;
  }

  double lanes_[lane_count] = {};
  std::size_t pending_ = 0;
  compensated_sum total_;
};

template <class T>
double view_sum(const strided_view<const T>& v, const norm_spec& spec, double scale) noexcept {
  sum_accumulator sum;
  sum.add(v, spec, scale);
  return sum.finish();
}

// Can a plain sum of terms of T overflow or underflow? Not for float, half and
// bfloat16 squared or taken absolute in double; yes for double, and for general p.
template <class T>
constexpr bool range_checked(const norm_spec& spec) noexcept {
  return std::is_same_v<typename element_traits<T>::compute_type, double> || spec.kind == norm_kind::lp;
}

// For a range-checked sum: could it have overflowed, or lost precision to underflow?
inline bool needs_scaled_pass(double sum, std::size_t n, const norm_spec& spec) noexcept {
  if (!(sum <= std::numeric_limits<double>::max())) return true;  // inf or NaN: let max |x| tell which
  if (spec.kind == norm_kind::l1) return false;                    // sums of |x| cannot underflow
  // Each term that fell below DBL_MIN was rounded by at most 2^-1075; keep that
  // below 2^-75 of the sum.
  return sum < static_cast<double>(n) * 0x1p-1000;
}

template <class T>
norm_partial partial_norm(const strided_view<const T>& v, const norm_spec& spec) noexcept {
  const std::size_t n = v.size();
  if (n == 0) return {};
  if (spec.kind == norm_kind::linf) return {1.0, max_abs(v)};
  const double fast = view_sum(v, spec, 1.0);
  if (!range_checked<T>(spec) || !needs_scaled_pass(fast, n, spec)) return {1.0, fast};
  const double m = max_abs(v);
  if (!is_finite(m)) return {1.0, m};  // NaN or inf input (an overflow would have a finite max)
  if (m == 0.0) return {};
  // General p: terms (|x| / max |x|)^p, the largest exactly 1, so the sum lies in
  // [1, n] for any p, however large, and any max |x|, subnormal included. Each
  // term's quotient is rounded once: a relative error of p * 2^-53 in the term,
  // 2^-53 again in the norm once the p-th root is taken.
  if (spec.kind == norm_kind::lp) return {m, view_sum(v, spec, m)};
  // L1, L2: scale by 2^-e with max |x| * 2^-e in [0.5, 1), exactly (a power of
  // two); e is clamped so 2^-e stays finite.
  const int e = std::clamp(std::ilogb(m) + 1, -1021, 1023);
  return {std::ldexp(1.0, e), view_sum(v, spec, std::ldexp(1.0, -e))};
}

// ---- writes -------------------------------------------------------------------

// Smallest coefficient a float multiply applies with full relative precision:
// below it the float coefficient would be subnormal and the norm bound lost.
inline constexpr double min_float_coefficient = 0x1p-102;

// A coefficient c = factor * tail. tail is 1 except for a double coefficient below
// DBL_MIN: as one double it would be subnormal, with too few bits to keep the norm
// bound, so it is held as factor = c * 2^1022 (full precision) and tail = 2^-1022,
// and double data is multiplied by each in turn (split_quotient makes one).
struct coefficient {
  double factor;
  double tail;

  constexpr coefficient(double f, double t = 1.0) noexcept : factor(f), tail(t) {}  // NOLINT(google-explicit-constructor)

  double value() const noexcept { return factor * tail; }
};

// num / den as a coefficient, exact-range: below DBL_MIN the quotient is taken
// 2^1022 larger (finite: a quotient that small needs num < 4).
inline coefficient split_quotient(double num, double den) noexcept {
  const double q = num / den;
  if (!(q > 0.0 && q < std::numeric_limits<double>::min()) || !is_finite(den)) return {q};
  return {(num * 0x1p1022) / den, 0x1p-1022};
}

template <class T>
void scale_segment(T* x, std::size_t n, std::ptrdiff_t stride, coefficient k) noexcept {
  if constexpr (std::is_same_v<T, double>) {
    if (stride == 1) {
      kernels::scale<double>(x, n, k.factor);
      if (k.tail != 1.0) kernels::scale<double>(x, n, k.tail);
    } else {
      for (std::size_t i = 0; i < n; ++i) x[static_cast<std::ptrdiff_t>(i) * stride] *= k.factor;
      if (k.tail != 1.0) {
        for (std::size_t i = 0; i < n; ++i) x[static_cast<std::ptrdiff_t>(i) * stride] *= k.tail;
      }
    }
  } else if constexpr (std::is_same_v<T, float>) {
    // Below DBL_MIN the product with any float is far below float's range: one
    // double (rounded) is exact enough.
    const double c = k.value();
    const bool wide = !(c >= min_float_coefficient);
    if (stride == 1) {
      wide ? scale_widened(x, n, c) : kernels::scale<float>(x, n, static_cast<float>(c));
    } else {
      const float cf = static_cast<float>(c);
      for (std::size_t i = 0; i < n; ++i) {
        float& e = x[static_cast<std::ptrdiff_t>(i) * stride];
        e = wide ? static_cast<float>(static_cast<double>(e) * c) : e * cf;
      }
    }
  } else {
    // 16-bit: multiply in double and round once (correct rounding of x * c).
    const double c = k.value();
    using traits = element_traits<T>;
    for (std::size_t i = 0; i < n; ++i) {
      T& e = x[static_cast<std::ptrdiff_t>(i) * stride];
      e = traits::from_compute(static_cast<float>(static_cast<double>(traits::to_compute(e)) * c));
    }
  }
}

// Runs f(x, n, stride) over a segment, split into chunks on threads when large.
template <class T, class F>
void write_segment(T* x, std::size_t n, std::ptrdiff_t stride, F&& f) {
  const std::size_t chunks = (n + chunk_size - 1) / chunk_size;
  if (chunks <= 1 || !use_threads(n)) {
    f(x, n, stride);
    return;
  }
  for_each_chunk(chunks, true, [&](std::size_t c) {
    const std::size_t begin = c * chunk_size;
    f(x + static_cast<std::ptrdiff_t>(begin) * stride, std::min(chunk_size, n - begin), stride);
  });
}

template <class T>
void scale(const strided_view<T>& v, coefficient k) noexcept {
  for_each_segment(v, [k](T* x, std::size_t n, std::ptrdiff_t stride) {
    write_segment(x, n, stride, [k](T* y, std::size_t m, std::ptrdiff_t s) { scale_segment(y, m, s, k); });
  });
}

template <class T>
void clamp_segment(T* x, std::size_t n, std::ptrdiff_t stride, T lo, T hi) noexcept {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    if (stride == 1) {
      kernels::clamp<T>(x, n, lo, hi);
      return;
    }
  }
  using traits = element_traits<T>;
  const auto lo_c = traits::to_compute(lo);
  const auto hi_c = traits::to_compute(hi);
  for (std::size_t i = 0; i < n; ++i) {
    T& e = x[static_cast<std::ptrdiff_t>(i) * stride];
    const auto c = traits::to_compute(e);
    if (is_nan(c)) continue;  // by its bits: under -ffinite-math-only the comparisons below may not see NaN
    if (c < lo_c) {
      e = lo;
    } else if (c > hi_c) {
      e = hi;
    }
  }
}

template <class T>
void clamp(const strided_view<T>& v, T lo, T hi) noexcept {
  for_each_segment(v, [lo, hi](T* x, std::size_t n, std::ptrdiff_t stride) {
    write_segment(x, n, stride, [lo, hi](T* y, std::size_t m, std::ptrdiff_t s) { clamp_segment(y, m, s, lo, hi); });
  });
}

template <class T>
bool has_nonfinite(const strided_view<T>& v) noexcept {
  bool found = false;
  for_each_segment(v, [&found](T* x, std::size_t n, std::ptrdiff_t stride) {
    for (std::size_t i = 0; i < n && !found; ++i) {
      found = !element_traits<std::remove_const_t<T>>::is_finite(x[static_cast<std::ptrdiff_t>(i) * stride]);
    }
  });
  return found;
}

// dst[i] += a * src[i] over two views of the same size, computed in double and
// rounded once into dst's type: the sum of clipped per-example gradients.
template <class D, class S>
void add_scaled(const strided_view<D>& dst, const strided_view<const S>& src, double a) noexcept {
  using dst_traits = element_traits<std::remove_const_t<D>>;
  using src_traits = element_traits<S>;
  const std::size_t n = dst.size();
  for (std::size_t i = 0; i < n; ++i) {
    D& d = dst.segment(i / dst.inner_size)[static_cast<std::ptrdiff_t>(i % dst.inner_size) * dst.inner_stride];
    const S& x = src.segment(i / src.inner_size)[static_cast<std::ptrdiff_t>(i % src.inner_size) * src.inner_stride];
    const double sum = static_cast<double>(dst_traits::to_compute(d)) + a * static_cast<double>(src_traits::to_compute(x));
    if constexpr (std::is_same_v<std::remove_const_t<D>, double>) {
      d = sum;
    } else if constexpr (std::is_same_v<std::remove_const_t<D>, float>) {
      d = static_cast<float>(sum);
    } else {
      d = dst_traits::from_compute(static_cast<float>(sum));
    }
  }
}

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_KERNELS_HPP
