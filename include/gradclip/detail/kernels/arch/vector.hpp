// gradclip kernels: the element operations (scalar.hpp's list) in GNU vectors,
// built from one ISA's primitives (generic.hpp and the files deriving from it).
// Tails shorter than a vector go to the scalar implementation, which keeps the
// same lanes, so the split point never changes a result.
#ifndef GRADCLIP_DETAIL_KERNELS_ARCH_VECTOR_HPP
#define GRADCLIP_DETAIL_KERNELS_ARCH_VECTOR_HPP

#include "../../../config.hpp"

#if GRADCLIP_SIMD

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "scalar.hpp"
#include "target.hpp"

namespace gradclip::detail::kernels {

template <class Isa>
struct vector_arch {
  // Accumulator k's share of a tail of `rest` elements, `width` per vector:
  // [from, from + count), count <= width, possibly empty.
  struct tail_share {
    std::size_t from, count;
  };
  GRADCLIP_ALWAYS_INLINE static constexpr tail_share share_of(std::size_t k, std::size_t width, std::size_t rest) noexcept {
    const std::size_t from = k * width < rest ? k * width : rest;
    return {from, rest - from < width ? rest - from : width};
  }

  static constexpr const char* name() noexcept { return Isa::name(); }

  template <term K, bool Scaled, class T>
  static void accumulate(double* acc, const T* x, std::size_t n, double scale, bool stream = false) noexcept {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
    // The lanes in registers, loaded and stored as whole vectors (vector loads
    // after narrower stores to the same lanes stall on store forwarding: per
    // call, so per buffer of a group of small ones).
    vd a[accumulators];
    load_lanes(a, acc);
    const std::size_t i = add_terms_run<K, Scaled>(a, x, n, scale, stream);
    store_lanes(acc, a);
    if (i < n) scalar_arch::accumulate<K, Scaled>(acc, x + i, n - i, scale);
  }

  // The sums start at 0 in registers and reach acc once, at the end; with Reduce,
  // reduced in registers by reduce_lanes' tree. Flattened, so that the lanes stay
  // in registers from the loads to acc (through a call they went to memory and
  // back: 0.78 of the time for a group of 10,000 x 100 floats).
  template <term K, bool Scaled, bool Reduce, class T>
  GRADCLIP_ALWAYS_INLINE static double accumulate_own(double* acc, const T* x, std::size_t n,
                                                        double scale) noexcept {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
    vd a[accumulators] = {};
    const std::size_t i = add_terms_run<K, Scaled>(a, x, n, scale, false);
    if (i < n) {  // no partial loads: the tail as the scalar code adds it
      double lanes[lane_count];
      store_lanes(lanes, a);
      scalar_arch::accumulate<K, Scaled>(lanes, x + i, n - i, scale);
      load_lanes(a, lanes);
    }
    return add_own<Reduce>(acc, a);
  }

  template <term K, bool Reduce, class T>
  GRADCLIP_ALWAYS_INLINE static double accumulate_float_own(double* acc, const T* x, std::size_t n) noexcept {
    vd d[accumulators] = {};
    add_float_run<K>(d, x, n, false);
    return add_own<Reduce>(acc, d);
  }

  GRADCLIP_ALWAYS_INLINE static void load_lanes(vd* a, const double* acc) noexcept {
#pragma GCC unroll 16
    for (std::size_t k = 0; k < accumulators; ++k) a[k] = Isa::load_widened(acc + k * dwidth);
  }
  GRADCLIP_ALWAYS_INLINE static void store_lanes(double* acc, const vd* a) noexcept {
#pragma GCC unroll 16
    for (std::size_t k = 0; k < accumulators; ++k) {
      const vd v = a[k];
      std::memcpy(acc + k * dwidth, &v, sizeof v);
    }
  }
  // scalar_arch::add_own in registers: the lanes a folded to one vector (the
  // vector tree: lane j of vector k is lane k * dwidth + j), added to acc's folded
  // lanes, and with Reduce the rest of reduce_lanes' tree.
  template <bool Reduce>
  GRADCLIP_ALWAYS_INLINE static double add_own(double* acc, const vd* a) noexcept {
    vd r[accumulators] = {};  // (zeroed for cppcheck; every lane is set next)
#pragma GCC unroll 16
    for (std::size_t k = 0; k < accumulators; ++k) r[k] = a[k];
#pragma GCC unroll 8  // (rolled, the tree went through memory)
    for (std::size_t w = accumulators / 2; w >= 1; w /= 2) {
#pragma GCC unroll 16
      for (std::size_t k = 0; k < w; ++k) r[k] += r[k + w];
    }
    const vd folded = Isa::load_widened(acc) + r[0];
    std::memcpy(acc, &folded, sizeof folded);
    if constexpr (!Reduce) return 0.0;
    return tree_sum(r[0]);
  }

  // The rest of the tree within one vector, in registers: its low half plus its
  // high half, down to one lane (a store and narrower reloads would stall on
  // store forwarding, once per buffer; lane by lane, GCC extracts every lane).
  template <class V>
  GRADCLIP_ALWAYS_INLINE static double tree_sum(V v) noexcept {
    if constexpr (sizeof(V) == 2 * sizeof(double)) {
      return v[0] + v[1];
    } else {
      return tree_sum(halves_added(v, std::make_index_sequence<sizeof(V) / sizeof(double) / 2>{}));
    }
  }
  template <class V, std::size_t... I>
  GRADCLIP_ALWAYS_INLINE static auto halves_added(V v, std::index_sequence<I...>) noexcept {
    return __builtin_shufflevector(v, v, I...) + __builtin_shufflevector(v, v, (I + sizeof...(I))...);
  }

  static void add_folded(double* acc, const double* lanes) noexcept {
    vd a[accumulators];
    load_lanes(a, lanes);
    add_own<false>(acc, a);
  }

  static double reduce_folded(double* acc) noexcept { return scalar_arch::reduce_folded(acc); }

  // The terms of a run into the lanes a, whole vectors (and, with partial loads,
  // the tail); returns how far it got.
  template <term K, bool Scaled, class T>
  GRADCLIP_ALWAYS_INLINE static std::size_t add_terms_run(vd* a, const T* x, std::size_t n, double scale, bool stream) noexcept {
    std::size_t i = 0;
    for (; i + lane_count <= n; i += lane_count) {
      if (stream) prefetch_ahead(x + i, lane_count);
#pragma GCC unroll 16
      for (std::size_t k = 0; k < accumulators; ++k) {
        a[k] = add_terms<K, Scaled>(a[k], Isa::load_widened(x + i + k * dwidth), scale);
      }
    }
    if constexpr (Isa::partial_loads) {
      // Every accumulator takes its part of the tail, possibly nothing: lanes of
      // +0 (or their squares) leave a sum as it was, so these are the scalar
      // tail's sums bit for bit.
      const std::size_t rest = n - i;
      if (rest != 0) {
#pragma GCC unroll 16
        for (std::size_t k = 0; k < accumulators; ++k) {
          const tail_share t = share_of(k, dwidth, rest);
          a[k] = add_terms<K, Scaled>(a[k], Isa::load_widened_partial(x + i + t.from, t.count), scale);
        }
      }
      i = n;
    }
    return i;
  }

  // scalar_arch::accumulate_float in vectors: float vector k holds float lanes
  // [k * fwidth, (k + 1) * fwidth), whose halves flush into double vectors 2k and
  // 2k + 1 (mod accumulators), k ascending: the scalar order, lane for lane. Float
  // vectors a tail did not reach hold +0 and add nothing to a lane of non-negative
  // terms.
  template <term K, class T>
  static void accumulate_float(double* acc, const T* x, std::size_t n, bool stream = false) noexcept {
    static_assert(accumulators * fwidth == float_lane_count && float_block % float_lane_count == 0);
    vd d[accumulators];
    load_lanes(d, acc);
    add_float_run<K>(d, x, n, stream);
    store_lanes(acc, d);
  }

  // The float-lane blocks of a run, flushed into the double lanes d.
  template <term K, class T>
  GRADCLIP_ALWAYS_INLINE static void add_float_run(vd* d, const T* x, std::size_t n, bool stream) noexcept {
    std::size_t i = 0;
    for (; i + float_block <= n;) {
      vf f[accumulators] = {};
      for (std::size_t it = 0; it < float_block_iterations; ++it, i += float_lane_count) {
        if (stream) prefetch_ahead(x + i, float_lane_count);
        add_iteration<K>(f, x + i);
      }
      flush(d, f);
    }
    if (i < n) {  // the last, partial block
      vf f[accumulators] = {};
      for (; i + float_lane_count <= n; i += float_lane_count) add_iteration<K>(f, x + i);
      const std::size_t rest = n - i;
      if (rest != 0) {
        // Every float vector takes its part of the tail, possibly nothing (+0 lanes):
        // unrolled, so the lanes stay in registers.
#pragma GCC unroll 16
        for (std::size_t k = 0; k < accumulators; ++k) {
          const tail_share t = share_of(k, fwidth, rest);
          f[k] = add_float_terms<K>(f[k], t.count == fwidth ? Isa::load_float(x + i + t.from)
                                                            : Isa::load_float_partial(x + i + t.from, t.count));
        }
      }
      flush(d, f);
    }
  }

  // Whole vectors, then the scalar tail.
  static void sqrt_unmarked(double* x, std::size_t n) noexcept {
    const vd zero = {};
    std::size_t i = 0;
    for (; i + dwidth <= n; i += dwidth) {
      vd v;
      std::memcpy(&v, x + i, sizeof v);
      const vu64 marked = (vu64)(v < zero);  // all ones where x[i] < 0, as the scalar test
      const vd r = (vd)(((vu64)Isa::sqrt(v) & ~marked) | ((vu64)(-v) & marked));
      std::memcpy(x + i, &r, sizeof r);
    }
    scalar_arch::sqrt_unmarked(x + i, n - i);
  }

  // The same additions as scalar_arch::reduce_lanes, whole vectors while the
  // width allows.
  static double reduce_lanes(double* acc) noexcept {
    std::size_t width = lane_count / 2;
    for (; width >= dwidth; width /= 2) {
      for (std::size_t j = 0; j < width; j += dwidth) {
        vd lo, hi;
        std::memcpy(&lo, acc + j, sizeof lo);
        std::memcpy(&hi, acc + j + width, sizeof hi);
        lo += hi;
        std::memcpy(acc + j, &lo, sizeof lo);
      }
    }
    return scalar_arch::reduce_lanes(acc, width);
  }

  template <class T>
  static bits_of_width<T> max_magnitude_bits(const T* x, std::size_t n, bool stream = false) noexcept {
    using bits = bits_of_width<T>;
    typedef bits vb __attribute__((vector_size(vector_bytes)));
    constexpr std::size_t w = vector_bytes / sizeof(T);
    constexpr bits mask = magnitude_mask<T>;
    std::size_t i = 0;
    vb m0 = {}, m1 = {}, m2 = {}, m3 = {};
    for (; i + 4 * w <= n; i += 4 * w) {
      if (stream) prefetch_ahead(x + i, 4 * w);
      vb b0, b1, b2, b3;
      std::memcpy(&b0, x + i, sizeof b0);
      std::memcpy(&b1, x + i + w, sizeof b1);
      std::memcpy(&b2, x + i + 2 * w, sizeof b2);
      std::memcpy(&b3, x + i + 3 * w, sizeof b3);
      b0 &= mask;
      b1 &= mask;
      b2 &= mask;
      b3 &= mask;
      // The vector ?: lowers to the target's unsigned max where it has one.
      m0 = b0 > m0 ? b0 : m0;
      m1 = b1 > m1 ? b1 : m1;
      m2 = b2 > m2 ? b2 : m2;
      m3 = b3 > m3 ? b3 : m3;
    }
    m0 = m1 > m0 ? m1 : m0;
    m2 = m3 > m2 ? m3 : m2;
    m0 = m2 > m0 ? m2 : m0;
    bits m = scalar_arch::max_magnitude_bits(x + i, n - i);
    for (std::size_t j = 0; j < w; ++j) m = m0[j] > m ? m0[j] : m;
    return m;
  }

  template <class T>
  static void scale(T* x, std::size_t n, T c) noexcept {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
    typedef T vt __attribute__((vector_size(vector_bytes)));
    constexpr std::size_t w = vector_bytes / sizeof(T);
    std::size_t i = 0;
    for (; i + 2 * w <= n; i += 2 * w) {
      vt v0, v1;
      std::memcpy(&v0, x + i, sizeof v0);
      std::memcpy(&v1, x + i + w, sizeof v1);
      v0 *= c;
      v1 *= c;
      std::memcpy(x + i, &v0, sizeof v0);
      std::memcpy(x + i + w, &v1, sizeof v1);
    }
    scalar_arch::scale(x + i, n - i, c);
  }

  template <class T>
  static void decode(float* out, const T* x, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + fwidth <= n; i += fwidth) {
      const vf v = Isa::load_float(x + i);
      std::memcpy(out + i, &v, sizeof v);
    }
    scalar_arch::decode(out + i, x + i, n - i);
  }

  // scalar_arch::scale_rounded in vectors, the same steps as element.hpp's times:
  // the product in double and its exact error (an FMA), rounded to odd in double,
  // then to odd in float, then to nearest in 16 bits. A vector holding a NaN goes
  // to the scalar rule (its NaN bits are the conversions' own). Targets without
  // FMA use the scalar rule throughout.
  template <class T>
  static void scale_rounded(T* x, std::size_t n, double c) noexcept {
    std::size_t i = 0;
    if constexpr (fused_squares) {
      typedef std::uint16_t vh __attribute__((vector_size(vector_bytes / 2)));
      constexpr std::uint16_t inf = scalar_arch::infinity_bits<T>();
      vd vc = {};
      for (std::size_t k = 0; k < dwidth; ++k) vc[k] = c;
      for (; i + fwidth <= n; i += fwidth) {
        vh raw;
        std::memcpy(&raw, x + i, sizeof raw);
        const vh nan = (vh)((raw & 0x7fffu) > inf);
        std::uint16_t any = 0;
        for (std::size_t k = 0; k < fwidth; ++k) any |= nan[k];
        if (any != 0) {
          scalar_arch::scale_rounded(x + i, fwidth, c);
          continue;
        }
        vd lo, hi;
        Isa::widen_halves(Isa::load_float(x + i), lo, hi);
        const vd plo = lo * vc, phi = hi * vc;
        vf r = {};
        odd_float(odd_double(plo, Isa::product_error(lo, vc, plo)), r, 0);
        odd_float(odd_double(phi, Isa::product_error(hi, vc, phi)), r, fwidth / 2);
        Isa::store_narrowed(x + i, r);
      }
    }
    scalar_arch::scale_rounded(x + i, n - i, c);
  }

  template <class T>
  static void clamp(T* x, std::size_t n, T lo, T hi) noexcept {
    if constexpr (sizeof(T) == 2) {
      clamp_16(x, n, lo, hi);
    } else {
      clamp_wide(x, n, lo, hi);
    }
  }

  template <class T>
  static void clamp_wide(T* x, std::size_t n, T lo, T hi) noexcept {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
    typedef T vt __attribute__((vector_size(vector_bytes)));
    constexpr std::size_t w = vector_bytes / sizeof(T);
    vt vlo = {}, vhi = {};  // broadcast by element: vt{} + lo would turn a -0 bound into +0
    for (std::size_t k = 0; k < w; ++k) {
      vlo[k] = lo;
      vhi[k] = hi;
    }
    std::size_t i = 0;
    for (; i + 2 * w <= n; i += 2 * w) {
      vt v0, v1;
      std::memcpy(&v0, x + i, sizeof v0);
      std::memcpy(&v1, x + i + w, sizeof v1);
      v0 = Isa::clamp_lanes(v0, vlo, vhi);
      v1 = Isa::clamp_lanes(v1, vlo, vhi);
      std::memcpy(x + i, &v0, sizeof v0);
      std::memcpy(x + i + w, &v1, sizeof v1);
    }
    scalar_arch::clamp(x + i, n - i, lo, hi);
  }

 private:
  // Half and bfloat16: compared as floats (decoded exactly), the kept or bound bit
  // patterns selected lane by lane; NaN found by its bits, as above.
  template <class T>
  static void clamp_16(T* x, std::size_t n, T lo, T hi) noexcept {
    typedef std::uint16_t vh __attribute__((vector_size(vector_bytes / 2)));  // fwidth lanes
    typedef std::int16_t vhs __attribute__((vector_size(vector_bytes / 2)));
    const float lo_f = element_traits<T>::to_compute(lo), hi_f = element_traits<T>::to_compute(hi);
    const std::uint16_t lo_b = bits_of_16(lo), hi_b = bits_of_16(hi);
    vf vlo = {}, vhi = {};
    for (std::size_t k = 0; k < fwidth; ++k) {
      vlo[k] = lo_f;
      vhi[k] = hi_f;
    }
    constexpr std::uint16_t inf = scalar_arch::infinity_bits<T>();
    std::size_t i = 0;
    for (; i + fwidth <= n; i += fwidth) {
      vh raw;
      std::memcpy(&raw, x + i, sizeof raw);
      const vf v = Isa::load_float(x + i);
      const vh nan = (vh)((raw & 0x7fffu) > inf);
      const vh below = (vh)__builtin_convertvector(v < vlo, vhs) & ~nan;
      const vh above = (vh)__builtin_convertvector(v > vhi, vhs) & ~nan;
      const vh r = (raw & ~(below | above)) | (below & lo_b) | (above & hi_b);
      std::memcpy(static_cast<void*>(x + i), &r, sizeof r);
    }
    scalar_arch::clamp(x + i, n - i, lo, hi);
  }

  // element.hpp's round_to_odd(hi, lo), lane by lane.
  static vd odd_double(vd hi, vd lo) noexcept {
    const vu64 b = (vu64)hi;
    const vu64 inexact = (vu64)(lo != 0.0) & (vu64)((b & magnitude_mask<double>) < 0x7ff0000000000000ull);
    const vu64 opposite = (vu64)(((b ^ (vu64)lo) >> 63) != 0);  // |exact| < |hi|: step toward zero
    return (vd)((b - (inexact & opposite & 1u)) | (inexact & 1u));
  }

  // element.hpp's round_to_odd_float(v), lane by lane, into r[at .. at + dwidth).
  static void odd_float(vd v, vf& r, std::size_t at) noexcept {
    typedef float half_vf __attribute__((vector_size(vector_bytes / 2)));
    typedef std::uint32_t half_vu32 __attribute__((vector_size(vector_bytes / 2)));
    typedef std::int32_t half_vi32 __attribute__((vector_size(vector_bytes / 2)));
    typedef std::int64_t vi64 __attribute__((vector_size(vector_bytes)));
    const half_vf f = __builtin_convertvector(v, half_vf);  // to nearest; out of range: inf or FLT_MAX
    const vd back = __builtin_convertvector(f, vd);
    const vu64 vb = (vu64)v, bb = (vu64)back;
    const vi64 inexact = (vi64)((vb != bb) & (vu64)((vb & magnitude_mask<double>) < 0x7ff0000000000000ull));
    const vi64 beyond = (vi64)((bb & magnitude_mask<double>) > (vb & magnitude_mask<double>)) & inexact;
    const half_vu32 step = (half_vu32)__builtin_convertvector(beyond, half_vi32) & 1u;
    const half_vu32 odd = (half_vu32)__builtin_convertvector(inexact, half_vi32) & 1u;
    const half_vu32 out = (((half_vu32)f) - step) | odd;
    std::memcpy(reinterpret_cast<char*>(&r) + at * sizeof(float), &out, sizeof out);
  }

  template <class T>
  static std::uint16_t bits_of_16(T v) noexcept {
    std::uint16_t b;
    std::memcpy(&b, &v, sizeof b);
    return b;
  }

  template <term K, class T>
  GRADCLIP_ALWAYS_INLINE static void add_iteration(vf* f, const T* x) noexcept {
#pragma GCC unroll 16
    for (std::size_t k = 0; k < accumulators; ++k) f[k] = add_float_terms<K>(f[k], Isa::load_float(x + k * fwidth));
  }

  GRADCLIP_ALWAYS_INLINE static void flush(vd* d, const vf* f) noexcept {
#pragma GCC unroll 16
    for (std::size_t k = 0; k < accumulators; ++k) {
      vd lo, hi;
      Isa::widen_halves(f[k], lo, hi);
      d[(2 * k) % accumulators] += lo;
      d[(2 * k + 1) % accumulators] += hi;
    }
  }

  template <term K>
  GRADCLIP_ALWAYS_INLINE static vf add_float_terms(vf acc, vf v) noexcept {
    if constexpr (K == term::square) {
      return Isa::add_square(acc, v);
    } else {
      return acc + (vf)((vu32)v & magnitude_mask<float>);
    }
  }

  template <term K, bool Scaled>
  GRADCLIP_ALWAYS_INLINE static vd add_terms(vd acc, vd v, double scale) noexcept {
    if constexpr (Scaled) v *= scale;
    if constexpr (K == term::square) {
      return Isa::add_square(acc, v);
    } else {
      return acc + (vd)((vu64)v & magnitude_mask<double>);
    }
  }
};

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_SIMD

#endif  // GRADCLIP_DETAIL_KERNELS_ARCH_VECTOR_HPP
