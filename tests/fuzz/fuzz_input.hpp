// Decoding a fuzz input into a test case. Parameters are read one byte at a time
// from the END of the input (missing bytes read as 0), the element bytes are the
// rest, at the front, used cyclically so that short inputs still make long buffers.
// tests/fuzz/make_corpus.cpp writes seeds in this format (encode_params).
//
//   u8  shape (% 3: views, maps, tuple) and type (/ 3 % 4: float, double, half, bfloat16)
//   u8  buffer count (% 9; the tuple always has 4)
//   u16 size of each buffer (% 4097; the group is cut at 4096 elements in all)
//   u8  offset (% 16), stride (/ 16 % 3 + 1, maps only), gap between buffers (/ 48 % 3)
//   u8  special injections k (% 9), then k times: u16 element index, u8 class
//   ... target-specific parameters
#ifndef GRADCLIP_TESTS_FUZZ_FUZZ_INPUT_HPP
#define GRADCLIP_TESTS_FUZZ_FUZZ_INPUT_HPP

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "invariants.hpp"

namespace fz {

struct tail_reader {
  const std::uint8_t* data;
  std::size_t size;  // bytes not yet consumed, from the front

  std::uint8_t u8() { return size ? data[--size] : 0; }
  std::uint16_t u16() {
    const std::uint16_t low = u8();
    return static_cast<std::uint16_t>(low | (u8() << 8));
  }
  std::uint64_t u64() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(u8()) << (8 * i);
    return v;
  }
  double f64() {
    const std::uint64_t u = u64();
    double d;
    std::memcpy(&d, &u, sizeof d);
    return d;
  }
};

// Bit patterns of every value class, per element type.
constexpr int special_count = 16;
inline std::uint64_t special_bits(etype t, int k) {
  // qNaN, -qNaN, sNaN, +inf, -inf, +0, -0, max, -max, min normal, denorm min,
  // largest subnormal, 1, -1, -denorm min, NaN with payload
  static const std::uint64_t f32[special_count] = {0x7fc00000, 0xffc00000, 0x7f800001, 0x7f800000, 0xff800000, 0,
                                                   0x80000000, 0x7f7fffff, 0xff7fffff, 0x00800000, 1, 0x007fffff,
                                                   0x3f800000, 0xbf800000, 0x80000001, 0x7fd23456};
  static const std::uint64_t f64[special_count] = {
      0x7ff8000000000000ULL, 0xfff8000000000000ULL, 0x7ff0000000000001ULL, 0x7ff0000000000000ULL,
      0xfff0000000000000ULL, 0,                     0x8000000000000000ULL, 0x7fefffffffffffffULL,
      0xffefffffffffffffULL, 0x0010000000000000ULL, 1,                     0x000fffffffffffffULL,
      0x3ff0000000000000ULL, 0xbff0000000000000ULL, 0x8000000000000001ULL, 0x7ff8123456789abcULL};
  static const std::uint64_t f16[special_count] = {0x7e00, 0xfe00, 0x7c01, 0x7c00, 0xfc00, 0,      0x8000, 0x7bff,
                                                   0xfbff, 0x0400, 1,      0x03ff, 0x3c00, 0xbc00, 0x8001, 0x7e55};
  static const std::uint64_t b16[special_count] = {0x7fc0, 0xffc0, 0x7f81, 0x7f80, 0xff80, 0,      0x8000, 0x7f7f,
                                                   0xff7f, 0x0080, 1,      0x007f, 0x3f80, 0xbf80, 0x8001, 0x7fd5};
  k %= special_count;
  switch (t) {
    case etype::f32: return f32[k];
    case etype::f64: return f64[k];
    case etype::f16: return f16[k];
    default: return b16[k];
  }
}

constexpr std::size_t max_elements = 4096;

struct injection {
  std::size_t index;
  int cls;
};

struct decoded_case {
  fcase c;
  std::vector<injection> specials;
};

// The shape of the case; its elements come later (fill_elements), from the bytes
// left once every parameter has been read.
inline decoded_case decode_case(tail_reader& in) {
  const std::uint8_t a = in.u8();
  const shape k = static_cast<shape>(a % 3);
  const etype t = static_cast<etype>((a / 3) % 4);
  fcase c;
  std::size_t total = 0;
  auto size = [&] {
    std::size_t n = in.u16() % (max_elements + 1);
    if (total + n > max_elements) n = max_elements - total;
    total += n;
    return n;
  };
  if (k == shape::tuple) {
    in.u8();  // the buffer count byte, unused: the tuple has four
    std::size_t sizes[4], offsets[4];
    for (auto& n : sizes) n = size();
    const std::uint8_t o = in.u8();
    for (int i = 0; i < 4; ++i) offsets[i] = (o >> i) % 16;
    c = fcase::mixed(sizes, offsets);
  } else {
    std::vector<std::size_t> sizes(in.u8() % 9);
    for (auto& n : sizes) n = size();
    const std::uint8_t o = in.u8();
    c = fcase::homogeneous(t, k, sizes, o % 16, 1 + (o / 16) % 3, (o / 48) % 3);
  }
  std::vector<injection> specials(in.u8() % 9);
  for (auto& s : specials) {
    s.index = in.u16();
    s.cls = in.u8();
  }
  return {std::move(c), std::move(specials)};
}

// The elements: the bytes not read as parameters, cyclically, then the specials,
// placed by index over the whole group.
inline fcase fill_elements(decoded_case d, tail_reader& in) {
  fcase& c = d.c;
  const std::size_t total = c.elements();
  const std::uint8_t* bytes = in.data;
  const std::size_t length = in.size;
  std::size_t pos = 0;
  for (std::size_t i = 0; i < c.count(); ++i) {
    const std::size_t width = c.buffers[i].type == etype::f64 ? 8 : (c.buffers[i].type == etype::f32 ? 4 : 2);
    for (std::size_t j = 0; j < c.buffers[i].n; ++j) {
      std::uint64_t u = 0;
      for (std::size_t b = 0; b < width && length; ++b) u |= static_cast<std::uint64_t>(bytes[(pos + b) % length]) << (8 * b);
      pos += width;
      c.set_bits(i, j, u);
    }
  }
  if (total > 0) {
    for (const auto& s : d.specials) {
      std::size_t at = s.index % total;
      for (std::size_t i = 0; i < c.count(); ++i) {
        if (at < c.buffers[i].n) {
          c.set_bits(i, at, special_bits(c.buffers[i].type, s.cls));
          break;
        }
        at -= c.buffers[i].n;
      }
    }
  }
  in.size = 0;  // the element bytes are used up
  return std::move(d.c);
}

// A double parameter: one of the interesting values, or (selector >= 224) any
// 8 bytes.
inline double decode_double(tail_reader& in, const double* table, std::size_t n) {
  const std::uint8_t s = in.u8();
  if (s >= 224) return in.f64();
  return table[s % n];
}

[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "\n==== gradclip invariant violated ====\n%s\n", what.c_str());
  std::abort();
}

inline void require(const std::string& what) {
  if (!what.empty()) fail(what);
}

}  // namespace fz

#endif  // GRADCLIP_TESTS_FUZZ_FUZZ_INPUT_HPP
