// gradclip benchmarks: the library against the memory rooflines and against Eigen written by hand.
//
// Every row reports bytes_per_second as the size of the gradient data handled per second
// (n * sizeof(T) per iteration, whatever the operation reads and writes), so rows over the same
// data compare directly: a clip that reads twice and writes once shows as a lower rate than a
// norm. All rows use real time (UseRealTime), so threaded rows are measured like the others.
//
// Row names: BM_<what><T>/n:<elements>/omp:<threads> for one buffer,
//            BM_group_<what><T>/buffers:<count>/size:<elements each>/omp:<threads> for groups,
//            BM_each_<what><T>/buffers:<count>/size:<elements each> for per-buffer clipping.
// omp:2 rows exist only in OpenMP builds (GRADCLIP_OPENMP=ON) and only from 1e6 elements up.
// bench/compare turns the medians into the ratios the library is held to.
#include "bench_common.hpp"

#include <limits>

namespace {

using namespace gcbench;

// ---- rooflines: what the memory allows, written as plain loops the compiler vectorizes ----------

// Kept out of line: inlined into the benchmark loop, Clang 14 leaves the accumulators on the stack.
#if defined(__GNUC__) || defined(__clang__)
#define GRADCLIP_BENCH_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define GRADCLIP_BENCH_NOINLINE __declspec(noinline)
#else
#define GRADCLIP_BENCH_NOINLINE
#endif

// Read-only roofline: a sum with 8 vector registers' worth of independent accumulators (128
// floats or 64 doubles, for 512-bit vectors; 16 registers at 256 bits), in the element type. Plain
// C++: the fixed-size inner loop is what GCC and Clang vectorize without -ffast-math.
template <class T>
GRADCLIP_BENCH_NOINLINE T read_sum(const T* x, std::size_t n) {
  constexpr std::size_t lanes = 8 * 64 / sizeof(T);
  T acc[lanes] = {};
  std::size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    for (std::size_t j = 0; j < lanes; ++j) acc[j] += x[i + j];
  }
  for (std::size_t j = 0; i < n; ++i, ++j) acc[j] += x[i];
  T s = 0;
  for (std::size_t j = 0; j < lanes; ++j) s += acc[j];
  return s;
}

// Scale roofline: x *= c.
template <class T>
GRADCLIP_BENCH_NOINLINE void scale_loop(T* x, std::size_t n, T c) {
  for (std::size_t i = 0; i < n; ++i) x[i] *= c;
}

// 16-bit data is read as 16-bit integers: the same bytes, summed at the vector width.
template <class T>
using read_type = std::conditional_t<sizeof(T) == 2, std::uint16_t, T>;

// Both split into one contiguous part per thread when threads > 1.
template <class T>
read_type<T> read_roofline(const T* data, std::size_t n, int threads) {
  using R = read_type<T>;
  const R* x = reinterpret_cast<const R*>(data);
#if defined(_OPENMP)
  if (threads > 1) {
    R total = 0;
#pragma omp parallel for reduction(+ : total) num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) {
      const std::size_t lo = n * static_cast<std::size_t>(t) / static_cast<std::size_t>(threads);
      const std::size_t hi = n * static_cast<std::size_t>(t + 1) / static_cast<std::size_t>(threads);
      total += read_sum(x + lo, hi - lo);
    }
    return total;
  }
#else
  (void)threads;
#endif
  return read_sum(x, n);
}

template <class T>
void scale_roofline(T* x, std::size_t n, T c, int threads) {
#if defined(_OPENMP)
  if (threads > 1) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) {
      const std::size_t lo = n * static_cast<std::size_t>(t) / static_cast<std::size_t>(threads);
      const std::size_t hi = n * static_cast<std::size_t>(t + 1) / static_cast<std::size_t>(threads);
      scale_loop(x + lo, hi - lo, c);
    }
    return;
  }
#else
  (void)threads;
#endif
  scale_loop(x, n, c);
}

// ---- per-row setup --------------------------------------------------------------------------------

template <class T>
struct single {
  arena<T>* a = nullptr;
  std::size_t n = 0;
  int threads = 1;

  bool init(benchmark::State& state) {
    n = static_cast<std::size_t>(state.range(0));
    threads = static_cast<int>(state.range(1));
    if (!set_threads(state, threads)) return false;
    a = &get_arena<T>(n);
    restore_magnitude(*a);
    return true;
  }
  vec<T>& v() { return a->data; }
  void done(benchmark::State& state) const {
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(n * sizeof(T)));
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(n));
  }
};

template <class T>
struct grouped {
  arena<T>* a = nullptr;
  std::size_t count = 0, size = 0;
  std::vector<map<T>> g;

  bool init(benchmark::State& state, bool with_threads = true) {
    count = static_cast<std::size_t>(state.range(0));
    size = static_cast<std::size_t>(state.range(1));
    if (!set_threads(state, with_threads ? state.range(2) : 1)) return false;
    a = &get_arena<T>(count * size);
    restore_magnitude(*a);
    g = split(*a, count, size);
    return true;
  }
  void done(benchmark::State& state) const {
    const auto n = static_cast<std::int64_t>(count * size);
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * n * static_cast<std::int64_t>(sizeof(T)));
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
  }
};

// ---- one buffer -----------------------------------------------------------------------------------

template <class T>
void BM_read_roofline(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  for (auto _ : state) {
    auto r = read_roofline(s.v().data(), s.n, s.threads);
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}

// x *= 1: every element is read, multiplied and stored, and the data does not change.
template <class T>
void BM_scale_roofline(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  T c = 1;
  for (auto _ : state) {
    benchmark::DoNotOptimize(c);  // c is opaque: the multiply and the store stay
    scale_roofline(s.v().data(), s.n, c, s.threads);
    benchmark::ClobberMemory();
  }
  s.done(state);
}

template <class T, int P>
void BM_norm(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  const double p = P == 0 ? std::numeric_limits<double>::infinity() : static_cast<double>(P);
  for (auto _ : state) {
    double r = gradclip::norm(s.v(), p);
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}
template <class T>
void BM_norm_l2(benchmark::State& state) {
  BM_norm<T, 2>(state);
}
// norm_accuracy::exact: every term in double lanes.
template <class T>
void BM_norm_l2_exact(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  for (auto _ : state) {
    double r = gradclip::norm(s.v(), 2.0, gradclip::norm_accuracy::exact);
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}
template <class T>
void BM_norm_l1(benchmark::State& state) {
  BM_norm<T, 1>(state);
}
template <class T>
void BM_norm_linf(benchmark::State& state) {
  BM_norm<T, 0>(state);
}

// Clips on every call (see clip_tracker): norm pass + scale pass.
template <class T>
void BM_clip_global(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  const auto opts = clip_opts();
  clip_tracker t(gradclip::norm(s.v()));
  for (auto _ : state) {
    const auto r = gradclip::clip_by_global_norm(s.v(), t.max_norm, opts);
    t.after(r);
  }
  t.report(state);
  s.done(state);
}

// max_norm above the norm: the norm pass only, nothing is written.
template <class T>
void BM_clip_global_noclip(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  const double max_norm = std::numeric_limits<double>::max();
  for (auto _ : state) {
    auto r = gradclip::clip_by_global_norm(s.v(), max_norm);
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}

// The norm and the coefficient (which is < 1 here), writing nothing.
template <class T>
void BM_clip_coefficient(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  const double max_norm = 0.5 * gradclip::norm(s.v());
  for (auto _ : state) {
    auto r = gradclip::clip_coefficient(s.v(), max_norm);
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}

// The scale pass alone (clip_with_norm with a given norm), by a coefficient of 1 - 4e-7.
template <class T>
void BM_clip_with_norm(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  const auto opts = clip_opts();
  for (auto _ : state) {
    auto r = gradclip::clip_with_norm(s.v(), 1.0 - shrink, 1.0, opts);
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}

// Clamp to [-1, 1]; the data lies in [-1, 1), so after the call it is unchanged (the kernel reads
// and writes every element either way).
template <class T>
void BM_clip_by_value(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  for (auto _ : state) {
    gradclip::clip_by_value(s.v(), 1.0);
    benchmark::ClobberMemory();
  }
  s.done(state);
}

// ---- Eigen by hand: what users write without the library --------------------------------------------

template <class T>
void BM_eigen_squaredNorm_scale(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  vec<T>& v = s.v();
  clip_tracker t(gradclip::norm(v), shrink_for_float_sums<T>(s.n));
  for (auto _ : state) {
    const double total = std::sqrt(static_cast<double>(v.squaredNorm()));
    const double c = t.max_norm / total;
    if (c < 1.0) v *= static_cast<T>(c);
    t.after(total, c < 1.0 ? c : 1.0);
  }
  t.report(state);
  s.done(state);
}

template <class T>
void BM_eigen_norm(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  for (auto _ : state) {
    T r = s.v().norm();
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}

template <class T>
void BM_eigen_stableNorm(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  for (auto _ : state) {
    T r = s.v().stableNorm();
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}

template <class T>
void BM_eigen_blueNorm(benchmark::State& state) {
  single<T> s;
  if (!s.init(state)) return;
  for (auto _ : state) {
    T r = s.v().blueNorm();
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}

// ---- a group of many small buffers over one arena ---------------------------------------------------

template <class T>
void BM_group_global_norm(benchmark::State& state) {
  grouped<T> s;
  if (!s.init(state)) return;
  for (auto _ : state) {
    double r = gradclip::global_norm(s.g);
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}

// The same norm with every buffer's norm from the same pass (global_norm's buffer_norms).
template <class T>
void BM_group_global_norm_buffer_norms(benchmark::State& state) {
  grouped<T> s;
  if (!s.init(state)) return;
  std::vector<double> norms;
  for (auto _ : state) {
    double r = gradclip::global_norm(s.g, 2.0, norms);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(norms.data());
  }
  s.done(state);
}

template <class T>
void BM_group_clip_global(benchmark::State& state) {
  grouped<T> s;
  if (!s.init(state)) return;
  const auto opts = clip_opts();
  clip_tracker t(gradclip::global_norm(s.g));
  for (auto _ : state) {
    const auto r = gradclip::clip_by_global_norm(s.g, t.max_norm, opts);
    t.after(r);
  }
  t.report(state);
  s.done(state);
}

template <class T>
void BM_group_clip_global_noclip(benchmark::State& state) {
  grouped<T> s;
  if (!s.init(state)) return;
  const double max_norm = std::numeric_limits<double>::max();
  for (auto _ : state) {
    auto r = gradclip::clip_by_global_norm(s.g, max_norm);
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}

template <class T>
void BM_group_clip_coefficient(benchmark::State& state) {
  grouped<T> s;
  if (!s.init(state)) return;
  const double max_norm = 0.5 * gradclip::global_norm(s.g);
  for (auto _ : state) {
    auto r = gradclip::clip_coefficient(s.g, max_norm);
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}

// nonfinite_guard over a group: one vectorized scan of the bit patterns, against a norm pass.
template <class T>
void BM_group_nonfinite_guard(benchmark::State& state) {
  grouped<T> s;
  if (!s.init(state)) return;
  gradclip::nonfinite_guard guard{5};
  for (auto _ : state) {
    auto r = guard(s.g);
    benchmark::DoNotOptimize(r);
  }
  s.done(state);
}

template <class T>
void BM_group_clip_by_value(benchmark::State& state) {
  grouped<T> s;
  if (!s.init(state)) return;
  for (auto _ : state) {
    gradclip::clip_by_value(s.g, 1.0);
    benchmark::ClobberMemory();
  }
  s.done(state);
}

// The global clip by hand: a squaredNorm per buffer, then a scale per buffer.
template <class T>
void BM_group_eigen_squaredNorm_scale(benchmark::State& state) {
  grouped<T> s;
  if (!s.init(state)) return;
  clip_tracker t(gradclip::global_norm(s.g), shrink_for_float_sums<T>(s.size));
  for (auto _ : state) {
    double sq = 0.0;
    for (auto& b : s.g) sq += static_cast<double>(b.squaredNorm());
    const double total = std::sqrt(sq);
    const double c = t.max_norm / total;
    if (c < 1.0) {
      for (auto& b : s.g) b *= static_cast<T>(c);
    }
    t.after(total, c < 1.0 ? c : 1.0);
  }
  t.report(state);
  s.done(state);
}

// ---- per-buffer clipping: each buffer by its own norm ------------------------------------------------

inline double next_max_norm(const std::vector<gradclip::clip_result>& rs, std::int64_t& clipped) {
  double smallest = std::numeric_limits<double>::infinity();
  for (const auto& r : rs) {
    smallest = std::min(smallest, r.total_norm * r.scale);
    clipped += r.clipped ? 1 : 0;
  }
  return smallest * (1.0 - shrink);
}

template <class T>
double smallest_norm(const std::vector<map<T>>& g) {
  double m = std::numeric_limits<double>::infinity();
  for (const auto& b : g) m = std::min(m, gradclip::norm(b));
  return m;
}

// clip_each_by_norm: norm and scale of each buffer in turn, the scale reading from cache. Every
// buffer clips on every call (the limit tracks the smallest norm, as in clip_tracker).
template <class T>
void BM_each_clip_fused(benchmark::State& state) {
  grouped<T> s;
  if (!s.init(state, false)) return;
  const auto opts = clip_opts();
  double max_norm = smallest_norm(s.g) * (1.0 - shrink);
  std::int64_t clipped = 0;
  for (auto _ : state) {
    const auto rs = gradclip::clip_each_by_norm(s.g, max_norm, opts);
    max_norm = next_max_norm(rs, clipped);
  }
  state.counters["clipped"] = static_cast<double>(clipped) / static_cast<double>(state.iterations() * s.count);
  s.done(state);
}

// The same result in two separate passes over all buffers: every norm, then every scale.
template <class T>
void BM_each_clip_two_pass(benchmark::State& state) {
  grouped<T> s;
  if (!s.init(state, false)) return;
  const auto opts = clip_opts();
  double max_norm = smallest_norm(s.g) * (1.0 - shrink);
  std::int64_t clipped = 0;
  std::vector<double> norms(s.count);
  std::vector<gradclip::clip_result> rs(s.count);
  for (auto _ : state) {
    for (std::size_t i = 0; i < s.count; ++i) norms[i] = gradclip::norm(s.g[i]);
    for (std::size_t i = 0; i < s.count; ++i) rs[i] = gradclip::clip_with_norm(s.g[i], max_norm, norms[i], opts);
    max_norm = next_max_norm(rs, clipped);
  }
  state.counters["clipped"] = static_cast<double>(clipped) / static_cast<double>(state.iterations() * s.count);
  s.done(state);
}

// ---- registration -----------------------------------------------------------------------------------

constexpr std::int64_t single_sizes[] = {1000, 100000, 1000000, 10000000, 100000000};

void single_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "omp"})->UseRealTime();
  for (std::int64_t n : single_sizes) {
    if (n > max_elements()) continue;
    for (std::int64_t t : thread_counts(n)) b->Args({n, t});
  }
}

// Eigen does not thread these reductions: one thread only.
void single_args_1t(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "omp"})->UseRealTime();
  for (std::int64_t n : single_sizes) {
    if (n <= max_elements()) b->Args({n, 1});
  }
}

// stableNorm and blueNorm are slow: up to 1e7.
void single_args_1t_small(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "omp"})->UseRealTime();
  for (std::int64_t n : single_sizes) {
    if (n <= std::min<std::int64_t>(max_elements(), 10000000)) b->Args({n, 1});
  }
}

void group_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"buffers", "size", "omp"})->UseRealTime();
  for (std::int64_t t : thread_counts(1000000)) b->Args({10000, 100, t});
}

void group_args_1t(benchmark::internal::Benchmark* b) {
  b->ArgNames({"buffers", "size", "omp"})->UseRealTime()->Args({10000, 100, 1});
}

// The per-buffer norms' cost: many small buffers and a few large ones.
void buffer_norms_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"buffers", "size", "omp"})->UseRealTime()->Args({10000, 100, 1});
  if (100 * 100000 <= max_elements()) b->Args({100, 100000, 1});
}

void large_buffers_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"buffers", "size", "omp"})->UseRealTime();
  if (100 * 100000 <= max_elements()) b->Args({100, 100000, 1});
}

// half and bfloat16: 1 thread, up to 1e7.
void sixteen_bit_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "omp"})->UseRealTime();
  for (std::int64_t n : {1000, 100000, 10000000}) {
    if (n <= max_elements()) b->Args({n, 1});
  }
}

// 16 buffers of 1 Mi elements: a model's large weight gradients.
void guard_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"buffers", "size", "omp"})->UseRealTime()->Args({16, 1048576, 1});
}

// 1000 buffers of 1 MiB of floats (1 GB), and 1000 of 1e5 elements.
void each_args_float(benchmark::internal::Benchmark* b) {
  b->ArgNames({"buffers", "size"})->UseRealTime();
  if (1000 * 100000 <= max_elements()) b->Args({1000, 100000});
  if (1000 * 262144 <= max_elements()) b->Args({1000, 262144});
}

void each_args_double(benchmark::internal::Benchmark* b) {
  b->ArgNames({"buffers", "size"})->UseRealTime();
  if (1000 * 100000 <= max_elements()) b->Args({1000, 100000});
}

// The rooflines over the per-buffer arena (262,144,000 floats) for reference.
void each_roofline_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "omp"})->UseRealTime();
  if (1000 * 262144 <= max_elements()) b->Args({1000 * 262144, 1});
}

#define GRADCLIP_BENCH_BOTH(fn, args)        \
  BENCHMARK_TEMPLATE(fn, float)->Apply(args); \
  BENCHMARK_TEMPLATE(fn, double)->Apply(args)

GRADCLIP_BENCH_BOTH(BM_read_roofline, single_args);
GRADCLIP_BENCH_BOTH(BM_scale_roofline, single_args);
GRADCLIP_BENCH_BOTH(BM_norm_l2, single_args);
GRADCLIP_BENCH_BOTH(BM_norm_l1, single_args);
GRADCLIP_BENCH_BOTH(BM_norm_linf, single_args);
GRADCLIP_BENCH_BOTH(BM_clip_global, single_args);
GRADCLIP_BENCH_BOTH(BM_clip_global_noclip, single_args);
GRADCLIP_BENCH_BOTH(BM_clip_coefficient, single_args);
GRADCLIP_BENCH_BOTH(BM_clip_with_norm, single_args);
GRADCLIP_BENCH_BOTH(BM_clip_by_value, single_args);
GRADCLIP_BENCH_BOTH(BM_eigen_squaredNorm_scale, single_args_1t);
GRADCLIP_BENCH_BOTH(BM_eigen_norm, single_args_1t);
GRADCLIP_BENCH_BOTH(BM_eigen_stableNorm, single_args_1t_small);
GRADCLIP_BENCH_BOTH(BM_eigen_blueNorm, single_args_1t_small);

BENCHMARK_TEMPLATE(BM_norm_l2_exact, float)->Apply(single_args_1t);

#define GRADCLIP_BENCH_16(fn)                                                \
  BENCHMARK_TEMPLATE(fn, Eigen::half)->Name(#fn "<half>")->Apply(sixteen_bit_args); \
  BENCHMARK_TEMPLATE(fn, Eigen::bfloat16)->Name(#fn "<bfloat16>")->Apply(sixteen_bit_args)

GRADCLIP_BENCH_16(BM_read_roofline);
GRADCLIP_BENCH_16(BM_norm_l2);
GRADCLIP_BENCH_16(BM_norm_l2_exact);
GRADCLIP_BENCH_16(BM_norm_l1);
GRADCLIP_BENCH_16(BM_norm_linf);
GRADCLIP_BENCH_16(BM_clip_by_value);
GRADCLIP_BENCH_16(BM_clip_global);
GRADCLIP_BENCH_16(BM_clip_global_noclip);

GRADCLIP_BENCH_BOTH(BM_group_global_norm, group_args);
GRADCLIP_BENCH_BOTH(BM_group_clip_global, group_args);
GRADCLIP_BENCH_BOTH(BM_group_clip_global_noclip, group_args);
GRADCLIP_BENCH_BOTH(BM_group_clip_coefficient, group_args_1t);
GRADCLIP_BENCH_BOTH(BM_group_clip_by_value, group_args_1t);
GRADCLIP_BENCH_BOTH(BM_group_eigen_squaredNorm_scale, group_args_1t);
BENCHMARK_TEMPLATE(BM_group_global_norm, float)->Apply(guard_args);
BENCHMARK_TEMPLATE(BM_group_global_norm_buffer_norms, float)->Apply(buffer_norms_args);
BENCHMARK_TEMPLATE(BM_group_global_norm, float)->Apply(large_buffers_args);
BENCHMARK_TEMPLATE(BM_group_nonfinite_guard, float)->Apply(guard_args);

BENCHMARK_TEMPLATE(BM_read_roofline, float)->Apply(each_roofline_args);
BENCHMARK_TEMPLATE(BM_scale_roofline, float)->Apply(each_roofline_args);
BENCHMARK_TEMPLATE(BM_each_clip_fused, float)->Apply(each_args_float);
BENCHMARK_TEMPLATE(BM_each_clip_two_pass, float)->Apply(each_args_float);
BENCHMARK_TEMPLATE(BM_each_clip_fused, double)->Apply(each_args_double);
BENCHMARK_TEMPLATE(BM_each_clip_two_pass, double)->Apply(each_args_double);

}  // namespace

BENCHMARK_MAIN();
