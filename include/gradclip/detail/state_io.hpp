// gradclip internals: the versioned, checksummed binary record every stateful
// clipper saves and loads.
//
// Record layout (all integers little-endian; doubles as their IEEE-754 bits, so a
// loaded state is bit-identical to the saved one):
//   "GCLP"  u32 format_version  u32 kind_length  kind bytes  u32 state_version
//   u64 payload_length  payload bytes  u64 FNV-1a-64 of everything before it
// A reader checks the whole record (magic, format, kind, version, length,
// checksum) before handing out a single field, and every field read is bounds
// checked, so truncated, corrupted or foreign data throws gradclip::state_error.
// Clippers parse into a fresh object and swap it in only when everything parsed:
// a failed load leaves the clipper as it was.
#ifndef GRADCLIP_DETAIL_STATE_IO_HPP
#define GRADCLIP_DETAIL_STATE_IO_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <istream>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "../errors.hpp"

namespace gradclip::detail {

inline constexpr std::uint32_t state_format_version = 1;
inline constexpr std::uint64_t max_state_payload = std::uint64_t{1} << 32;  // 4 GiB: anything larger is corrupt

inline std::uint64_t fnv1a(const std::string& bytes) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

class state_writer {
 public:
  state_writer(std::string_view kind, std::uint32_t version) : kind_(kind), version_(version) {}

  void put_u64(std::uint64_t v) { append(payload_, v, 8); }
  void put_double(double v) {
    std::uint64_t u;
    std::memcpy(&u, &v, 8);
    put_u64(u);
  }
  void put_bool(bool v) { payload_.push_back(v ? '\1' : '\0'); }
  void put_doubles(const std::vector<double>& v) {
    put_u64(v.size());
    for (double x : v) put_double(x);
  }

  // Writes the whole record; throws state_error if the stream fails.
  void write(std::ostream& out) const {
    std::string record = "GCLP";
    append(record, state_format_version, 4);
    append(record, kind_.size(), 4);
    record += kind_;
    append(record, version_, 4);
    append(record, payload_.size(), 8);
    record += payload_;
    append(record, fnv1a(record), 8);
    out.write(record.data(), static_cast<std::streamsize>(record.size()));
    if (!out) throw state_error("gradclip: could not write the " + kind_ + " state");
  }

 private:
  static void append(std::string& s, std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }

  std::string kind_;
  std::uint32_t version_;
  std::string payload_;
};

class state_reader {
 public:
  // Reads and verifies one record of the given kind and version.
  state_reader(std::istream& in, std::string_view kind, std::uint32_t version)
      : state_reader(in, kind, version, version) {}

  // The same, accepting any version in [oldest, newest] (version() says which).
  state_reader(std::istream& in, std::string_view kind, std::uint32_t oldest, std::uint32_t newest) : kind_(kind) {
    std::string record = take(in, 4, "the header");
    if (record != "GCLP") fail("not a gradclip state (bad magic)");
    const std::string format = take(in, 4, "the header");
    record += format;
    if (number(format) != state_format_version) {
      fail("unsupported state format version " + std::to_string(number(format)));
    }
    const std::string kind_length = take(in, 4, "the header");
    record += kind_length;
    if (number(kind_length) > 64) fail("corrupted header (kind name too long)");
    const std::string stored_kind = take(in, static_cast<std::size_t>(number(kind_length)), "the header");
    record += stored_kind;
    if (stored_kind != kind) fail("this is a '" + stored_kind + "' state, not a '" + kind_ + "' state");
    const std::string stored_version = take(in, 4, "the header");
    record += stored_version;
    version_ = static_cast<std::uint32_t>(number(stored_version));
    if (version_ < oldest || version_ > newest) {
      fail("unsupported " + kind_ + " state version " + std::to_string(version_) + " (expected " +
           (oldest == newest ? std::to_string(newest) : std::to_string(oldest) + " to " + std::to_string(newest)) +
           ")");
    }
    const std::string length = take(in, 8, "the header");
    record += length;
    if (number(length) > max_state_payload) fail("corrupted header (payload length)");
    payload_ = take(in, static_cast<std::size_t>(number(length)), "the payload");
    record += payload_;
    const std::string checksum = take(in, 8, "the checksum");
    if (number(checksum) != fnv1a(record)) fail("checksum mismatch: the state is corrupted");
  }

  std::uint32_t version() const noexcept { return version_; }

  std::uint64_t get_u64() { return number(next(8)); }
  double get_double() {
    const std::uint64_t u = get_u64();
    double v;
    std::memcpy(&v, &u, 8);
    return v;
  }
  bool get_bool() {
    const std::string b = next(1);
    if (b[0] != '\0' && b[0] != '\1') fail("corrupted boolean field");
    return b[0] == '\1';
  }
  std::vector<double> get_doubles() {
    const std::uint64_t n = get_u64();
    if (n > (payload_.size() - pos_) / 8) fail("corrupted length field");
    std::vector<double> v(static_cast<std::size_t>(n));
    for (double& x : v) x = get_double();
    return v;
  }

  // Every field must have been consumed.
  void finish() const {
    if (pos_ != payload_.size()) fail("unexpected trailing data in the payload");
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw state_error("gradclip: cannot load the " + kind_ + " state: " + what);
  }

 private:
  // Reads n bytes in pieces, so a corrupted length cannot make us allocate more
  // than the stream actually holds.
  std::string take(std::istream& in, std::size_t n, const char* part) const {
    std::string s;
    char piece[4096];
    while (s.size() < n) {
      const std::size_t want = std::min(sizeof piece, n - s.size());
      in.read(piece, static_cast<std::streamsize>(want));
      const auto got = static_cast<std::size_t>(in.gcount());
      s.append(piece, got);
      if (got != want) fail(std::string("truncated in ") + part);
    }
    return s;
  }

  std::string next(std::size_t n) {
    if (payload_.size() - pos_ < n) fail("payload too short for its fields");
    std::string s = payload_.substr(pos_, n);
    pos_ += n;
    return s;
  }

  static std::uint64_t number(const std::string& bytes) noexcept {
    std::uint64_t v = 0;
    for (std::size_t i = bytes.size(); i-- > 0;) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
    return v;
  }

  std::string kind_;
  std::string payload_;
  std::uint32_t version_ = 0;
  std::size_t pos_ = 0;
};

}  // namespace gradclip::detail

#endif  // GRADCLIP_DETAIL_STATE_IO_HPP
