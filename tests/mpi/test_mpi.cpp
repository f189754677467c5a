// gradclip::mpi against the single-process result. Every rank builds the same full
// model from a shared seed, keeps a random shard of it (pieces of buffers, cut the
// way ZeRO's flat partitions cut tensors) and clips its shard collectively; the
// outcome must be what gradclip::clip_by_global_norm gives on the whole model in
// one process: the norm within 1e-12 relative; every element exactly the
// single-process scaling of it with the agreed norm, and within 1 ulp of the
// single-process clip (see bad_elements for the one exception); the parts other
// ranks own untouched; the same total norm, bit for bit, on every rank. Run on 1,
// 2, 3 and 4 ranks by ctest.
//
// Every test case is collective: all ranks run the same cases in the same order,
// and no assertion that can fail on one rank only may end a case early (CHECK, not
// REQUIRE), or the other ranks would wait in a collective forever.
#include <gradclip/mpi.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

constexpr std::size_t npos = gradclip::nonfinite_error::npos;

struct place {
  int rank = 0;
  int size = 1;
};

place where(MPI_Comm comm) {
  place p;
  MPI_Comm_rank(comm, &p.rank);
  MPI_Comm_size(comm, &p.size);
  return p;
}

std::string describe(MPI_Comm comm) {
  const place p = where(comm);
  std::ostringstream s;
  s << "rank " << p.rank << " of " << p.size;
  return s.str();
}

bool on_all_ranks(bool local, MPI_Comm comm = MPI_COMM_WORLD) {
  int in = local ? 1 : 0, out = 0;
  MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_LAND, comm);
  return out != 0;
}

bool same_on_all_ranks(std::uint64_t bits, MPI_Comm comm = MPI_COMM_WORLD) {
  std::uint64_t lo = 0, hi = 0;
  MPI_Allreduce(&bits, &lo, 1, MPI_UINT64_T, MPI_MIN, comm);
  MPI_Allreduce(&bits, &hi, 1, MPI_UINT64_T, MPI_MAX, comm);
  return lo == hi;
}

bool same_on_all_ranks(double x, MPI_Comm comm = MPI_COMM_WORLD) {
  std::uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return same_on_all_ranks(bits, comm);
}

bool same_class(double a, double b) { return std::isnan(a) ? std::isnan(b) : a == b; }

// ulps between two floats or doubles; NaN matches NaN only.
template <class T>
double ulps(T a, T b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0.0 : ref::inf;
  if (a == b) return 0.0;
  using I = std::conditional_t<sizeof(T) == 8, std::int64_t, std::int32_t>;
  auto key = [](T x) {
    I i;
    std::memcpy(&i, &x, sizeof i);
    return i < 0 ? static_cast<long double>(std::numeric_limits<I>::min()) - i : static_cast<long double>(i);
  };
  return static_cast<double>(std::fabs(key(a) - key(b)));
}

template <class T>
using model_t = std::vector<std::vector<T>>;

// The same on every rank for the same seed: empty, short and long buffers.
template <class T>
model_t<T> make_model(std::uint64_t seed, std::size_t buffers, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  model_t<T> m;
  for (std::size_t i = 0; i < buffers; ++i) {
    const std::size_t kind = rng() % 8;
    const std::size_t n = kind == 0 ? 0 : kind < 3 ? 1000 + rng() % 4000 : 1 + rng() % 200;
    m.push_back(ref::random_values<T>(n, seed * 1000 + i, scale));
  }
  return m;
}

// Elements [begin, end) of buffer `buffer`, kept by rank `owner`.
struct piece {
  std::size_t buffer = 0, begin = 0, end = 0;
  int owner = 0;
};

// Cuts every buffer into one to three pieces at random points and deals the
// shuffled pieces to the ranks in turn. The same on every rank for the same seed.
template <class T>
std::vector<piece> random_sharding(const model_t<T>& m, int ranks, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<piece> pieces;
  for (std::size_t b = 0; b < m.size(); ++b) {
    const std::size_t n = m[b].size();
    std::vector<std::size_t> cuts{0, n};
    const std::size_t extra = rng() % 3;
    for (std::size_t c = 0; c < extra; ++c) cuts.push_back(n == 0 ? 0 : rng() % (n + 1));
    std::sort(cuts.begin(), cuts.end());
    for (std::size_t c = 0; c + 1 < cuts.size(); ++c) pieces.push_back({b, cuts[c], cuts[c + 1], 0});
  }
  std::shuffle(pieces.begin(), pieces.end(), rng);
  for (std::size_t k = 0; k < pieces.size(); ++k) pieces[k].owner = static_cast<int>(k % static_cast<std::size_t>(ranks));
  return pieces;
}

// Whole buffers, buffer i to rank i % ranks.
template <class T>
std::vector<piece> whole_buffers(const model_t<T>& m, int ranks) {
  std::vector<piece> pieces;
  for (std::size_t b = 0; b < m.size(); ++b) pieces.push_back({b, 0, m[b].size(), static_cast<int>(b % static_cast<std::size_t>(ranks))});
  return pieces;
}

// This rank's group: views of its pieces of its own copy of the model.
template <class T>
std::vector<gradclip::buffer_view<T>> shard_of(model_t<T>& m, const std::vector<piece>& pieces, int rank) {
  std::vector<gradclip::buffer_view<T>> group;
  for (const piece& p : pieces) {
    if (p.owner == rank) group.emplace_back(m[p.buffer].data() + p.begin, p.end - p.begin);
  }
  return group;
}

// Elements that are wrong. Every element of this rank's pieces must be
//  - bit for bit what the single-process scaling step gives with the norm the ranks
//    agreed on (gradclip::clip_with_norm of the whole model with r.total_norm), and
//  - within 1 ulp of the single-process gradclip::clip_by_global_norm (`want`, which
//    returned `expected`), plus 2 ulps per ulp by which the two coefficients differ:
//    the sharded and the whole sums may round differently, and a coefficient 1 ulp
//    apart can move a product by 1.5 ulps.
// Elements of other ranks' pieces must be untouched.
template <class T>
std::size_t bad_elements(const model_t<T>& got, const model_t<T>& before, const std::vector<piece>& pieces, int rank,
                         double max_norm, const gradclip::clip_options& options, const gradclip::clip_result& r,
                         const model_t<T>& want, const gradclip::clip_result& expected) {
  model_t<T> exact = before;
  gradclip::clip_with_norm(exact, max_norm, r.total_norm, options);
  const double tolerance = 1.0 + 2.0 * ulps(r.scale, expected.scale);
  std::size_t bad = 0;
  for (const piece& p : pieces) {
    for (std::size_t i = p.begin; i < p.end; ++i) {
      const T g = got[p.buffer][i];
      if (p.owner == rank) {
        bad += ulps(g, exact[p.buffer][i]) != 0.0 || ulps(g, want[p.buffer][i]) > tolerance;
      } else {
        bad += !ref::same_bits(g, before[p.buffer][i]);
      }
    }
  }
  return bad;
}

template <class T>
bool same_model_bits(const model_t<T>& a, const model_t<T>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!a[i].empty() && std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(T)) != 0) return false;
  }
  return a.size() == b.size();
}

template <class T>
std::vector<long double> flatten(const model_t<T>& m) {
  std::vector<long double> v;
  for (const auto& b : m)
    for (T x : b) v.push_back(ref::value(x));
  return v;
}

}  // namespace

TEST_CASE("the reduction is commutative bit for bit and checks the arguments agree", "[mpi][local]") {
  using gradclip::detail::mpi::combine;
  using gradclip::detail::mpi::message;
  std::mt19937_64 rng(7);
  auto draw = [&](double p) {
    const int e = static_cast<int>(rng() % 200) - 100;
    const double sum = std::ldexp(static_cast<double>(rng() >> 11), -53) * (rng() % 4 == 0 ? 0.0 : 1000.0);
    return message{std::ldexp(1.0, e), sum, p, 1.0, 1e-6, 0.0, 0.0};
  };
  for (double p : {1.0, 2.0, 3.0, 1.5, ref::inf}) {
    for (int k = 0; k < 1000; ++k) {
      const message a = draw(p), b = draw(p);
      const message ab = combine(a, b), ba = combine(b, a);
      CHECK(ref::same_bits(ab, ba));
    }
  }
  message a = draw(2.0), b = draw(2.0), c = draw(2.0);
  c.max_norm = 2.0;
  CHECK(combine(combine(a, b), c).status == gradclip::detail::mpi::status_mismatch);
  CHECK(combine(a, combine(c, b)).status == gradclip::detail::mpi::status_mismatch);
  CHECK(std::isnan(combine(a, c).sum));
  b.status = gradclip::detail::mpi::status_invalid;
  CHECK(combine(combine(a, c), b).status == gradclip::detail::mpi::status_invalid);
  // A NaN mark beats an inf mark beats a finite sum, in any order.
  const message nan_part{1.0, ref::nan, 2.0, 1.0, 1e-6, 0.0, 0.0}, inf_part{1.0, ref::inf, 2.0, 1.0, 1e-6, 0.0, 0.0};
  CHECK(std::isnan(combine(inf_part, nan_part).sum));
  CHECK(std::isnan(combine(nan_part, inf_part).sum));
  CHECK(combine(a, inf_part).sum == ref::inf);
}

TEST_CASE("a failed MPI call becomes std::runtime_error with MPI's message", "[mpi][local]") {
  try {
    gradclip::detail::mpi::check(MPI_ERR_COMM, "MPI_Something");
    FAIL("no exception");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    CHECK(what.find("MPI_Something failed: ") != std::string::npos);
    CHECK(what.size() > std::string("gradclip::mpi: MPI_Something failed: ").size());
  }
  CHECK_NOTHROW(gradclip::detail::mpi::check(MPI_SUCCESS, "MPI_Something"));
}

TEMPLATE_TEST_CASE("a sharded clip equals the single-process clip of the whole model", "[mpi][clip]", float, double) {
  using T = TestType;
  const place me = where(MPI_COMM_WORLD);
  INFO(describe(MPI_COMM_WORLD));
  for (std::uint64_t seed : {11u, 12u, 13u}) {
    for (double p : {1.0, 2.0, 3.0, 1.5, ref::inf}) {
      for (double fraction : {0.5, 1e-3, 2.0}) {
        INFO("seed " << seed << ", p = " << p << ", max_norm = " << fraction << " * norm");
        const model_t<T> before = make_model<T>(seed, 24, 3.0);
        const auto pieces = random_sharding(before, me.size, seed + 1);
        // The exact sums: a sharding moves float data between float lanes, and the
        // clip must equal the single-process one to double accuracy.
        const auto exact = gradclip::norm_accuracy::exact;
        const double norm = gradclip::global_norm(before, p, exact);
        const double max_norm = norm * fraction;
        gradclip::clip_options options{p, 1e-6, gradclip::nonfinite::propagate};
        options.accuracy = exact;

        model_t<T> want = before;
        const auto expected = gradclip::clip_by_global_norm(want, max_norm, options);

        model_t<T> got = before;
        const double g = gradclip::mpi::global_norm(shard_of(got, pieces, me.rank), MPI_COMM_WORLD, p, exact);
        CHECK(ref::rel_err(g, norm) <= 1e-12);
        CHECK(ref::rel_err(g, ref::norm(flatten(before), p)) <= 1e-12);
        CHECK(same_on_all_ranks(g));
        // The default accuracy: each rank's float lanes, within the bound.
        const double fast = gradclip::mpi::global_norm(shard_of(got, pieces, me.rank), MPI_COMM_WORLD, p);
        CHECK(ref::rel_err(fast, ref::norm(flatten(before), p)) <= std::max(1e-12, ref::norm_bound<T>(p)));
        CHECK(same_on_all_ranks(fast));

        const auto r = gradclip::mpi::clip_by_global_norm(shard_of(got, pieces, me.rank), max_norm, MPI_COMM_WORLD, options);
        CHECK(ref::rel_err(r.total_norm, expected.total_norm) <= 1e-12);
        CHECK(r.clipped == expected.clipped);
        CHECK(ref::rel_err(r.scale, expected.scale) <= 1e-12);
        CHECK(same_on_all_ranks(r.total_norm));
        CHECK(same_on_all_ranks(r.scale));
        CHECK(bad_elements(got, before, pieces, me.rank, max_norm, options, r, want, expected) == 0);
        if (!expected.clipped) CHECK(same_model_bits(got, before));
      }
    }
  }
}

TEST_CASE("buffers of any kind and element type, empty shards included", "[mpi][clip]") {
  const place me = where(MPI_COMM_WORLD);
  INFO(describe(MPI_COMM_WORLD));
  // Rank r holds a strided block of a float matrix, a double vector and a vector of
  // halves, all drawn from seed r; rank 1 (when there is one) holds nothing.
  auto make = [](int r) {
    Eigen::MatrixXf w = Eigen::MatrixXf::Map(ref::random_values<float>(37 * 11, 100 + r).data(), 37, 11);
    std::vector<double> d = ref::random_values<double>(static_cast<std::size_t>(50 + 300 * r), 200 + r, 10.0);
    std::vector<Eigen::half> h = ref::random_values<Eigen::half>(static_cast<std::size_t>(7 + r), 300 + r);
    if (r == 1) {
      w.resize(0, 0);
      d.clear();
      h.clear();
    }
    return std::make_tuple(w, d, h);
  };
  std::vector<long double> all;
  for (int r = 0; r < me.size; ++r) {
    const auto [w, d, h] = make(r);
    for (Eigen::Index j = 0; j < w.cols(); ++j)
      for (Eigen::Index i = 1; i + 1 < w.rows(); ++i) all.push_back(w(i, j));
    for (double x : d) all.push_back(x);
    for (Eigen::half x : h) all.push_back(ref::value(x));
  }
  for (double p : {1.0, 2.0, 3.0, ref::inf}) {
    INFO("p = " << p);
    auto [w, d, h] = make(me.rank);
    const long double want = ref::norm(all, p);
    gradclip::clip_options options{p, 1e-6, gradclip::nonfinite::propagate};
    options.accuracy = gradclip::norm_accuracy::exact;  // to compare at double accuracy
    auto block = w.rows() > 2 ? w.block(1, 0, w.rows() - 2, w.cols()) : w.block(0, 0, 0, 0);
    auto copy_w = w;
    auto copy_d = d;
    auto copy_h = h;
    auto copy_block = copy_w.rows() > 2 ? copy_w.block(1, 0, copy_w.rows() - 2, copy_w.cols()) : copy_w.block(0, 0, 0, 0);
    const double max_norm = static_cast<double>(want) / 4;
    const auto r = gradclip::mpi::clip_by_global_norm(std::tie(block, d, h), max_norm, MPI_COMM_WORLD, options);
    CHECK(ref::rel_err(r.total_norm, want) <= 1e-12);
    CHECK(r.clipped);
    CHECK(same_on_all_ranks(r.total_norm));
    // The same as scaling this rank's buffers alone with the global norm.
    gradclip::clip_with_norm(std::tie(copy_block, copy_d, copy_h), max_norm, r.total_norm, options);
    CHECK(w == copy_w);
    CHECK(d == copy_d);
    CHECK((h.empty() || std::memcmp(h.data(), copy_h.data(), h.size() * sizeof(Eigen::half)) == 0));
  }
}

TEMPLATE_TEST_CASE("non-finite values on one rank follow the policy on every rank", "[mpi][nonfinite]", float,
                   double) {
  using T = TestType;
  const place me = where(MPI_COMM_WORLD);
  INFO(describe(MPI_COMM_WORLD));
  const int bad_rank = me.size - 1;
  for (double bad : {ref::nan, ref::inf, -ref::inf}) {
    for (double p : {1.0, 2.0, 3.0, ref::inf}) {
      INFO("bad value " << bad << " on rank " << bad_rank << ", p = " << p);
      model_t<T> before = make_model<T>(21, 20);
      const auto pieces = random_sharding(before, me.size, 22);
      // The first non-empty piece of bad_rank gets the bad value (in every rank's
      // copy, so the single-process reference sees it too).
      std::size_t bad_index = npos, position = 0;
      for (const piece& pc : pieces) {
        if (pc.owner != bad_rank) continue;
        if (pc.end > pc.begin) {
          before[pc.buffer][pc.begin + (pc.end - pc.begin) / 2] = static_cast<T>(bad);
          bad_index = position;
          break;
        }
        ++position;
      }
      REQUIRE(bad_index != npos);  // the same on every rank: the sharding is shared
      const std::size_t my_bad_index = me.rank == bad_rank ? bad_index : npos;

      // propagate: PyTorch's result, everywhere.
      {
        model_t<T> want = before, got = before;
        const gradclip::clip_options options{p, 1e-6, gradclip::nonfinite::propagate};
        const auto expected = gradclip::clip_by_global_norm(want, 1.0, options);
        const auto r = gradclip::mpi::clip_by_global_norm(shard_of(got, pieces, me.rank), 1.0, MPI_COMM_WORLD, options);
        CHECK(same_class(r.total_norm, expected.total_norm));
        CHECK(r.clipped == expected.clipped);
        CHECK(same_class(r.scale, expected.scale));
        CHECK(same_on_all_ranks(r.total_norm));
        CHECK(bad_elements(got, before, pieces, me.rank, 1.0, options, r, want, expected) == 0);
      }
      // skip: nobody writes; everybody reports the same non-finite norm.
      {
        model_t<T> got = before;
        const gradclip::clip_options options{p, 1e-6, gradclip::nonfinite::skip};
        const auto r = gradclip::mpi::clip_by_global_norm(shard_of(got, pieces, me.rank), 1.0, MPI_COMM_WORLD, options);
        CHECK_FALSE(r.clipped);
        CHECK(r.scale == 1.0);
        CHECK(same_class(r.total_norm, std::isnan(bad) ? ref::nan : ref::inf));
        CHECK(same_on_all_ranks(r.total_norm));
        CHECK(same_model_bits(got, before));
      }
      // error: everybody throws; nobody writes.
      {
        model_t<T> got = before;
        const gradclip::clip_options options{p, 1e-6, gradclip::nonfinite::error};
        bool threw = false;
        std::size_t index = 0;
        double total = 0;
        try {
          gradclip::mpi::clip_by_global_norm(shard_of(got, pieces, me.rank), 1.0, MPI_COMM_WORLD, options);
        } catch (const gradclip::nonfinite_error& e) {
          threw = true;
          index = e.tensor_index();
          total = e.total_norm();
        }
        CHECK(on_all_ranks(threw));
        CHECK(index == my_bad_index);
        CHECK(same_class(total, std::isnan(bad) ? ref::nan : ref::inf));
        CHECK(same_model_bits(got, before));
        // global_norm reports it too, on every rank.
        const double g = gradclip::mpi::global_norm(shard_of(got, pieces, me.rank), MPI_COMM_WORLD, p);
        CHECK(same_class(g, std::isnan(bad) ? ref::nan : ref::inf));
      }
    }
  }
}

TEMPLATE_TEST_CASE("replicated buffers count once and are scaled on every rank", "[mpi][replicated]", float, double) {
  using T = TestType;
  const place me = where(MPI_COMM_WORLD);
  INFO(describe(MPI_COMM_WORLD));
  for (double p : {1.0, 2.0, 3.0, ref::inf}) {
    INFO("p = " << p);
    const model_t<T> sharded = make_model<T>(31, 16);
    const model_t<T> replicated = make_model<T>(32, 3, 5.0);  // every rank holds all of these
    const auto pieces = random_sharding(sharded, me.size, 33);

    // Reference: the sharded model and one copy of the replicated buffers.
    model_t<T> want_s = sharded, want_r = replicated;
    std::vector<gradclip::buffer_view<T>> whole;
    for (auto& b : want_s) whole.emplace_back(b.data(), b.size());
    for (auto& b : want_r) whole.emplace_back(b.data(), b.size());
    // The exact sums: the comparisons below are at double accuracy.
    const auto exact = gradclip::norm_accuracy::exact;
    const double norm = gradclip::global_norm(whole, p, exact);
    gradclip::clip_options options{p, 1e-6, gradclip::nonfinite::propagate};
    options.accuracy = exact;
    const auto expected = gradclip::clip_by_global_norm(whole, norm / 3, options);

    // This rank: replicated buffers first, in the middle and last, flagged.
    model_t<T> got_s = sharded, got_r = replicated;
    auto shard = shard_of(got_s, pieces, me.rank);
    std::vector<gradclip::buffer_view<T>> group{{got_r[0].data(), got_r[0].size()}};
    std::vector<bool> mask{true};
    for (std::size_t i = 0; i < shard.size(); ++i) {
      group.push_back(shard[i]);
      mask.push_back(false);
      if (i == shard.size() / 2) {
        group.emplace_back(got_r[1].data(), got_r[1].size());
        mask.push_back(true);
      }
    }
    if (shard.empty()) {
      group.emplace_back(got_r[1].data(), got_r[1].size());
      mask.push_back(true);
    }
    group.emplace_back(got_r[2].data(), got_r[2].size());
    mask.push_back(true);

    const double g = gradclip::mpi::global_norm(group, mask, MPI_COMM_WORLD, p, exact);
    CHECK(ref::rel_err(g, norm) <= 1e-12);
    if (p == 2.0) {  // without the mask every rank's copy counts
      const double s = gradclip::global_norm(sharded, 2.0, exact), rep = gradclip::global_norm(replicated, 2.0, exact);
      const double all = gradclip::mpi::global_norm(group, MPI_COMM_WORLD, 2.0, exact);
      CHECK(ref::rel_err(all, std::sqrt(static_cast<long double>(s) * s + static_cast<long double>(me.size) * rep * rep)) <= 1e-12);
    }

    const auto r = gradclip::mpi::clip_by_global_norm(group, mask, norm / 3, MPI_COMM_WORLD, options);
    CHECK(ref::rel_err(r.total_norm, expected.total_norm) <= 1e-12);
    CHECK(r.clipped);
    CHECK(same_on_all_ranks(r.scale));
    CHECK(bad_elements(got_s, sharded, pieces, me.rank, norm / 3, options, r, want_s, expected) == 0);
    CHECK(bad_elements(got_r, replicated, whole_buffers(replicated, 1), 0, norm / 3, options, r, want_r, expected) == 0);
    std::uint64_t hash = 1469598103934665603ULL;  // FNV-1a of the replicated copies
    for (std::size_t b = 0; b < replicated.size(); ++b) {
      for (std::size_t i = 0; i < replicated[b].size(); ++i) {
        unsigned char bytes[sizeof(T)];
        std::memcpy(bytes, &got_r[b][i], sizeof(T));
        for (unsigned char c : bytes) hash = (hash ^ c) * 1099511628211ULL;
      }
    }
    CHECK(same_on_all_ranks(hash));  // the copies stay identical
  }
}

TEMPLATE_TEST_CASE("each rank gets its own buffers' norms from the same pass", "[mpi][buffer_norms]", float, double) {
  using T = TestType;
  const place me = where(MPI_COMM_WORLD);
  INFO(describe(MPI_COMM_WORLD));
  for (double p : {1.0, 2.0, 3.0, ref::inf}) {
    for (auto accuracy : {gradclip::norm_accuracy::fast, gradclip::norm_accuracy::exact}) {
      INFO("p = " << p << ", accuracy " << static_cast<int>(accuracy));
      const model_t<T> before = make_model<T>(41, 20, 3.0);
      const auto pieces = random_sharding(before, me.size, 42);
      model_t<T> plain = before, observed = before;
      auto plain_shard = shard_of(plain, pieces, me.rank);
      auto observed_shard = shard_of(observed, pieces, me.rank);
      // Every other buffer of the shard flagged replicated: it counts on rank 0 only,
      // and its norm is still reported on every rank.
      std::vector<bool> mask(observed_shard.size());
      for (std::size_t i = 0; i < mask.size(); i += 2) mask[i] = true;

      std::vector<double> norms = {-1.0};
      const double g = gradclip::mpi::global_norm(observed_shard, MPI_COMM_WORLD, p, norms, accuracy);
      CHECK(ref::same_bits(g, gradclip::mpi::global_norm(plain_shard, MPI_COMM_WORLD, p, accuracy)));
      CHECK(norms.size() == observed_shard.size());
      for (std::size_t i = 0; i < norms.size() && i < observed_shard.size(); ++i) {
        CHECK(ref::same_bits(norms[i], gradclip::norm(observed_shard[i], p, accuracy)));
      }
      std::vector<double> masked_norms;
      const double gm = gradclip::mpi::global_norm(observed_shard, mask, MPI_COMM_WORLD, p, masked_norms, accuracy);
      CHECK(ref::same_bits(gm, gradclip::mpi::global_norm(plain_shard, mask, MPI_COMM_WORLD, p, accuracy)));
      CHECK(masked_norms == norms);

      gradclip::clip_options options{p, 1e-6, gradclip::nonfinite::propagate};
      options.accuracy = accuracy;
      const double max_norm = g / 2;
      const auto r0 = gradclip::mpi::clip_by_global_norm(plain_shard, max_norm, MPI_COMM_WORLD, options);
      std::vector<double> clip_norms;
      const auto r1 = gradclip::mpi::clip_by_global_norm(observed_shard, max_norm, MPI_COMM_WORLD, options, clip_norms);
      CHECK(ref::same_bits(r0.total_norm, r1.total_norm));
      CHECK(ref::same_bits(r0.scale, r1.scale));
      CHECK(clip_norms == norms);  // before clipping
      CHECK(same_model_bits(plain, observed));
      const auto m0 = gradclip::mpi::clip_by_global_norm(plain_shard, mask, max_norm / 2, MPI_COMM_WORLD, options);
      const auto m1 =
          gradclip::mpi::clip_by_global_norm(observed_shard, mask, max_norm / 2, MPI_COMM_WORLD, options, clip_norms);
      CHECK(ref::same_bits(m0.total_norm, m1.total_norm));
      CHECK(same_model_bits(plain, observed));
    }
  }
}

TEST_CASE("extreme magnitudes on different ranks need the scaled partials", "[mpi][range]") {
  const place me = where(MPI_COMM_WORLD);
  INFO(describe(MPI_COMM_WORLD));
  struct layout {
    const char* name;
    std::vector<double> scales;  // one per buffer; buffer i lives on rank i % size
  };
  for (const layout& l : {layout{"1e300 on rank 0, 1e-300 on rank 1", {1e300, 1e-300, 1.0, 1e-300, 1e300}},
                          layout{"1e-300 on rank 0, 1e300 on rank 1", {1e-300, 1e300, 1e-300}},
                          layout{"all tiny", {1e-300, 3e-305, 1e-300, 1e-290}},
                          layout{"all huge", {1e200, 1e300, 1e250, 1e303}}}) {
    for (double p : {1.0, 2.0, 3.0, ref::inf}) {
      INFO(l.name << ", p = " << p);
      model_t<double> before;
      for (std::size_t i = 0; i < l.scales.size(); ++i) {
        before.push_back(ref::random_values<double>(500 + 100 * i, 40 + i, l.scales[i] / 16));
      }
      const auto pieces = whole_buffers(before, me.size);
      const long double exact = ref::norm(flatten(before), p);
      const gradclip::clip_options options{p, 0.0, gradclip::nonfinite::propagate};
      model_t<double> want = before, got = before;
      const auto expected = gradclip::clip_by_global_norm(want, static_cast<double>(exact / 2), options);
      const auto r =
          gradclip::mpi::clip_by_global_norm(shard_of(got, pieces, me.rank), static_cast<double>(exact / 2), MPI_COMM_WORLD, options);
      CHECK(std::isfinite(r.total_norm));
      CHECK(ref::rel_err(r.total_norm, exact) <= 1e-12);
      CHECK(ref::rel_err(r.total_norm, expected.total_norm) <= 1e-12);
      CHECK(r.clipped);
      CHECK(same_on_all_ranks(r.total_norm));
      CHECK(bad_elements(got, before, pieces, me.rank, static_cast<double>(exact / 2), options, r, want, expected) == 0);
    }
  }
}

// The clip bound with a coefficient below DBL_MIN (double) and FLT_MIN (float):
// every rank's shard ends with the whole model's norm at max_norm (eps = 0).
TEMPLATE_TEST_CASE("the clip bound holds across ranks below DBL_MIN and FLT_MIN", "[mpi][range]", float, double) {
  using T = TestType;
  const place me = where(MPI_COMM_WORLD);
  INFO(describe(MPI_COMM_WORLD));
  const bool is_double = std::is_same_v<T, double>;
  const double big = is_double ? 1e300 : 1e35, max_norm = is_double ? 1e-20 : 1e-10;
  model_t<T> before;
  for (std::size_t i = 0; i < 5; ++i) before.push_back(ref::random_values<T>(40 + 10 * i, 90 + i, big));
  const auto pieces = whole_buffers(before, me.size);
  model_t<T> got = before;
  const gradclip::clip_options options{2.0, 0.0, gradclip::nonfinite::propagate};
  const auto r = gradclip::mpi::clip_by_global_norm(shard_of(got, pieces, me.rank), max_norm, MPI_COMM_WORLD, options);
  CHECK(r.clipped);
  CHECK(r.scale < (is_double ? std::numeric_limits<double>::min() : std::numeric_limits<float>::min()));
  // Every rank scaled its own buffers; the whole model's norm, from each rank's share.
  long double mine = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (static_cast<int>(i % static_cast<std::size_t>(me.size)) != me.rank) continue;
    for (T e : got[i]) mine += ref::value(e) * ref::value(e);
  }
  double share = static_cast<double>(mine), total = 0.0;
  MPI_Allreduce(&share, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  const double after = std::sqrt(total);
  const double tol = is_double ? 1e-12 : 0x1p-22;
  CHECK(after <= max_norm * (1 + tol));
  CHECK(after >= max_norm * (1 - 1e-6));
}

TEST_CASE("bad or disagreeing arguments throw std::invalid_argument on every rank", "[mpi][errors]") {
  const place me = where(MPI_COMM_WORLD);
  INFO(describe(MPI_COMM_WORLD));
  const model_t<double> before = make_model<double>(51, 10, 10.0);
  const auto pieces = random_sharding(before, me.size, 52);
  model_t<double> got = before;
  auto group = shard_of(got, pieces, me.rank);
  const std::vector<bool> mask(group.size(), false);
  const int last = me.size - 1;
  using gradclip::clip_options;
  const gradclip::nonfinite prop = gradclip::nonfinite::propagate;

  // Runs f on every rank; true when every rank threw std::invalid_argument.
  auto all_throw = [](auto&& f) {
    bool threw = false;
    try {
      f();
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    return on_all_ranks(threw);
  };
  namespace gm = gradclip::mpi;
  // The same bad argument everywhere.
  CHECK(all_throw([&] { gm::clip_by_global_norm(group, -1.0, MPI_COMM_WORLD); }));
  CHECK(all_throw([&] { gm::clip_by_global_norm(group, ref::nan, MPI_COMM_WORLD); }));
  CHECK(all_throw([&] { gm::clip_by_global_norm(group, 1.0, MPI_COMM_WORLD, clip_options{0.0, 1e-6, prop}); }));
  CHECK(all_throw([&] { gm::clip_by_global_norm(group, 1.0, MPI_COMM_WORLD, clip_options{2.0, -1.0, prop}); }));
  CHECK(all_throw([&] { gm::global_norm(group, MPI_COMM_WORLD, -2.0); }));
  // An unknown policy is refused by the options core on every rank.
  CHECK(all_throw([&] {
    gm::clip_by_global_norm(group, 1.0, MPI_COMM_WORLD, clip_options{2.0, 1e-6, static_cast<gradclip::nonfinite>(7)});
  }));
  CHECK(all_throw([&] { gm::global_norm(group, MPI_COMM_WORLD, ref::nan); }));
  // A bad argument on one rank only.
  CHECK(all_throw([&] { gm::clip_by_global_norm(group, me.rank == last ? -1.0 : 1.0, MPI_COMM_WORLD); }));
  CHECK(all_throw([&] { gm::global_norm(group, MPI_COMM_WORLD, me.rank == 0 ? 0.0 : 2.0); }));
  // A mask of the wrong size, on one rank or on all.
  const std::vector<bool> short_mask(group.size() + 1, false);
  CHECK(all_throw([&] { gm::clip_by_global_norm(group, me.rank == last ? short_mask : mask, 1.0, MPI_COMM_WORLD); }));
  CHECK(all_throw([&] { gm::global_norm(group, short_mask, MPI_COMM_WORLD); }));
  try {
    gm::global_norm(group, short_mask, MPI_COMM_WORLD);
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("replicated mask") != std::string::npos);
  }
  if (me.size > 1) {  // ranks that disagree
    CHECK(all_throw([&] { gm::clip_by_global_norm(group, 1.0 + me.rank, MPI_COMM_WORLD); }));
    CHECK(all_throw([&] { gm::global_norm(group, MPI_COMM_WORLD, me.rank == last ? 3.0 : 2.0); }));
    CHECK(all_throw([&] {
      gm::clip_by_global_norm(group, 1.0, MPI_COMM_WORLD, clip_options{2.0, me.rank == 0 ? 0.0 : 1e-6, prop});
    }));
    CHECK(all_throw([&] {
      gm::clip_by_global_norm(group, 1.0, MPI_COMM_WORLD,
                              clip_options{2.0, 1e-6, me.rank == last ? gradclip::nonfinite::skip : prop});
    }));
    // Different functions in the same collective slot.
    CHECK(all_throw([&] {
      if (me.rank == 0) {
        gm::global_norm(group, MPI_COMM_WORLD, 2.0);
      } else {
        gm::clip_by_global_norm(group, 1.0, MPI_COMM_WORLD);
      }
    }));
  }
  CHECK(all_throw([&] { gm::clip_by_global_norm(group, 1.0, MPI_COMM_NULL); }));
  CHECK(same_model_bits(got, before));
  // Still in step afterwards.
  CHECK(ref::rel_err(gm::global_norm(group, MPI_COMM_WORLD), gradclip::global_norm(before)) <= 1e-12);
}

TEST_CASE("the norm is over the communicator given, not the world", "[mpi][comm]") {
  const place world = where(MPI_COMM_WORLD);
  MPI_Comm half = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, world.rank % 2, world.rank, &half);
  const place me = where(half);
  INFO("world rank " << world.rank << ", " << describe(half));
  const std::uint64_t seed = 60 + static_cast<std::uint64_t>(world.rank % 2);
  const model_t<double> before = make_model<double>(seed, 12, 2.0);
  const auto pieces = random_sharding(before, me.size, seed);
  model_t<double> want = before, got = before;
  const auto expected = gradclip::clip_by_global_norm(want, 1.0);
  const auto r = gradclip::mpi::clip_by_global_norm(shard_of(got, pieces, me.rank), 1.0, half);
  CHECK(ref::rel_err(r.total_norm, expected.total_norm) <= 1e-12);
  CHECK(bad_elements(got, before, pieces, me.rank, 1.0, gradclip::clip_options{}, r, want, expected) == 0);
  CHECK(same_on_all_ranks(r.total_norm, half));
  MPI_Comm_free(&half);
}

// ---- ownership: counted masks, categories, the audit -------------------------------------------

namespace {

// Runs f on every rank; true when every rank threw std::invalid_argument.
template <class F>
bool every_rank_throws(F&& f, MPI_Comm comm = MPI_COMM_WORLD) {
  bool threw = false;
  try {
    f();
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  return on_all_ranks(threw, comm);
}

}  // namespace

TEMPLATE_TEST_CASE("a counted mask counts each replica on the rank chosen for it", "[mpi][counted]", float, double) {
  using T = TestType;
  const place me = where(MPI_COMM_WORLD);
  INFO(describe(MPI_COMM_WORLD));
  const auto exact = gradclip::norm_accuracy::exact;
  for (double p : {1.0, 2.0, ref::inf}) {
    INFO("p = " << p);
    const model_t<T> sharded = make_model<T>(71, 12);
    const model_t<T> replicated = make_model<T>(72, 5, 3.0);  // every rank holds all of these
    const auto pieces = random_sharding(sharded, me.size, 73);
    std::vector<gradclip::buffer_view<const T>> whole;
    for (const auto& b : sharded) whole.emplace_back(b.data(), b.size());
    for (const auto& b : replicated) whole.emplace_back(b.data(), b.size());
    const double norm = gradclip::global_norm(whole, p, exact);

    // Replica j counts on rank (j * 7 + 3) % size: not always rank 0.
    model_t<T> got_s = sharded, got_r = replicated;
    auto group = shard_of(got_s, pieces, me.rank);
    gradclip::mpi::counted_buffers counted{std::vector<bool>(group.size(), true)};
    for (std::size_t j = 0; j < replicated.size(); ++j) {
      group.emplace_back(got_r[j].data(), got_r[j].size());
      counted.flags.push_back(static_cast<int>((j * 7 + 3) % static_cast<std::size_t>(me.size)) == me.rank);
    }
    const double g = gradclip::mpi::global_norm(group, counted, MPI_COMM_WORLD, p, exact);
    CHECK(ref::rel_err(g, norm) <= 1e-12);
    CHECK(same_on_all_ranks(g));
    std::vector<double> norms;
    CHECK(same_class(gradclip::mpi::global_norm(group, counted, MPI_COMM_WORLD, p, norms, exact), g));
    CHECK(norms.size() == group.size());

    // The replicated form is the counted mask counted_from_replicated builds.
    std::vector<bool> rep(group.size(), false);
    for (std::size_t j = 0; j < replicated.size(); ++j) rep[group.size() - 1 - j] = true;
    const auto from = gradclip::mpi::counted_from_replicated(rep, MPI_COMM_WORLD);
    REQUIRE(from.flags.size() == rep.size());
    bool as_documented = true;
    for (std::size_t i = 0; i < rep.size(); ++i) as_documented = as_documented && from.flags[i] == (me.rank == 0 || !rep[i]);
    CHECK(as_documented);
    CHECK(same_class(gradclip::mpi::global_norm(group, rep, MPI_COMM_WORLD, p, exact),
                     gradclip::mpi::global_norm(group, from, MPI_COMM_WORLD, p, exact)));

    gradclip::clip_options options{p, 1e-6, gradclip::nonfinite::propagate};
    options.accuracy = exact;
    const auto r = gradclip::mpi::clip_by_global_norm(group, counted, norm / 2, MPI_COMM_WORLD, options);
    CHECK(r.clipped);
    CHECK(ref::rel_err(r.total_norm, norm) <= 1e-12);
    CHECK(same_on_all_ranks(r.scale));
    // Every buffer, counted or not, scaled by the same coefficient.
    model_t<T> want_r = replicated;
    gradclip::clip_with_norm(want_r, norm / 2, r.total_norm, options);
    CHECK(same_model_bits(got_r, want_r));
  }
  // A mask of the wrong size throws on every rank.
  model_t<T> m = make_model<T>(74, 3);
  const gradclip::mpi::counted_buffers wrong{std::vector<bool>(me.rank == 0 ? 2 : 3, true)};
  CHECK(every_rank_throws([&] { gradclip::mpi::clip_by_global_norm(m, wrong, 1.0, MPI_COMM_WORLD); }));
}

// TP x DP x EP: dense layers sharded over a tensor-parallel group of 2 (1 on odd
// world sizes) and copied across the data-parallel groups; experts whole, one per
// rank in turn over the world. Dense partials reduce over the TP group, expert
// partials over the world; the combined norm is the norm of one copy of everything.
TEMPLATE_TEST_CASE("categories: each reduced over its own communicator, then combined", "[mpi][categories]", float,
                   double) {
  using T = TestType;
  const place world = where(MPI_COMM_WORLD);
  INFO(describe(MPI_COMM_WORLD));
  const int tp_size = world.size % 2 == 0 ? 2 : 1;
  MPI_Comm tp = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, world.rank / tp_size, world.rank, &tp);
  const place me_tp = where(tp);
  const auto exact = gradclip::norm_accuracy::exact;
  for (double p : {1.0, 2.0, 3.0, ref::inf}) {
    INFO("p = " << p);
    const model_t<T> dense = make_model<T>(81, 10);
    const model_t<T> experts = make_model<T>(82, 7, 4.0);
    const auto dense_pieces = random_sharding(dense, tp_size, 83);
    std::vector<gradclip::buffer_view<const T>> whole;
    for (const auto& b : dense) whole.emplace_back(b.data(), b.size());
    for (const auto& b : experts) whole.emplace_back(b.data(), b.size());
    const double norm = gradclip::global_norm(whole, p, exact);

    model_t<T> got_d = dense, got_e = experts;
    auto group = shard_of(got_d, dense_pieces, me_tp.rank);
    gradclip::mpi::category dense_cat{tp, std::vector<bool>(group.size(), true)};
    gradclip::mpi::category expert_cat{MPI_COMM_WORLD, std::vector<bool>(group.size(), false)};
    std::vector<std::size_t> mine;
    for (std::size_t e = 0; e < experts.size(); ++e) {
      if (static_cast<int>(e % static_cast<std::size_t>(world.size)) != world.rank) continue;
      group.emplace_back(got_e[e].data(), got_e[e].size());
      dense_cat.members.push_back(false);
      expert_cat.members.push_back(true);
      mine.push_back(e);
    }
    const std::vector<gradclip::mpi::category> cats{dense_cat, expert_cat};
    const double g = gradclip::mpi::global_norm(group, cats, p, exact);
    CHECK(ref::rel_err(g, norm) <= 1e-12);
    CHECK(same_on_all_ranks(g));
    if (p == 2.0 && world.size > 1 && tp_size < world.size) {
      // Dense over the world instead: every data-parallel copy counts (the classic double count).
      const std::vector<gradclip::mpi::category> wrong{{MPI_COMM_WORLD, dense_cat.members}, expert_cat};
      CHECK(gradclip::mpi::global_norm(group, wrong, p, exact) > norm * (1 + 1e-9));
    }
    gradclip::clip_options options{p, 1e-6, gradclip::nonfinite::propagate};
    options.accuracy = exact;
    const auto r = gradclip::mpi::clip_by_global_norm(group, cats, norm / 4, options);
    CHECK(r.clipped);
    CHECK(ref::rel_err(r.total_norm, norm) <= 1e-12);
    CHECK(same_on_all_ranks(r.scale));
    model_t<T> want_e = experts;
    gradclip::clip_with_norm(want_e, norm / 4, r.total_norm, options);
    bool experts_ok = true;
    for (std::size_t e : mine) {  // (an empty expert has no data to compare: memcmp must not see its null)
      experts_ok = experts_ok && (got_e[e].empty() ||
                                  std::memcmp(got_e[e].data(), want_e[e].data(), got_e[e].size() * sizeof(T)) == 0);
    }
    CHECK(experts_ok);
  }
  // A buffer in two categories, a members mask of the wrong size, a bad norm_type:
  // every rank throws, nothing written.
  model_t<T> m = make_model<T>(84, 4);
  const model_t<T> before = m;
  std::vector<gradclip::mpi::category> twice{{tp, std::vector<bool>(4, true)}, {MPI_COMM_WORLD, std::vector<bool>(4, false)}};
  twice[1].members[2] = world.rank == 0;  // on rank 0 only: its TP group and the world see it
  CHECK(every_rank_throws([&] { gradclip::mpi::clip_by_global_norm(m, twice, 1e-3); }));
  const std::vector<gradclip::mpi::category> short_mask{{MPI_COMM_WORLD, std::vector<bool>(3, true)}};
  CHECK(every_rank_throws([&] { gradclip::mpi::global_norm(m, short_mask); }));
  const std::vector<gradclip::mpi::category> one{{MPI_COMM_WORLD, std::vector<bool>(4, true)}};
  CHECK(every_rank_throws([&] { gradclip::mpi::global_norm(m, one, world.rank == 0 ? -1.0 : 2.0); }));
  CHECK(every_rank_throws([&] { gradclip::mpi::global_norm(m, std::vector<gradclip::mpi::category>{}); }));
  CHECK(same_model_bits(m, before));
  // One category over the world is the counted-mask call.
  CHECK(same_class(gradclip::mpi::global_norm(m, one), gradclip::mpi::global_norm(m, MPI_COMM_WORLD)));
  MPI_Comm_free(&tp);
}

TEST_CASE("audit_ownership finds a piece counted twice, one counted nowhere, copies that differ", "[mpi][audit]") {
  const place me = where(MPI_COMM_WORLD);
  INFO(describe(MPI_COMM_WORLD));
  const model_t<double> sharded = make_model<double>(91, 9);
  model_t<double> shared;  // held by every rank; none empty
  for (std::size_t j = 0; j < 4; ++j) shared.push_back(ref::random_values<double>(50 + 30 * j, 920 + j, 2.0));
  // Shard pieces get ids 1000 + their index in the piece list; the shared buffers 10 + j.
  const auto pieces = random_sharding(sharded, me.size, 93);
  model_t<double> got = sharded, rep = shared;
  std::vector<gradclip::buffer_view<double>> group;
  std::vector<std::uint64_t> ids;
  gradclip::mpi::counted_buffers counted;
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    if (pieces[k].owner != me.rank) continue;
    group.emplace_back(got[pieces[k].buffer].data() + pieces[k].begin, pieces[k].end - pieces[k].begin);
    ids.push_back(1000 + k);
    counted.flags.push_back(true);
  }
  for (std::size_t j = 0; j < shared.size(); ++j) {
    group.emplace_back(rep[j].data(), rep[j].size());
    ids.push_back(10 + j);
    counted.flags.push_back(static_cast<int>(j % static_cast<std::size_t>(me.size)) == me.rank);
  }
  std::vector<gradclip::buffer_view<const double>> whole;
  for (const auto& b : sharded) whole.emplace_back(b.data(), b.size());
  for (const auto& b : shared) whole.emplace_back(b.data(), b.size());
  const double norm = gradclip::global_norm(whole, 2.0, gradclip::norm_accuracy::exact);
  namespace gm = gradclip::mpi;
  using report = gm::ownership_report;

  // Right: each piece once.
  const auto good = gm::audit_ownership(group, ids, counted, MPI_COMM_WORLD);
  CHECK(good.ok());
  CHECK(good.counted_twice == report::none);
  CHECK(good.never_counted == report::none);
  CHECK(good.copies_differ == report::none);
  CHECK(good.distinct == pieces.size() + shared.size());
  CHECK(good.buffers == pieces.size() + shared.size() * static_cast<std::size_t>(me.size));
  CHECK(same_class(good.counted_norm, gm::global_norm(group, counted, MPI_COMM_WORLD)));
  CHECK(ref::rel_err(good.counted_norm, norm) <= 1e-12);
  CHECK(ref::rel_err(good.deduplicated_norm, norm) <= 1e-12);
  CHECK(good.summary().find("ownership ok") == 0);

  // Planted: shared buffer 12 counted on the next rank as well as its owner (on
  // one rank, held twice there: the same buffer appended again, counted).
  const int last = me.size - 1;
  auto g2 = group;
  auto ids2 = ids;
  auto c2 = counted;
  const std::size_t at12 = group.size() - shared.size() + 2;
  const int owner12 = static_cast<int>(2 % static_cast<std::size_t>(me.size));
  const int extra12 = (owner12 + 1) % me.size;
  if (me.size > 1) {
    if (me.rank == extra12) c2.flags[at12] = true;
  } else {
    g2.push_back(group[at12]);
    ids2.push_back(12);
    c2.flags.push_back(true);
  }
  const auto twice = gm::audit_ownership(g2, ids2, c2, MPI_COMM_WORLD);
  CHECK_FALSE(twice.ok());
  CHECK(twice.counted_twice == 12);
  CHECK(twice.counted_twice_ranks[0] == std::min(owner12, extra12));
  CHECK(twice.counted_twice_ranks[1] == std::max(owner12, extra12));
  CHECK(twice.never_counted == report::none);
  CHECK(twice.counted_norm > norm * (1 + 1e-9));  // the double count the audit explains
  CHECK(ref::rel_err(twice.deduplicated_norm, norm) <= 1e-12);
  CHECK(twice.summary().find("piece 12 counted twice") != std::string::npos);

  // Planted: shared buffer 11 counted nowhere.
  auto c3 = counted;
  c3.flags[group.size() - shared.size() + 1] = false;
  const auto never = gm::audit_ownership(group, ids, c3, MPI_COMM_WORLD);
  CHECK(never.never_counted == 11);
  CHECK(never.never_counted_rank == 0);
  CHECK(never.counted_twice == report::none);
  CHECK(never.counted_norm < norm * (1 - 1e-12));

  // Planted: the last rank's copy of shared buffer 13 drifted.
  if (me.size > 1) {
    if (me.rank == last) rep[3][0] += 1.0;
    const auto drift = gm::audit_ownership(group, ids, counted, MPI_COMM_WORLD);
    CHECK(drift.copies_differ == 13);
    CHECK_FALSE(drift.ok());
    if (me.rank == last) rep[3][0] -= 1.0;
  }

  // Bad arguments on one rank: every rank throws.
  auto short_ids = ids;
  if (me.rank == last) short_ids.pop_back();
  CHECK(every_rank_throws([&] { gm::audit_ownership(group, short_ids, counted, MPI_COMM_WORLD); }));
  CHECK(every_rank_throws([&] { gm::audit_ownership(group, ids, counted, MPI_COMM_WORLD, me.rank == 0 ? 0.0 : 2.0); }));
}
