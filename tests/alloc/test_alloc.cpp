// No heap allocation on the hot path. This program replaces the global operator
// new/delete with counting versions (hence its own executable) and checks that the
// norm and clip calls allocate nothing once the group itself is built, for groups of
// Eigen Maps, std::vectors, tuples mixing types, buffer_views and strided blocks,
// small and large (multi-chunk) buffers, every norm type and policy. It then prints
// how many allocations the calls that do allocate make, for the README.
//
// Exit status 0 when every hot-path call allocated nothing.
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <new>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <gradclip/adaptive/adagc.hpp>
#include <gradclip/adaptive/agc.hpp>
#include <gradclip/adaptive/auto_clip.hpp>
#include <gradclip/adaptive/clip_units.hpp>
#include <gradclip/adaptive/nonfinite_guard.hpp>
#include <gradclip/adaptive/norm_stats.hpp>
#include <gradclip/adaptive/rms.hpp>
#include <gradclip/adaptive/zclip.hpp>
#include <gradclip/gradclip.hpp>
#include <gradclip/loss_scale.hpp>

// ---- counting allocator ----------------------------------------------------------

namespace {
std::atomic<long> allocations{0};
std::atomic<bool> counting{false};

void* allocate(std::size_t n, std::size_t align) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) n = 1;
  void* p = align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align) : std::malloc(n);
  return p;
}
}  // namespace

void* operator new(std::size_t n) {
  if (void* p = allocate(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = allocate(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = allocate(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
  if (void* p = allocate(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

// ---- the checks ------------------------------------------------------------------

namespace {

int failures = 0;
int checks = 0;

// Allocations made by f (f's own captures are built before).
long count(const std::function<void()>& f) {
  allocations = 0;
  counting = true;
  try {
    f();
  } catch (...) {
    counting = false;
    throw;
  }
  counting = false;
  return allocations.load();
}

void none(const char* what, const std::function<void()>& f) {
  ++checks;
  const long n = count(f);
  if (n != 0) {
    ++failures;
    std::printf("FAIL  %-72s %ld allocation(s)\n", what, n);
  }
}

void report(const char* what, const std::function<void()>& f) {
  long n = 0;
  try {
    n = count(f);
  } catch (const std::exception&) {
    n = allocations.load();
  }
  std::printf("| `%s` | %ld |\n", what, n);
}

template <class T>
std::vector<T> values(std::size_t n, double scale) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double x = scale * std::sin(0.1 * static_cast<double>(i) + 1.0);
    if constexpr (std::is_same_v<T, double>) {
      v[i] = x;
    } else {
      v[i] = T(static_cast<float>(x));
    }
  }
  return v;
}

// Every hot-path call on one group (the group is built by the caller, outside the count).
template <class Group>
void hot_path(const char* form, Group& g) {
  auto tag = [form](const char* call) {
    static std::string s;
    s = std::string(call) + " on " + form;
    return s.c_str();
  };
  for (double p : {2.0, 1.0, std::numeric_limits<double>::infinity(), 3.0}) {
    const gradclip::clip_options o{p, 1e-6, gradclip::nonfinite::propagate};
    const gradclip::norm_clipper clip(1e-3, o);  // built outside the count
    none(tag("global_norm"), [&] { (void)gradclip::global_norm(g, p); });
    none(tag("partial_norm + combine_partials + norm_from_partial"), [&] {
      const auto a = gradclip::partial_norm(g, p);
      (void)gradclip::norm_from_partial(gradclip::combine_partials(a, a, p), p);
    });
    none(tag("clip_coefficient"), [&] { (void)gradclip::clip_coefficient(g, 1e-3, o); });
    none(tag("clip_by_global_norm (clips)"), [&] { (void)gradclip::clip_by_global_norm(g, 1e-3, o); });
    none(tag("clip_by_global_norm (does not clip)"), [&] { (void)gradclip::clip_by_global_norm(g, 1e30, o); });
    none(tag("clip_with_norm"), [&] { (void)gradclip::clip_with_norm(g, 1.0, 2.0, o); });
    none(tag("norm_clipper"), [&] { (void)clip(g); });
  }
  const gradclip::value_clipper vc(-0.5, 0.25);
  none(tag("clip_by_value(lo, hi)"), [&] { gradclip::clip_by_value(g, -0.5, 0.5); });
  none(tag("clip_by_value(c)"), [&] { gradclip::clip_by_value(g, 0.4); });
  none(tag("value_clipper"), [&] { vc(g); });
  none(tag("unscale_and_clip"), [&] { (void)gradclip::unscale_and_clip(g, 1024.0, 1.0); });
}

}  // namespace

int main() {
  // ---- groups of every form, built before counting ----
  std::vector<float> arena = values<float>(100000, 2.0);
  std::vector<Eigen::Map<Eigen::VectorXf>> maps;
  maps.emplace_back(arena.data(), 10);
  maps.emplace_back(arena.data() + 10, 4096);
  maps.emplace_back(arena.data() + 5000, 90000);  // more than one chunk (65536)
  hot_path("std::vector<Eigen::Map<VectorXf>>", maps);

  std::vector<std::vector<double>> vectors{values<double>(7, 1.0), values<double>(5000, 3.0), values<double>(1, 1e300)};
  hot_path("std::vector<std::vector<double>>", vectors);

  Eigen::VectorXf vf = Eigen::VectorXf::LinSpaced(300, -3.0f, 3.0f);
  Eigen::MatrixXd md = Eigen::MatrixXd::Random(40, 30);
  std::vector<Eigen::half> vh = values<Eigen::half>(700, 5.0);
  std::vector<Eigen::bfloat16> vb = values<Eigen::bfloat16>(600, 7.0);
  auto tuple = std::tie(vf, md, vh, vb);
  hot_path("std::tuple<VectorXf&, MatrixXd&, vector<half>&, vector<bfloat16>&>", tuple);

  std::vector<gradclip::buffer_view<float>> views{{arena.data(), 33}, {arena.data() + 40, 0}, {arena.data() + 50, 7000}};
  hot_path("std::vector<buffer_view<float>>", views);

  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm = Eigen::MatrixXf::Random(64, 48);
  auto block = rm.block(3, 5, 40, 20);  // strided: staged through the kernels' stack buffer
  auto col = rm.col(7);                 // inner stride 48
  auto strided = std::tie(block, col);
  hot_path("std::tuple<Block&, column of a row-major matrix&>", strided);

  std::vector<float> single = values<float>(1 << 20, 1.0);  // 16 chunks
  hot_path("std::vector<float> of 2^20 elements", single);

  // Non-finite gradients: propagate and skip allocate nothing either.
  std::vector<std::vector<float>> bad{values<float>(100, 1.0), values<float>(50, 1.0)};
  bad[1][3] = std::numeric_limits<float>::quiet_NaN();
  none("clip_by_global_norm, NaN, skip", [&] {
    (void)gradclip::clip_by_global_norm(bad, 1.0, {2.0, 1e-6, gradclip::nonfinite::skip});
  });
  none("clip_by_global_norm, NaN, propagate", [&] { (void)gradclip::clip_by_global_norm(bad, 1.0); });

  // Adaptive calls without state growth.
  Eigen::MatrixXf w = Eigen::MatrixXf::Random(30, 20), gm = Eigen::MatrixXf::Random(30, 20) * 5.0f;
  Eigen::VectorXf wb = Eigen::VectorXf::Random(30), gb = Eigen::VectorXf::Random(30) * 5.0f;
  auto params = std::tie(w, wb);
  auto grads_agc = std::tie(gm, gb);
  const gradclip::agc agc(0.01);
  none("adaptive_grad_clip / agc (tuple of matrix and vector)", [&] { (void)agc(params, grads_agc); });
  Eigen::MatrixXd per_example = Eigen::MatrixXd::Random(16, 50) * 3.0;
  Eigen::VectorXd sum = Eigen::VectorXd::Zero(50);
  none("clip_units_by_norm", [&] { (void)gradclip::clip_units_by_norm(per_example, 1.0); });
  none("clip_units_and_accumulate", [&] { (void)gradclip::clip_units_and_accumulate(per_example, 0.5, sum); });
  gradclip::grad_scaler scaler;
  none("grad_scaler::unscale_and_clip + update", [&] {
    const auto r = scaler.unscale_and_clip(maps, 1.0);
    scaler.update(r.found_inf);
  });
  gradclip::nonfinite_guard guard(1000);
  none("nonfinite_guard(group), finite and non-finite steps", [&] {
    (void)guard(maps);
    (void)guard(bad);
  });
  gradclip::zclip_options zo;
  zo.warmup_steps = 2;
  gradclip::zclip z(zo);
  z(maps);
  z(maps);  // warm-up over
  none("zclip after the warm-up", [&] {
    for (int k = 0; k < 5; ++k) (void)z(maps);
  });
  gradclip::auto_clip windowed(10.0, [] {
    gradclip::auto_clip_options o;
    o.window = 4;
    return o;
  }());
  for (int k = 0; k < 4; ++k) windowed(vectors);
  none("auto_clip with a full window", [&] { (void)windowed(vectors); });
  gradclip::auto_clip streaming(10.0, [] {
    gradclip::auto_clip_options o;
    o.streaming = true;
    return o;
  }());
  none("auto_clip, streaming (P^2)", [&] {
    for (int k = 0; k < 10; ++k) (void)streaming(vectors);
  });
  gradclip::norm_stats stats(4);
  for (int k = 0; k < 4; ++k) stats.record(1.0 + k, false);
  none("norm_stats::record with a full window", [&] { stats.record(5.0, true); });

  std::printf("\n%d hot-path checks, %d allocated\n\n", checks, failures);

  // ---- the calls that do allocate, for the README ----
  std::printf("| call | allocations per call |\n|---|---|\n");
  std::vector<double> limits{1.0, 1.0, 1.0};
  report("clip_each_by_norm (returns std::vector<clip_result>)", [&] { (void)gradclip::clip_each_by_norm(vectors, 1.0); });
  report("clip_each_by_norm with a std::vector of limits", [&] { (void)gradclip::clip_each_by_norm(vectors, limits); });
  report("clip_by_block_rms (result + limits + roots vectors)", [&] { (void)gradclip::clip_by_block_rms(vectors, 1.0); });
  gradclip::adagc adagc;
  report("adagc, first call (sizes its state)", [&] { (void)adagc(vectors); });
  report("adagc, later calls (result vector)", [&] { (void)adagc(vectors); });
  gradclip::auto_clip unbounded(10.0);
  report("auto_clip, unbounded history, first call", [&] { (void)unbounded(vectors); });
  long total = 0;
  for (int k = 0; k < 1000; ++k) total += count([&] { (void)unbounded(vectors); });
  std::printf("| `auto_clip, unbounded history: 1000 further calls` | %ld in all (geometric growth) |\n", total);
  gradclip::zclip fresh;
  report("zclip, first warm-up call (reserves the warm-up)", [&] { (void)fresh(maps); });
  gradclip::norm_stats growing(1000);
  report("norm_stats::record while the window fills", [&] { growing.record(1.0, false); });
  report("norm_stats::quantile (sorts a copy)", [&] { (void)stats.quantile(0.5); });
  std::ostringstream out;
  report("save() of any stateful clipper (zclip shown)", [&] { z.save(out); });
  std::istringstream in(out.str());
  report("load() of any stateful clipper (zclip shown)", [&] { z.load(in); });
  report("any throw: clip_by_global_norm under nonfinite::error", [&] {
    (void)gradclip::clip_by_global_norm(bad, 1.0, {2.0, 1e-6, gradclip::nonfinite::error});
  });
  report("any throw: std::invalid_argument for a bad argument", [&] { (void)gradclip::global_norm(bad, -1.0); });
  gradclip::agc_options masked;
  masked.mask = {true, false};
  report("agc with a mask (constructing the functor copies the mask)", [&] { gradclip::agc a(0.01, 1e-3, masked); });

  std::printf("\n%s\n", failures == 0 ? "OK: no hot-path allocation" : "FAILED: hot-path allocations above");
  return failures == 0 ? 0 : 1;
}
