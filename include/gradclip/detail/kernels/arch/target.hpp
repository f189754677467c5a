// gradclip kernels: what the build target is, for every ISA file.
//
// The lane layout of the reductions is a property of the build target (its
// natural vector width and whether it has FMA), not of the implementation that
// runs it: the scalar implementation (GRADCLIP_NO_SIMD) adds in the same order as
// the vector one of the same target, so the two give the same bits.
#ifndef GRADCLIP_DETAIL_KERNELS_ARCH_TARGET_HPP
#define GRADCLIP_DETAIL_KERNELS_ARCH_TARGET_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../../../config.hpp"

namespace gradclip::detail::kernels {

// The target's natural vector width (the build's, not the running CPU's).
#if defined(__AVX512F__)
inline constexpr std::size_t vector_bytes = 64;
#elif defined(__AVX__)
inline constexpr std::size_t vector_bytes = 32;
#else
inline constexpr std::size_t vector_bytes = 16;
#endif

// Eight vectors of doubles at that width (16 lanes for SSE2 / NEON, 32 for AVX,
// 64 for AVX-512): eight independent chains keep two FMA units busy through their
// latency.
inline constexpr std::size_t lane_count = vector_bytes;

// The lanes of a group's short buffers are added folded (sum_accumulator): the
// first steps of reduce_lanes' tree, lane j += lane j + w for w = lane_count / 2
// down to folded_lane_count, leave one vector's worth, and the rest of the tree
// from there is a buffer's own sum. (The vector implementations fold in
// registers: seven vector additions instead of eight lanes' loads and stores.)
inline constexpr std::size_t folded_lane_count = lane_count / 8;

// acc + v * v is rounded once where the target has FMA (half the instructions of
// a multiply and an add in the norm's inner loop, and one rounding fewer).
#if defined(__FMA__) || defined(__AVX512F__) || defined(__ARM_FEATURE_FMA)
inline constexpr bool fused_squares = true;
#else
inline constexpr bool fused_squares = false;
#endif

inline double add_square(double acc, double v) noexcept {
  if constexpr (fused_squares) {
    return std::fma(v, v, acc);
  } else {
    return acc + v * v;
  }
}

enum class term { abs, square };

// Float lanes (float, half and bfloat16 input, the default accuracy): terms are
// computed and summed in float_lane_count float lanes, twice as many as the double
// lanes (the same eight vectors), for at most float_block_iterations terms per
// lane; then float lane j is added into double lane j % lane_count, in ascending
// j, and the float lanes restart from zero. The block length bounds the error:
// a float lane's sum of k <= 16 non-negative terms, each step rounded once, is
// within gamma_k = k * 2^-24 / (1 - k * 2^-24) of the exact sum (an L2 norm within
// half that, 4.8e-7; an L1 norm 15 * 2^-24 = 8.9e-7, its first term exact). Double
// then carries the rest at 2^-53 per step, so the norm of any input is within
// 1e-6 while float vectors run at the memory's speed (no widening per element).
inline constexpr std::size_t float_lane_count = 2 * lane_count;
inline constexpr std::size_t float_block_iterations = 16;
inline constexpr std::size_t float_block = float_block_iterations * float_lane_count;  // elements

// acc + v * v in float, rounded once where the target has FMA.
inline float add_square(float acc, float v) noexcept {
  if constexpr (fused_squares) {
    return std::fma(v, v, acc);
  } else {
    return acc + v * v;
  }
}

// Data streamed from beyond the caches is fetched stream_distance bytes ahead:
// the double lanes' loop over float data (a conversion and an FMA per vector) is
// longer than a plain sum's, so the out-of-order window covers fewer outstanding
// misses; the hint restores them (exact float norm at 1e8 elements: 0.86 -> 1.1 of
// a plain sum's speed). Never faults, changes no result.
inline constexpr std::size_t stream_distance = 2048;

// A hint to fetch the cache lines of [p, p + bytes). Never faults.
inline void prefetch_bytes(const void* p, std::size_t bytes) noexcept {
#if defined(__GNUC__)
  const char* c = static_cast<const char*>(p);
  for (std::size_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b);
#else
  (void)p;
  (void)bytes;
#endif
}

template <class T>
inline void prefetch_ahead(const T* x, std::size_t count) noexcept {
  prefetch_bytes(reinterpret_cast<const char*>(x) + stream_distance, count * sizeof(T));
}

#if GRADCLIP_SIMD
// The GNU vector types at the target's width that every vector ISA file uses (the
// element operations declare the others they need from their element type).
inline constexpr std::size_t dwidth = vector_bytes / 8;  // doubles per vector
inline constexpr std::size_t accumulators = lane_count / dwidth;
static_assert(dwidth == folded_lane_count);

typedef double vd __attribute__((vector_size(vector_bytes)));
typedef std::uint64_t vu64 __attribute__((vector_size(vector_bytes)));
inline constexpr std::size_t fwidth = vector_bytes / 4;  // floats per vector
typedef float vf __attribute__((vector_size(vector_bytes)));
typedef std::uint32_t vu32 __attribute__((vector_size(vector_bytes)));
#endif

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_ARCH_TARGET_HPP
