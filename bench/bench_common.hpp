// Shared pieces of the gradclip benchmarks: test data, thread control, the
// "clip every iteration without the data drifting away" helper and the
// registration helpers. Not part of the library.
#ifndef GRADCLIP_BENCH_COMMON_HPP
#define GRADCLIP_BENCH_COMMON_HPP

#include <gradclip/gradclip.hpp>

#include <Eigen/Core>
#include <benchmark/benchmark.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <typeindex>
#include <typeinfo>
#include <type_traits>
#include <utility>
#include <vector>

namespace gcbench {

template <class T>
using vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <class T>
using map = Eigen::Map<vec<T>>;

// ---- data ---------------------------------------------------------------------------------------

// Fills x with values uniform in [-1, 1) (splitmix64; fast enough for 1e8 elements).
template <class T>
void fill_uniform(T* x, std::size_t n, std::uint64_t seed) {
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    x[i] = static_cast<T>(static_cast<double>(z >> 11) * 0x1p-52 - 1.0);
  }
}

struct arena_base {
  virtual ~arena_base() = default;
  std::size_t bytes = 0;
  std::uint64_t last_use = 0;
};

// One contiguous, 64-byte aligned block of n elements (Eigen's allocator), filled once. Every
// benchmark of the same type and element count works on the same memory, so e.g. the 10,000 x 100
// group and the single 1e6 buffer read the same bytes.
template <class T>
struct arena : arena_base {
  vec<T> data;
  double initial_norm = 0.0;
};

// At most this much memory is held in arenas: the 1e8 float and double arenas (400 + 800 MB) fit
// together; the 1 GB per-buffer arena evicts the least recently used ones. An evicted arena is
// filled again when a later row needs it (outside the timed loop).
inline constexpr std::size_t arena_budget_bytes = std::size_t{1536} << 20;

// Keyed by element type and count (half and bfloat16 have the same size).
inline std::map<std::pair<std::type_index, std::size_t>, std::unique_ptr<arena_base>>& arenas() {
  static std::map<std::pair<std::type_index, std::size_t>, std::unique_ptr<arena_base>> all;
  return all;
}

inline std::uint64_t next_use() {
  static std::uint64_t clock = 0;
  return ++clock;
}

template <class T>
arena<T>& get_arena(std::size_t n) {
  auto& all = arenas();
  const auto key = std::make_pair(std::type_index(typeid(T)), n);
  auto it = all.find(key);
  if (it != all.end()) {
    it->second->last_use = next_use();
    return static_cast<arena<T>&>(*it->second);
  }
  const std::size_t bytes = n * sizeof(T);
  for (;;) {
    std::size_t held = 0;
    auto oldest = all.end();
    for (auto i = all.begin(); i != all.end(); ++i) {
      held += i->second->bytes;
      if (oldest == all.end() || i->second->last_use < oldest->second->last_use) oldest = i;
    }
    if (oldest == all.end() || held + bytes <= arena_budget_bytes) break;
    all.erase(oldest);
  }
  auto a = std::make_unique<arena<T>>();
  a->bytes = bytes;
  a->last_use = next_use();
  a->data.resize(static_cast<Eigen::Index>(n));
  fill_uniform(a->data.data(), n, n * 2 + sizeof(T) + (std::is_same_v<T, Eigen::bfloat16> ? 1 : 0));
  a->initial_norm = gradclip::norm(a->data);
  auto& ref = *a;
  all.emplace(key, std::move(a));
  return ref;
}

// The clipping benchmarks shrink the data a little on every call (see clip_tracker). Before a
// benchmark run, outside the timed loop, scale the arena back up by an exact power of two once
// its norm has fallen below half of the original, so every run sees values of the same magnitude.
template <class T>
void restore_magnitude(arena<T>& a) {
  const double now = gradclip::norm(a.data);
  if (now > 0.5 * a.initial_norm && now <= a.initial_norm) return;
  if (!(now > 0.0) || !std::isfinite(now)) {
    fill_uniform(a.data.data(), static_cast<std::size_t>(a.data.size()), 12345);
    return;
  }
  const int k = static_cast<int>(std::floor(std::log2(a.initial_norm / now)));
  const T f = static_cast<T>(std::ldexp(1.0, k));
  T* x = a.data.data();
  for (Eigen::Index i = 0; i < a.data.size(); ++i) x[i] = static_cast<T>(x[i] * f);
}

// Views of `count` consecutive buffers of `size` elements over one arena.
template <class T>
std::vector<map<T>> split(arena<T>& a, std::size_t count, std::size_t size) {
  std::vector<map<T>> g;
  g.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    g.emplace_back(a.data.data() + i * size, static_cast<Eigen::Index>(size));
  }
  return g;
}

// ---- clipping every iteration without data drift --------------------------------------------------
//
// A clipping benchmark must write every iteration, but re-setting the data costs as much as what is
// being measured. Instead every call clips to just below the current norm:
//     max_norm = (current norm) * (1 - shrink)
// so each call scales by a factor ~ 1 - 4e-7 and the data keeps its shape and (almost) its size.
// The current norm is tracked from the results: after a call the norm is total_norm * scale. eps is
// 0 (the default 1e-6 would shrink small-norm data further on every call; it changes no work done).
// shrink = 4e-7 is larger than the relative error of a float multiply by a coefficient that close to
// 1 (the coefficient itself rounds to 1 - 2^-23 or 1 - 2^-24), so each call does clip; the counter
// `clipped` reports the fraction of calls that did (1 expected). Over a run of 10^7 calls the data
// shrinks by e^-4 at most, which changes no timing (nowhere near subnormals); restore_magnitude
// undoes it between runs.
inline constexpr double shrink = 4e-7;

inline gradclip::clip_options clip_opts() {
  gradclip::clip_options o;
  o.eps = 0.0;
  return o;
}

// Code that sums squares in float (Eigen's squaredNorm on float data) measures the norm with a
// relative error that grows with n (about 1e-7 * sqrt(n)), more than `shrink`: it gets a larger
// margin so that it, too, clips on every call.
template <class T>
double shrink_for_float_sums(std::size_t n) {
  if (sizeof(T) >= sizeof(double)) return shrink;
  return std::max(shrink, 1e-7 * std::sqrt(static_cast<double>(n)));
}

struct clip_tracker {
  double max_norm;
  std::int64_t calls = 0;
  std::int64_t clipped = 0;

  double factor = 1.0 - shrink;

  explicit clip_tracker(double current_norm, double shrink_by = shrink)
      : max_norm(current_norm * (1.0 - shrink_by)), factor(1.0 - shrink_by) {}

  void after(const gradclip::clip_result& r) {
    ++calls;
    clipped += r.clipped ? 1 : 0;
    max_norm = r.total_norm * r.scale * factor;
  }
  // For code that computes the norm and the coefficient itself (Eigen, libtorch).
  void after(double total_norm, double scale) {
    after(gradclip::clip_result{total_norm, scale, scale < 1.0});
  }

  void report(benchmark::State& state) const {
    state.counters["clipped"] = calls ? static_cast<double>(clipped) / static_cast<double>(calls) : 0.0;
  }
};

// ---- threads --------------------------------------------------------------------------------------

#if defined(_OPENMP)
inline constexpr bool have_openmp = true;
#else
inline constexpr bool have_openmp = false;
#endif

// Sets the OpenMP thread count for the library and the rooflines; every row sets it (1 included),
// since the OpenMP default would be all cores.
inline bool set_threads(benchmark::State& state, std::int64_t threads) {
#if defined(_OPENMP)
  (void)state;
  omp_set_num_threads(static_cast<int>(threads));
  return true;
#else
  if (threads != 1) {
    state.SkipWithError("built without OpenMP");
    return false;
  }
  return true;
#endif
}

// ---- registration ---------------------------------------------------------------------------------

// GRADCLIP_BENCH_MAX_N (environment) drops the rows with more elements, e.g. =10000000 skips the
// 1e8 rows (400-800 MB each); `bench/compare --quick` sets it.
inline std::int64_t max_elements() {
  static const std::int64_t limit = [] {
    const char* s = std::getenv("GRADCLIP_BENCH_MAX_N");
    if (s == nullptr || *s == '\0') return std::int64_t{1} << 62;
    return static_cast<std::int64_t>(std::strtod(s, nullptr));
  }();
  return limit;
}

// Thread counts for a row of n elements: 2 only with OpenMP, and only where the library may use
// threads at all (inputs of 1e6 elements and more).
inline std::vector<std::int64_t> thread_counts(std::int64_t n) {
  if (have_openmp && n >= 1000000) return {1, 2};
  return {1};
}

}  // namespace gcbench

#endif  // GRADCLIP_BENCH_COMMON_HPP
