// The two accuracies of float, half and bfloat16 norms (gradclip/options.hpp):
// the default's float lanes against their derived bound, on inputs built to reach
// it; the vector lanes against the scalar ones, bit for bit; the result check that
// hands overflowing and underflowing sums to the exact pass; random data.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

namespace k = gradclip::detail::kernels;
using gradclip::norm_accuracy;

// Every float block (float_block elements: float_block_iterations terms per lane)
// starts with one `big` term per lane, then only `small` terms that each tie at
// half an ulp of the lane's sum and round to even, down: every addition in every
// lane loses its term, the worst a block can do.
template <class T>
std::vector<T> every_addition_lost(std::size_t blocks, double big, double small) {
  std::vector<T> x;
  for (std::size_t b = 0; b < blocks; ++b) {
    for (std::size_t i = 0; i < k::float_block; ++i) x.push_back(ref::from_double<T>(i < k::float_lane_count ? big : small));
  }
  return x;
}

template <class T>
bool lanes_equal(const double* a, const double* b) {
  for (std::size_t j = 0; j < k::lane_count; ++j) {
    if (!ref::same_bits(a[j], b[j]) && !(std::isnan(a[j]) && std::isnan(b[j]))) return false;
  }
  return true;
}

}  // namespace

TEMPLATE_TEST_CASE("the default accuracy reaches its derived bound, and no further, when every addition rounds down",
                   "[accuracy]", float, Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  const std::size_t terms = k::float_block_iterations;  // per lane and block
  // L2: 1, then squares of 2^-12 = 2^-24 = half an ulp of 1: the exact sum per lane
  // is 1 + (terms - 1) 2^-24, the float lanes keep 1.
  {
    const auto x = every_addition_lost<T>(3, 1.0, 0x1p-12);
    const long double exact = ref::norm(ref::values(x.data(), x.size()), 2.0);
    const double lost = static_cast<double>((terms - 1)) * 0x1p-24;  // of each lane's sum
    const long double want = exact / std::sqrt(1.0L + static_cast<long double>(lost));
    const double got = gradclip::norm(x);
    CHECK(ref::rel_err(got, want) <= 1e-15);                  // exactly the predicted loss
    CHECK(ref::rel_err(got, exact) <= ref::norm_bound<T>(2.0));  // within the bound
    CHECK(ref::rel_err(got, exact) >= 0.9 * ref::norm_bound<T>(2.0));  // and the bound is tight
    CHECK(ref::rel_err(gradclip::norm(x, 2.0, norm_accuracy::exact), exact) <= 1e-15);
  }
  // L1: 1, then 2^-24 per term.
  {
    const auto x = every_addition_lost<T>(3, 1.0, 0x1p-24);
    const long double exact = ref::norm(ref::values(x.data(), x.size()), 1.0);
    const double got = gradclip::norm(x, 1.0);
    CHECK(ref::rel_err(got, exact / (1.0L + static_cast<long double>(terms - 1) * 0x1p-24L)) <= 1e-15);
    CHECK(ref::rel_err(got, exact) <= ref::norm_bound<T>(1.0));
    CHECK(ref::rel_err(got, exact) >= 0.9 * ref::norm_bound<T>(1.0));
    CHECK(ref::rel_err(gradclip::norm(x, 1.0, norm_accuracy::exact), exact) <= 1e-15);
  }
}

TEMPLATE_TEST_CASE("float lanes: the vector implementation adds as the scalar one, bit for bit", "[accuracy][simd]",
                   float, Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  // Mixed magnitudes, subnormals of T, zeros of both signs.
  auto data = ref::random_values<T>(3 * k::float_block + 700, 17, 1e3);
  std::mt19937_64 rng(4);
  for (std::size_t i = 0; i < data.size(); i += 1 + rng() % 97) {
    const int kind = static_cast<int>(rng() % 4);
    data[i] = kind == 0   ? std::numeric_limits<T>::denorm_min()
              : kind == 1 ? ref::from_double<T>(-0.0)
              : kind == 2 ? std::numeric_limits<T>::min()
                          : ref::from_double<T>(3e4);
  }
  std::vector<std::size_t> lengths;
  for (std::size_t n = 0; n <= 300; ++n) lengths.push_back(n);
  for (std::size_t n : {k::float_lane_count - 1, k::float_block - 1, k::float_block, k::float_block + 1,
                        2 * k::float_block + k::float_lane_count + 3, 3 * k::float_block + 600})
    lengths.push_back(n);
  for (std::size_t offset = 0; offset < 16; ++offset) {
    for (std::size_t n : lengths) {
      INFO("offset " << offset << ", n = " << n);
      double a[k::lane_count], b[k::lane_count], c[k::lane_count], d[k::lane_count];
      for (std::size_t j = 0; j < k::lane_count; ++j) a[j] = b[j] = c[j] = d[j] = 0.25 * static_cast<double>(j);
      k::arch::accumulate_float<k::term::square>(a, data.data() + offset, n);
      k::scalar_arch::accumulate_float<k::term::square>(b, data.data() + offset, n);
      k::arch::accumulate_float<k::term::abs>(c, data.data() + offset, n);
      k::scalar_arch::accumulate_float<k::term::abs>(d, data.data() + offset, n);
      CHECK(lanes_equal<T>(a, b));
      CHECK(lanes_equal<T>(c, d));
    }
  }
}

TEST_CASE("half and bfloat16 decode exactly in the float lanes, every bit pattern", "[accuracy][simd]") {
  // All 65536 patterns, each alone in its lane: the lane holds |x| exactly.
  std::vector<Eigen::half> h(65536);
  std::vector<Eigen::bfloat16> b(65536);
  for (std::uint32_t u = 0; u < 65536; ++u) {
    h[u] = Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(u));
    b[u] = Eigen::numext::bit_cast<Eigen::bfloat16>(static_cast<std::uint16_t>(u));
  }
  for (std::uint32_t u = 0; u < 65536; u += k::float_lane_count) {
    double lh[k::lane_count] = {}, lb[k::lane_count] = {};
    const std::size_t n = std::min<std::size_t>(k::lane_count, 65536 - u);  // one float per double lane
    k::arch::accumulate_float<k::term::abs>(lh, h.data() + u, n);
    k::arch::accumulate_float<k::term::abs>(lb, b.data() + u, n);
    for (std::size_t j = 0; j < n; ++j) {
      const double wh = std::fabs(static_cast<double>(static_cast<float>(h[u + j])));
      const double wb = std::fabs(static_cast<double>(static_cast<float>(b[u + j])));
      INFO("pattern " << (u + j));
      CHECK((ref::same_bits(lh[j], wh) || (std::isnan(lh[j]) && std::isnan(wh))));
      CHECK((ref::same_bits(lb[j], wb) || (std::isnan(lb[j]) && std::isnan(wb))));
    }
  }
}

TEMPLATE_TEST_CASE("sums that leave float's range are taken again exactly: the exact norm's bits", "[accuracy][range]",
                   float, Eigen::bfloat16) {
  using T = TestType;  // (half's squares never leave float's range)
  const double hi = 1e25, lo = 1e-25;  // squares past FLT_MAX; squares below FLT_MIN
  for (double scale : {hi, lo, 1e-40}) {
    auto x = ref::random_values<T>(5000, 3, scale);
    for (double p : {1.0, 2.0}) {
      INFO("scale " << scale << ", p = " << p);
      const double got = gradclip::norm(x, p);
      if (p == 2.0) CHECK(ref::same_bits(got, gradclip::norm(x, p, norm_accuracy::exact)));
      CHECK(ref::rel_err(got, ref::norm(ref::values(x.data(), x.size()), p)) <= ref::norm_bound<T>(p));
    }
  }
  // One spike past float's range among ordinary values, in a group of two buffers.
  std::vector<std::vector<T>> g{ref::random_values<T>(3000, 5), ref::random_values<T>(3000, 6)};
  g[1][1234] = ref::from_double<T>(3e30);
  std::vector<long double> all = ref::values(g[0].data(), g[0].size());
  for (const T& e : g[1]) all.push_back(ref::value(e));
  CHECK(ref::rel_err(gradclip::global_norm(g), ref::norm(all, 2.0)) <= 1e-14);  // as exact as the exact mode
  g[0][7] = std::numeric_limits<T>::infinity();
  CHECK(gradclip::global_norm(g) == std::numeric_limits<double>::infinity());
  g[0][8] = std::numeric_limits<T>::quiet_NaN();
  CHECK(std::isnan(gradclip::global_norm(g)));
}

TEMPLATE_TEST_CASE("random data at the default accuracy: the errors the README quotes", "[accuracy]", float,
                   Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  // Normal data; the largest relative error over the trials, for each length.
  // Measured on AVX-512, AVX2 and SSE2 (the lanes differ, the statistics do not):
  // float falls from u/2 = 3e-8 (one rounded square) to 1e-10 at 1e6; 16-bit
  // squares are exact in float, and their float sums lose a steady 1.7e-8 (half)
  // or 7e-9 (bfloat16) however long the data.
  std::mt19937_64 rng(8);
  std::normal_distribution<double> normal;
  for (std::size_t n : {std::size_t{10}, std::size_t{1000}, std::size_t{100000}, std::size_t{1000000}}) {
    double worst = 0;
    const int trials = n >= 100000 ? 4 : 50;
    for (int t = 0; t < trials; ++t) {
      std::vector<T> x(n);
      for (auto& e : x) e = ref::from_double<T>(normal(rng));
      worst = std::max(worst, ref::rel_err(gradclip::norm(x), ref::norm(ref::values(x.data(), x.size()), 2.0)));
    }
    INFO("n = " << n);
    const double want = std::is_same_v<T, float> ? (n <= 1000 ? 3e-8 : (n <= 100000 ? 2e-9 : 5e-10))
                        : std::is_same_v<T, Eigen::half> ? 3e-8
                                                         : 1.2e-8;
    CHECK(worst <= want);
  }
}

TEMPLATE_TEST_CASE("half and bfloat16 scaling in vectors: the element rule's bits, every pattern", "[accuracy][simd]",
                   Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  std::vector<T> all(65536 + 40);
  for (std::size_t u = 0; u < all.size(); ++u) {
    all[u] = Eigen::numext::bit_cast<T>(static_cast<std::uint16_t>(u * 40503u));  // every pattern, shuffled
  }
  for (double c : {0.5, 0.7071067811865476, 1.0 - 1e-9, 0.999999, 3e-5, 1e-30, 1.7e-300, 0.1234567}) {
    for (std::size_t offset : {0u, 3u, 16u}) {
      std::vector<T> a(all.begin() + static_cast<std::ptrdiff_t>(offset), all.end()), b = a;
      k::arch::scale_rounded(a.data(), a.size(), c);
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < b.size(); ++i) wrong += !ref::same_bits(a[i], gradclip::detail::times(b[i], c));
      INFO("c = " << c << ", offset " << offset);
      CHECK(wrong == 0);
    }
  }
}
