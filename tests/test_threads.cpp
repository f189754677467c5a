// Results are bit-identical for any thread count (fixed chunks, fixed combination
// order). Meaningful in the OpenMP build (gradclip_tests_openmp); elsewhere it
// checks that repeated calls agree.
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <gradclip/gradclip.hpp>
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "catch.hpp"
#include "reference.hpp"

namespace {
void set_threads(int n) {
#if defined(_OPENMP)
  omp_set_num_threads(n);
#else
  (void)n;
#endif
}
}  // namespace

TEMPLATE_TEST_CASE("norms and clips give the same bits for 1 to 4 threads", "[threads]", float, double, Eigen::half,
                   Eigen::bfloat16) {
  using T = TestType;
  // Large enough to be split across threads, with a ragged last chunk.
  const auto data = ref::random_values<T>(3 * 1000 * 1000 + 12345, 99);
  std::vector<std::vector<T>> group{ref::random_values<T>(5000, 1), data, ref::random_values<T>(70, 2)};
  for (auto accuracy : {gradclip::norm_accuracy::fast, gradclip::norm_accuracy::exact}) {
    for (double p : {1.0, 2.0, 3.0, ref::inf}) {
      // The exact sums differ from the default only for float, half and bfloat16, p = 1 and 2.
      if (accuracy == gradclip::norm_accuracy::exact && (std::is_same_v<T, double> || !(p == 1.0 || p == 2.0))) continue;
      set_threads(1);
      const double one = gradclip::global_norm(group, p, accuracy);
      for (int threads = 2; threads <= 4; ++threads) {
        set_threads(threads);
        INFO("p = " << p << ", threads = " << threads << ", accuracy " << static_cast<int>(accuracy));
        CHECK(ref::same_bits(gradclip::global_norm(group, p, accuracy), one));
      }
      CHECK(ref::rel_err(one, ref::norm(ref::values(data.data(), data.size()), p)) < 1.0);  // sanity
    }
  }
  set_threads(1);
  auto a = group;
  const auto ra = gradclip::clip_by_global_norm(a, 1.0);
  gradclip::clip_by_value(a, -1e-4, 1e-4);
  set_threads(4);
  auto b = group;
  const auto rb = gradclip::clip_by_global_norm(b, 1.0);
  gradclip::clip_by_value(b, -1e-4, 1e-4);
  CHECK(ref::same_bits(ra.total_norm, rb.total_norm));
  CHECK(a == b);
  set_threads(1);
}

TEMPLATE_TEST_CASE("the threaded L-inf norm finds NaN and inf in any chunk", "[threads]", float, double) {
  using T = TestType;
  auto data = ref::random_values<T>(3 * 1000 * 1000 + 7, 5);
  const double max = gradclip::norm(data, ref::inf);
  for (int threads = 1; threads <= 4; ++threads) {
    set_threads(threads);
    INFO("threads = " << threads);
    CHECK(ref::same_bits(gradclip::norm(data, ref::inf), max));
    auto with_inf = data;
    with_inf[2 * 1000 * 1000 + 3] = -std::numeric_limits<T>::infinity();
    CHECK(gradclip::norm(with_inf, ref::inf) == ref::inf);
    auto with_nan = with_inf;
    with_nan[1000 * 1000 + 1] = std::numeric_limits<T>::quiet_NaN();
    CHECK(std::isnan(gradclip::norm(with_nan, ref::inf)));
  }
  set_threads(1);
}
