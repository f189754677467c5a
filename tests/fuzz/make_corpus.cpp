// Writes the seed corpora of the fuzz targets: tests/fuzz/make_corpus.sh builds and
// runs this. Seeds are small and each aims at a region of the input space: value
// classes, lengths around the kernels' block of 4096, misalignment, strides, the
// mixed tuple, every clipping API and policy, and saved states of every stateful
// clipper (raw records and wrapped payloads).
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "stateful.hpp"

namespace {

namespace fs = std::filesystem;

// Parameters in the order the target reads them (from the end of the input).
struct params {
  std::vector<std::uint8_t> bytes;
  params& u8(unsigned v) {
    bytes.push_back(static_cast<std::uint8_t>(v));
    return *this;
  }
  params& u16(unsigned v) { return u8(v & 0xff).u8(v >> 8); }
  params& f64(double d) {
    std::uint64_t u;
    std::memcpy(&u, &d, 8);
    for (int i = 0; i < 8; ++i) u8((u >> (8 * i)) & 0xff);
    return *this;
  }
  std::string input(const std::string& elements) const {
    std::string s = elements;
    for (auto it = bytes.rbegin(); it != bytes.rend(); ++it) s.push_back(static_cast<char>(*it));
    return s;
  }
};

void write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

template <class T>
std::string elements(std::initializer_list<double> values) {
  std::string s;
  for (double v : values) {
    const T x = fz::nearest<T>(v);
    s.append(reinterpret_cast<const char*>(&x), sizeof x);
  }
  return s;
}

// The case part: shape/type byte, count, sizes, offset/stride/gap, specials.
params case_params(int shape, int type, std::vector<unsigned> sizes, unsigned layout,
                   std::vector<std::pair<unsigned, unsigned>> specials = {}) {
  params p;
  p.u8(static_cast<unsigned>(shape + 3 * type));
  p.u8(static_cast<unsigned>(sizes.size()));
  for (unsigned n : sizes) p.u16(n);
  p.u8(layout);
  p.u8(static_cast<unsigned>(specials.size()));
  for (auto [index, cls] : specials) p.u16(index).u8(cls);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  const fs::path root = argc > 1 ? fs::path(argv[1]) : fs::path("corpus");
  const std::string ordinary = elements<float>({0.5, -1.25, 3.0, 1e-3, -7.5, 0.1, 2.0, -0.0});
  const std::string doubles = elements<double>({0.5, -1.25, 3.0, 1e-3, -7.5, 1e300, 1e-300, 2.0});

  // ---- fuzz_kernels: case, norm type, alignment check, value API, lo, hi ----------
  struct kseed {
    const char* name;
    params p;
    std::string data;
  };
  std::vector<kseed> kernels = {
      {"float_small_l2", case_params(0, 0, {7, 1, 0}, 0x03), ordinary},
      {"double_block_edges_l1", case_params(0, 1, {4095, 1}, 0x05), doubles},
      {"half_maps_strided_linf", case_params(1, 2, {33, 300}, 0x17), elements<fz::half>({1, -60000, 6e-8, 0.5})},
      {"bf16_specials", case_params(0, 3, {64}, 0x01, {{3, 0}, {9, 3}, {20, 10}}), elements<fz::bf16>({1e30, -2, 0.25})},
      {"tuple_mixed", case_params(2, 0, {5, 4096, 9, 17}, 0x5a, {{4100, 4}}), ordinary},
      {"float_subnormal_p3", case_params(0, 0, {100, 100, 100}, 0x09, {{0, 10}, {150, 11}, {299, 14}}),
       elements<float>({1e-40, -1e-45, 1e-39})},
      {"double_huge_overflow", case_params(0, 1, {2, 3}, 0x00), elements<double>({1.7e308, -1.7e308, 1e308})},
      {"empty_group", case_params(0, 0, {}, 0x00), ""},
  };
  const int norm_sel[] = {0, 1, 2, 3, 4, 5, 6, 7};
  for (std::size_t i = 0; i < kernels.size(); ++i) {
    params p = kernels[i].p;
    p.u8(static_cast<unsigned>(norm_sel[i % 8])).u8(1).u8(static_cast<unsigned>(i % 4)).u8(static_cast<unsigned>(i)).u8(
        static_cast<unsigned>(i + 3));
    write(root / "kernels", kernels[i].name, p.input(kernels[i].data));
  }
  {  // raw norm type and raw bounds
    params p = case_params(1, 0, {40}, 0x22);
    p.u8(224).f64(2.5).u8(0).u8(0).u8(224).f64(-0.3).u8(224).f64(0.7);
    write(root / "kernels", "raw_p_and_bounds", p.input(ordinary));
  }

  // ---- fuzz_clip: case, API, norm type, eps, max_norm, policy, total, limits ------
  int k = 0;
  for (int api = 0; api < 6; ++api) {
    for (int policy = 0; policy < 3; ++policy) {
      params p = case_params(api % 3, (api + policy) % 4, {static_cast<unsigned>(3 + 40 * api), 5, 4090},
                             static_cast<unsigned>(api * 7 + policy), policy == 1 ? std::vector<std::pair<unsigned, unsigned>>{{7, 0}}
                                                                                   : std::vector<std::pair<unsigned, unsigned>>{});
      p.u8(static_cast<unsigned>(api)).u8(static_cast<unsigned>(api % 4)).u8(static_cast<unsigned>(policy)).u8(
          static_cast<unsigned>(k % 11));
      p.u8(static_cast<unsigned>(policy)).u8(static_cast<unsigned>(k % 8)).u8(static_cast<unsigned>(k));
      for (int j = 0; j < 9; ++j) p.u8(static_cast<unsigned>(j + k));
      write(root / "clip", "api" + std::to_string(api) + "_policy" + std::to_string(policy), p.input(api % 2 ? doubles : ordinary));
      ++k;
    }
  }
  {  // coefficient below FLT_MIN: float norm ~1e35 clipped to 1e-10
    params p = case_params(0, 0, {1000}, 0x00);
    p.u8(0).u8(0).u8(0).u8(224).f64(1e-10).u8(0).u8(0).u8(0);
    for (int j = 0; j < 9; ++j) p.u8(0);
    write(root / "clip", "float_below_flt_min", p.input(elements<float>({1e35, -2e35, 5e34})));
  }

  // ---- fuzz_state: selector, then a raw record or a payload -------------------------
  int index = 0;
  fz::for_each_stateful([&](auto* tag) {
    using C = std::remove_pointer_t<decltype(tag)>;
    const int i = index++;
    C c = fz::stateful<C>::make();
    std::vector<float> g{0.5f, -2.0f, 3.0f};
    std::vector<float> bad{std::numeric_limits<float>::infinity(), 1.0f};
    const std::string fresh = fz::saved(c);
    for (int s = 0; s < 7; ++s) {
      try {
        if (s == 5) {
          fz::stateful<C>::step(c, bad, gradclip::norm(bad));
        } else {
          for (float& x : g) x *= 1.5f;
          fz::stateful<C>::step(c, g, gradclip::norm(g));
        }
      } catch (const std::exception&) {
      }
    }
    const std::string used = fz::saved(c);
    const std::string sel_raw(1, static_cast<char>(i));
    const std::string sel_wrapped(1, static_cast<char>(0x10 | i));
    const std::string name = std::to_string(i);
    write(root / "state", name + "_fresh_raw", sel_raw + fresh);
    write(root / "state", name + "_used_raw", sel_raw + used);
    write(root / "state", name + "_used_wrapped", sel_wrapped + fz::payload_of(used));
    write(root / "state", name + "_truncated_raw", sel_raw + used.substr(0, used.size() / 2));
  });
  std::printf("corpus written to %s\n", root.string().c_str());
  return 0;
}
