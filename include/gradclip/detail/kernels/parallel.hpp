// gradclip kernels: optional OpenMP threading over fixed chunks.
//
// Work is cut into chunks of chunk_size elements whatever the thread count, and
// chunk results are combined in chunk order, so results are bit-identical for any
// number of threads (1 included, and builds without OpenMP). Threads are used
// only when the program is built with OpenMP, the input is large, and we are not
// already inside a parallel region: small inputs never pay for one.
#ifndef GRADCLIP_DETAIL_KERNELS_PARALLEL_HPP
#define GRADCLIP_DETAIL_KERNELS_PARALLEL_HPP

#include <cstddef>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace gradclip::detail::kernels {

inline constexpr std::size_t block_size = 4096;               // elements summed in lanes before a reduction
inline constexpr std::size_t chunk_size = 16 * block_size;    // unit of work for a thread
inline constexpr std::size_t parallel_min_size = 8 * chunk_size;  // below this, one thread

inline bool use_threads(std::size_t n) noexcept {
#if defined(_OPENMP)
  return n >= parallel_min_size && omp_get_max_threads() > 1 && !omp_in_parallel();
#else
  (void)n;
  return false;
#endif
}

// Calls f(c) for every chunk index c in [0, chunks), on the available threads when
// `threaded`. f must only write state owned by chunk c.
template <class F>
void for_each_chunk(std::size_t chunks, bool threaded, F&& f) {
#if defined(_OPENMP)
  if (threaded) {
    const auto count = static_cast<std::ptrdiff_t>(chunks);
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t c = 0; c < count; ++c) f(static_cast<std::size_t>(c));
    return;
  }
#else
  (void)threaded;
#endif
  for (std::size_t c = 0; c < chunks; ++c) f(c);
}

// The results of chunk(c) for every chunk of an n-element run, handed to
// sink(result) in chunk order. Up to 1024 chunk results (64 Mi elements) are held
// at once on the stack: one parallel region per 1024 chunks, no allocation.
template <class Chunk, class Sink>
void for_each_chunk_result(std::size_t n, bool threaded, Chunk&& chunk, Sink&& sink) {
  using result = decltype(chunk(std::size_t{0}));
  const std::size_t chunks = (n + chunk_size - 1) / chunk_size;
  if (chunks == 1 || (chunks > 1 && !threaded)) {
    for (std::size_t c = 0; c < chunks; ++c) sink(chunk(c));
    return;
  }
  constexpr std::size_t round = 1024;
  result results[round];
  for (std::size_t first = 0; first < chunks; first += round) {
    const std::size_t count = chunks - first < round ? chunks - first : round;
    for_each_chunk(count, true, [&](std::size_t c) { results[c] = chunk(first + c); });
    for (std::size_t c = 0; c < count; ++c) sink(results[c]);
  }
}

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_PARALLEL_HPP
