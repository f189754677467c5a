// Per-buffer norms from the norm's own pass (global_norm / clip_by_global_norm with
// buffer_norms): each is the bits gradclip::norm gives for that buffer, the group's
// norm and the clipped data are the bits of the call without them, for every element
// type, norm type, accuracy and group form, through the range-safe rescue and with
// non-finite data. top_contributors against a long-double ranking.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

using gradclip::norm_accuracy;

const double norm_types[] = {1.0, 2.0, 3.0, ref::inf};
const norm_accuracy accuracies[] = {norm_accuracy::fast, norm_accuracy::exact};

template <class T>
using vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

// Buffers of many lengths: empty, shorter than a block of lanes, several blocks
// (4096 elements), past a chunk (65536), so every path of the fast pass is taken.
template <class T>
std::vector<vec<T>> model(std::uint64_t seed, const std::vector<std::size_t>& sizes, double scale = 1.0) {
  std::vector<vec<T>> g;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::vector<T> v = ref::random_values<T>(sizes[i], seed + i, scale);
    vec<T> b(static_cast<Eigen::Index>(sizes[i]));
    std::copy(v.begin(), v.end(), b.data());
    g.push_back(b);
  }
  return g;
}

const std::vector<std::size_t> mixed_sizes = {100, 0, 7, 300, 4096, 1, 5000, 100, 70000, 33, 100, 2};

// The checks every form goes through: the group's norm is the plain call's bits,
// each buffer's is norm(buffer)'s bits.
template <class Group, class Each>
void check_group(const Group& g, double p, norm_accuracy a, Each&& each_norm) {
  std::vector<double> norms = {-1.0, -2.0};  // resized by the call
  const double total = gradclip::global_norm(g, p, norms, a);
  CHECK(ref::same_bits(total, gradclip::global_norm(g, p, a)));
  std::vector<double> want;
  each_norm(g, p, a, want);
  REQUIRE(norms.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("buffer " << i << ": " << norms[i] << " vs " << want[i]);
    CHECK(ref::same_bits(norms[i], want[i]));
  }
}

template <class T>
void each_of_vector(const std::vector<vec<T>>& g, double p, norm_accuracy a, std::vector<double>& out) {
  for (const auto& b : g) out.push_back(gradclip::norm(b, p, a));
}

// Each buffer's norm within the bound of one buffer's norm of the long-double reference.
template <class T>
void check_against_reference(const std::vector<vec<T>>& g, double p, norm_accuracy a) {
  std::vector<double> norms;
  gradclip::global_norm(g, p, norms, a);
  for (std::size_t i = 0; i < g.size(); ++i) {
    const long double want = ref::norm(ref::values(g[i].data(), static_cast<std::size_t>(g[i].size())), p);
    CHECK(ref::rel_err(norms[i], want) <= ref::norm_bound<T>(p, a));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("buffer norms are norm()'s bits and leave the group norm unchanged", "[buffer_norms]", float,
                   double, Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  const auto g = model<T>(11, mixed_sizes);
  for (double p : norm_types) {
    for (norm_accuracy a : accuracies) {
      INFO("p = " << p << ", accuracy " << static_cast<int>(a));
      check_group(g, p, a, each_of_vector<T>);
      check_against_reference(g, p, a);
    }
  }
}

TEST_CASE("buffer norms of a tuple of mixed element types and of strided views", "[buffer_norms]") {
  auto w = model<float>(3, {300})[0];
  auto h = model<Eigen::half>(4, {77})[0];
  auto bf = model<Eigen::bfloat16>(5, {129})[0];
  auto d = model<double>(6, {4100})[0];
  Eigen::MatrixXf big = Eigen::MatrixXf::Random(40, 30);
  for (double p : norm_types) {
    for (norm_accuracy a : accuracies) {
      INFO("p = " << p << ", accuracy " << static_cast<int>(a));
      const auto blk = big.block(3, 2, 17, 11);  // 11 runs of 17 floats
      const auto row = big.row(5);                // stride 40
      const auto group = std::tie(w, h, blk, bf, row, d);
      check_group(group, p, a, [&](const auto&, double q, norm_accuracy b, std::vector<double>& out) {
        out = {gradclip::norm(w, q, b),   gradclip::norm(h, q, b),   gradclip::norm(blk, q, b),
               gradclip::norm(bf, q, b), gradclip::norm(row, q, b), gradclip::norm(d, q, b)};
      });
    }
  }
  // Many short runs in one buffer: a 64 x 1000 block of a 100 x 1000 matrix (the view's
  // own lanes are reduced every block of elements).
  Eigen::MatrixXd tall = Eigen::MatrixXd::Random(100, 1000);
  std::vector<Eigen::Block<Eigen::MatrixXd>> blocks = {tall.block(0, 0, 64, 1000), tall.block(64, 0, 30, 500)};
  for (double p : norm_types) {
    check_group(blocks, p, norm_accuracy::fast, [&](const auto& g, double q, norm_accuracy b, std::vector<double>& out) {
      for (const auto& x : g) out.push_back(gradclip::norm(x, q, b));
    });
  }
}

TEMPLATE_TEST_CASE("buffer norms through the range-safe rescue", "[buffer_norms][range]", float, double) {
  using T = TestType;
  // A buffer whose squares leave T's (float lanes') or double's range, beside ordinary
  // ones: its own norm is rescued; the others' are their plain sums.
  const double huge = std::is_same_v<T, float> ? 1e30 : 1e300;
  const double tiny = std::is_same_v<T, float> ? 1e-30 : 1e-300;
  for (double extreme : {huge, tiny}) {
    auto g = model<T>(21, {100, 50, 4200, 9});
    g[1] = model<T>(22, {50}, extreme)[0];
    for (double p : norm_types) {
      for (norm_accuracy a : accuracies) {
        INFO("extreme " << extreme << ", p = " << p << ", accuracy " << static_cast<int>(a));
        check_group(g, p, a, each_of_vector<T>);
        check_against_reference(g, p, a);
      }
    }
  }
  // Every buffer extreme: the group's own rescue runs too.
  const auto all_huge = model<T>(23, {100, 4100, 3}, huge);
  for (double p : norm_types) check_group(all_huge, p, norm_accuracy::fast, each_of_vector<T>);
}

// A buffer shorter than a block is range-checked by one comparison against
// block_size * floor (2^-88 for float lanes, 2^-988 in double lanes) before the full
// test against n * floor: a 16-element buffer whose sum of squares lies above that
// bound, between the two, below n * floor (rescued), and far below, where the
// squares themselves are subnormal (a missed rescue loses their precision).
TEMPLATE_TEST_CASE("buffer norms of small buffers at the range check's bounds", "[buffer_norms][range]", float,
                   double) {
  using T = TestType;
  constexpr bool f = std::is_same_v<T, float>;
  const int exponents[] = {f ? -44 : -494, f ? -47 : -497, f ? -51 : -501, f ? -70 : -530};
  for (int e : exponents) {
    auto g = model<T>(25, {100, 16, 5});
    for (Eigen::Index k = 0; k < g[1].size(); ++k) g[1][k] = static_cast<T>((k % 3 == 0 ? -1.0 : 1.0) * std::ldexp(1.0, e));
    for (double p : norm_types) {
      for (norm_accuracy a : accuracies) {
        INFO("2^" << e << ", p = " << p << ", accuracy " << static_cast<int>(a));
        check_group(g, p, a, each_of_vector<T>);
        check_against_reference(g, p, a);
      }
    }
  }
}

TEST_CASE("buffer norms of non-finite buffers", "[buffer_norms]") {
  auto g = model<float>(31, {10, 10, 5000, 10});
  g[1][3] = std::numeric_limits<float>::quiet_NaN();
  g[2][4321] = -std::numeric_limits<float>::infinity();
  for (double p : norm_types) {
    std::vector<double> norms;
    const double total = gradclip::global_norm(g, p, norms);
    CHECK(std::isnan(total));
    CHECK(std::isfinite(norms[0]));
    CHECK(std::isnan(norms[1]));
    CHECK(norms[2] == ref::inf);
    CHECK(std::isfinite(norms[3]));
  }
  // A negative NaN with a payload, in every element type and accuracy: the reported
  // norm is norm()'s NaN to the bit (found by the kernels fuzz target).
  for (norm_accuracy a : accuracies) {
    auto f = model<float>(32, {40, 5000});
    auto d = model<double>(33, {40, 5000});
    f[0][7] = -std::nanf("0x1234");
    d[1][77] = -std::nan("0x1234");
    for (double p : norm_types) {
      INFO("p = " << p << ", accuracy " << static_cast<int>(a));
      check_group(f, p, a, each_of_vector<float>);
      check_group(d, p, a, each_of_vector<double>);
    }
  }
}

// The norms are finished after the pass, a vector of them at a time (a rescued
// buffer's norm is marked by its sign meanwhile): every special buffer at every
// position of a vector, and in the tail.
TEMPLATE_TEST_CASE("buffer norms: rescued, zero and non-finite buffers among many", "[buffer_norms][range]", float,
                   double) {
  using T = TestType;
  const double huge = std::is_same_v<T, float> ? 1e30 : 1e300;
  const double tiny = std::is_same_v<T, float> ? 1e-30 : 1e-300;
  for (std::size_t offset = 0; offset < 9; ++offset) {
    auto g = model<T>(41 + offset, std::vector<std::size_t>(37, 30));
    g[offset] = model<T>(60, {30}, huge)[0];
    g[offset + 9] = model<T>(61, {30}, tiny)[0];
    g[offset + 18].setZero();
    g[offset + 27][5] = std::numeric_limits<T>::quiet_NaN();
    g[(offset + 31) % 37][2] = std::numeric_limits<T>::infinity();
    for (double p : norm_types) {
      for (norm_accuracy a : accuracies) {
        INFO("offset " << offset << ", p = " << p << ", accuracy " << static_cast<int>(a));
        check_group(g, p, a, each_of_vector<T>);
      }
    }
  }
}

TEST_CASE("buffer norms of an empty group and of one buffer", "[buffer_norms]") {
  std::vector<Eigen::VectorXf> none;
  std::vector<double> norms = {1.0, 2.0, 3.0};
  CHECK(gradclip::global_norm(none, 2.0, norms) == 0.0);
  CHECK(norms.empty());
  const Eigen::VectorXd one = Eigen::VectorXd::LinSpaced(10, -3.0, 5.0);
  CHECK(gradclip::global_norm(one, 2.0, norms) == gradclip::norm(one));
  REQUIRE(norms.size() == 1);
  CHECK(norms[0] == gradclip::norm(one));
}

TEST_CASE("buffer norms: a bad norm_type throws and leaves them unchanged", "[buffer_norms][errors]") {
  const auto g = model<float>(41, {5, 6});
  std::vector<double> norms = {7.0};
  CHECK_THROWS_AS(gradclip::global_norm(g, 0.0, norms), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::global_norm(g, std::nan(""), norms), std::invalid_argument);
  CHECK(norms == std::vector<double>{7.0});
}

TEMPLATE_TEST_CASE("clip_by_global_norm with buffer norms writes the plain call's bits", "[buffer_norms][clip]",
                   float, double, Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  const auto original = model<T>(51, mixed_sizes, 3.0);
  for (double p : norm_types) {
    for (norm_accuracy a : accuracies) {
      for (double max_norm : {0.5, 1e9}) {  // clipping and not
        INFO("p = " << p << ", accuracy " << static_cast<int>(a) << ", max_norm " << max_norm);
        gradclip::clip_options o;
        o.norm_type = p;
        o.accuracy = a;
        auto plain = original;
        auto observed = original;
        std::vector<double> norms;
        const auto r0 = gradclip::clip_by_global_norm(plain, max_norm, o);
        const auto r1 = gradclip::clip_by_global_norm(observed, max_norm, o, norms);
        CHECK(ref::same_bits(r0.total_norm, r1.total_norm));
        CHECK(ref::same_bits(r0.scale, r1.scale));
        CHECK(r0.clipped == r1.clipped);
        REQUIRE(norms.size() == original.size());
        for (std::size_t i = 0; i < original.size(); ++i) {
          CHECK(ref::same_bits(norms[i], gradclip::norm(original[i], p, a)));  // before clipping
          REQUIRE(plain[i].size() == observed[i].size());
          for (Eigen::Index k = 0; k < plain[i].size(); ++k) {
            if (!ref::same_bits(plain[i][k], observed[i][k])) FAIL("buffer " << i << " element " << k << " differs");
          }
        }
      }
    }
  }
}

TEST_CASE("clip_by_global_norm with buffer norms: errors", "[buffer_norms][clip][errors]") {
  auto g = model<float>(61, {20, 20, 20});
  g[2][5] = std::numeric_limits<float>::infinity();
  const auto before = g;
  std::vector<double> norms = {9.0};
  gradclip::clip_options o;
  CHECK_THROWS_AS(gradclip::clip_by_global_norm(g, -1.0, o, norms), std::invalid_argument);
  CHECK(norms == std::vector<double>{9.0});
  o.on_nonfinite = gradclip::nonfinite::error;
  try {
    gradclip::clip_by_global_norm(g, 1.0, o, norms);
    FAIL("no nonfinite_error");
  } catch (const gradclip::nonfinite_error& e) {
    CHECK(e.tensor_index() == 2);
  }
  // The norms are there to say which buffer went bad; nothing was written.
  REQUIRE(norms.size() == 3);
  CHECK(std::isfinite(norms[0]));
  CHECK(std::isfinite(norms[1]));
  CHECK(norms[2] == ref::inf);
  for (std::size_t i = 0; i < g.size(); ++i) CHECK(g[i] == before[i]);
}

// ---- top_contributors --------------------------------------------------------

namespace {

// The ranking, in long double: shares norm_i^p / sum, largest first, ties by index.
std::vector<std::pair<std::size_t, long double>> ranking(const std::vector<double>& norms, double p) {
  std::vector<std::pair<std::size_t, long double>> r;
  long double total = 0;
  for (double n : norms) total += std::isinf(p) ? 0.0L : std::pow(static_cast<long double>(n), p);
  const long double top = norms.empty() ? 0.0L : *std::max_element(norms.begin(), norms.end());
  for (std::size_t i = 0; i < norms.size(); ++i) {
    const long double share = std::isinf(p) ? norms[i] / top : std::pow(static_cast<long double>(norms[i]), p) / total;
    r.emplace_back(i, share);
  }
  std::stable_sort(r.begin(), r.end(), [](const auto& x, const auto& y) { return x.second > y.second; });
  return r;
}

}  // namespace

TEST_CASE("top_contributors ranks buffers by their share of the norm", "[buffer_norms][top]") {
  const auto g = model<float>(71, {100, 3, 500, 40, 40, 1000, 7}, 2.0);
  for (double p : {1.0, 2.0, 3.0, ref::inf}) {
    std::vector<double> norms;
    gradclip::global_norm(g, p, norms);
    const auto want = ranking(norms, p);
    for (std::size_t k : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{7}, std::size_t{100}}) {
      INFO("p = " << p << ", k = " << k);
      const auto top = gradclip::top_contributors(norms, k, p);
      REQUIRE(top.size() == std::min(k, norms.size()));
      for (std::size_t j = 0; j < top.size(); ++j) {
        CHECK(top[j].index == want[j].first);
        CHECK(top[j].norm == norms[want[j].first]);
        CHECK(ref::rel_err(top[j].share, want[j].second) <= 1e-14);
        CHECK(top[j].name.empty());
      }
    }
  }
}

TEST_CASE("top_contributors with names, ties, zeros and extremes", "[buffer_norms][top]") {
  const std::vector<std::string> names = {"embed", "attn.q", "attn.k", "mlp", "bias"};
  {
    const std::vector<double> norms = {3.0, 4.0, 4.0, 0.0, 12.0};  // squares 9 16 16 0 144: sum 185
    const auto top = gradclip::top_contributors(norms, 4, names);
    REQUIRE(top.size() == 4);
    CHECK(top[0].name == "bias");
    CHECK(top[0].share == Approx(144.0 / 185.0).epsilon(1e-15));
    CHECK((top[1].index == 1 && top[2].index == 2));  // a tie keeps group order
    CHECK(top[1].name == "attn.q");
    CHECK(top[3].name == "embed");
  }
  {
    // Norms whose squares overflow double, and subnormal ones: shares stay exact.
    const std::vector<double> norms = {1e300, 1e-320, 2e300, 0.0, 1e300};
    const auto top = gradclip::top_contributors(norms, 5, 2.0);
    CHECK(top[0].index == 2);
    CHECK(top[0].share == Approx(4.0 / 6.0).epsilon(1e-15));
    CHECK(top[1].share == Approx(1.0 / 6.0).epsilon(1e-15));
    CHECK(top[4].share == 0.0);
  }
  {
    const std::vector<double> zeros = {0.0, 0.0};
    const auto top = gradclip::top_contributors(zeros, 2);
    CHECK(top[0].share == 0.0);
    CHECK(top[1].share == 0.0);
  }
  {
    // A non-finite norm: NaN shares say the ranking means nothing; NaN norms rank first.
    const std::vector<double> bad = {1.0, ref::nan, ref::inf, 2.0};
    const auto top = gradclip::top_contributors(bad, 4);
    CHECK(top[0].index == 1);
    CHECK(top[1].index == 2);
    for (const auto& c : top) CHECK(std::isnan(c.share));
  }
  CHECK_THROWS_AS(gradclip::top_contributors(std::vector<double>{1.0, 2.0}, 1, names), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::top_contributors(std::vector<double>{1.0, -2.0}, 1), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::top_contributors(std::vector<double>{1.0}, 1, 0.0), std::invalid_argument);
}
