// Every buffer form and every group form the API accepts gives the same results.
#include <array>
#include <functional>
#include <list>
#include <tuple>
#include <vector>

#include <gradclip/gradclip.hpp>
#if GRADCLIP_HAS_SPAN
#include <span>
#endif

#include "catch.hpp"
#include "reference.hpp"

namespace {
const std::vector<float> base = ref::random_values<float>(64, 77, 10.0);
const long double base_norm = ref::norm(ref::values(base.data(), base.size()), 2.0);

template <class Buffer>
void check_buffer(Buffer&& b) {
  CHECK(ref::rel_err(gradclip::norm(b), base_norm) <= ref::norm_bound<float>(2.0));
  const auto r = gradclip::clip_by_norm(std::forward<Buffer>(b), 1.0);
  CHECK(r.clipped);
  CHECK(gradclip::norm(b) == Approx(1.0).epsilon(1e-6));
}
}  // namespace

TEST_CASE("buffer forms: Eigen objects, standard containers, raw memory", "[forms]") {
  STATIC_REQUIRE(gradclip::is_buffer_v<Eigen::VectorXf>);
  STATIC_REQUIRE(gradclip::is_buffer_v<std::vector<double>>);
  STATIC_REQUIRE(gradclip::is_buffer_v<gradclip::buffer_view<Eigen::half>>);
  STATIC_REQUIRE_FALSE(gradclip::is_buffer_v<std::vector<int>>);
  STATIC_REQUIRE_FALSE(gradclip::is_buffer_v<std::vector<std::vector<float>>>);
  STATIC_REQUIRE(gradclip::is_group_v<std::vector<std::vector<float>>>);
  STATIC_REQUIRE_FALSE(gradclip::is_group_v<std::vector<float>>);

  {
    Eigen::VectorXf v = Eigen::Map<const Eigen::VectorXf>(base.data(), 64);
    check_buffer(v);
  }
  {
    Eigen::MatrixXf m = Eigen::Map<const Eigen::MatrixXf>(base.data(), 8, 8);
    check_buffer(m);
  }
  {
    Eigen::ArrayXXf a = Eigen::Map<const Eigen::ArrayXXf>(base.data(), 16, 4);
    check_buffer(a);
  }
  {
    std::vector<float> copy = base;
    check_buffer(Eigen::Map<Eigen::VectorXf>(copy.data(), 64));  // an rvalue Map
  }
  {
    Eigen::MatrixXf big = Eigen::MatrixXf::Zero(20, 20);
    big.block(3, 5, 8, 8) = Eigen::Map<const Eigen::MatrixXf>(base.data(), 8, 8);
    check_buffer(big.block(3, 5, 8, 8));
    CHECK(big.block(0, 0, 3, 20).isZero());
    Eigen::Ref<Eigen::MatrixXf> r = big.block(3, 5, 8, 8);
    CHECK(gradclip::norm(r) == Approx(1.0).epsilon(1e-6));
  }
  {
    std::vector<float> v = base;
    check_buffer(v);
  }
  {
    std::array<float, 64> a{};
    std::copy(base.begin(), base.end(), a.begin());
    check_buffer(a);
  }
  {
    float raw[64];
    std::copy(base.begin(), base.end(), raw);
    check_buffer(raw);
  }
  {
    std::vector<float> v = base;
    check_buffer(gradclip::buffer_view{v.data(), v.size()});
  }
#if GRADCLIP_HAS_SPAN
  {
    std::vector<float> v = base;
    check_buffer(std::span<float>(v));
    STATIC_REQUIRE(gradclip::is_buffer_v<std::span<const float>>);
  }
#endif
}

TEST_CASE("read-only buffers can be measured", "[forms]") {
  const Eigen::VectorXf v = Eigen::Map<const Eigen::VectorXf>(base.data(), 64);
  CHECK(ref::rel_err(gradclip::norm(v), base_norm) <= ref::norm_bound<float>(2.0));
  CHECK(ref::rel_err(gradclip::norm(Eigen::Map<const Eigen::VectorXf>(base.data(), 64)), base_norm) <= ref::norm_bound<float>(2.0));
  CHECK(ref::rel_err(gradclip::norm(gradclip::buffer_view{base.data(), base.size()}), base_norm) <= ref::norm_bound<float>(2.0));
}

TEST_CASE("group forms: ranges, maps over one arena, pointers, reference_wrappers, tuples", "[forms][group]") {
  // One arena cut into three Maps, as an optimizer's flat gradient buffer.
  std::vector<float> arena = base;
  std::vector<Eigen::Map<Eigen::VectorXf>> maps;
  maps.emplace_back(arena.data(), 10);
  maps.emplace_back(arena.data() + 10, 50);
  maps.emplace_back(arena.data() + 60, 4);
  CHECK(ref::rel_err(gradclip::global_norm(maps), base_norm) <= ref::norm_bound<float>(2.0));
  CHECK(gradclip::clip_by_global_norm(maps, 1.0).clipped);
  CHECK(gradclip::norm(arena) == Approx(1.0).epsilon(1e-6));

  std::vector<Eigen::VectorXf> owned{Eigen::Map<const Eigen::VectorXf>(base.data(), 30),
                                     Eigen::Map<const Eigen::VectorXf>(base.data() + 30, 34)};
  CHECK(ref::rel_err(gradclip::global_norm(owned), base_norm) <= ref::norm_bound<float>(2.0));

  std::vector<Eigen::VectorXf*> pointers{&owned[0], &owned[1]};
  CHECK(ref::rel_err(gradclip::global_norm(pointers), base_norm) <= ref::norm_bound<float>(2.0));

  std::vector<std::reference_wrapper<Eigen::VectorXf>> refs{owned[0], owned[1]};
  CHECK(ref::rel_err(gradclip::global_norm(refs), base_norm) <= ref::norm_bound<float>(2.0));

  std::list<std::vector<float>> linked{std::vector<float>(base.begin(), base.begin() + 5),
                                       std::vector<float>(base.begin() + 5, base.end())};
  CHECK(ref::rel_err(gradclip::global_norm(linked), base_norm) <= ref::norm_bound<float>(2.0));

  std::vector<gradclip::buffer_view<const float>> views{{base.data(), 32}, {base.data() + 32, 32}};
  CHECK(ref::rel_err(gradclip::global_norm(views), base_norm) <= ref::norm_bound<float>(2.0));

#if GRADCLIP_HAS_SPAN
  std::vector<float> copy = base;
  std::vector<std::span<float>> spans{std::span<float>(copy).first(20), std::span<float>(copy).subspan(20)};
  CHECK(ref::rel_err(gradclip::global_norm(spans), base_norm) <= ref::norm_bound<float>(2.0));
  CHECK(gradclip::clip_by_global_norm(spans, 1.0).clipped);
#endif

  CHECK(gradclip::clip_by_global_norm(pointers, 1.0).clipped);
  CHECK(gradclip::global_norm(owned) == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("a tuple group mixes element types and shapes", "[forms][group]") {
  Eigen::MatrixXd w = Eigen::MatrixXd::Constant(3, 4, 2.0);  // 12 * 4 = 48
  Eigen::VectorXf b = Eigen::VectorXf::Constant(4, 3.0f);     // 4 * 9 = 36
  std::vector<Eigen::half> h(4, Eigen::half(2.0f));           // 4 * 4 = 16
  std::vector<Eigen::bfloat16> bf;                            // empty
  CHECK(gradclip::global_norm(std::tie(w, b, h, bf)) == 10.0);
  const auto r = gradclip::clip_by_global_norm(std::tie(w, b, h, bf), 5.0, {2.0, 0.0, gradclip::nonfinite::propagate});
  CHECK(r.clipped);
  CHECK(r.scale == 0.5);
  CHECK((w.array() == 1.0).all());
  CHECK((b.array() == 1.5f).all());
  CHECK(static_cast<float>(h[0]) == 1.0f);
}
