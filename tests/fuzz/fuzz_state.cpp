// Fuzz target: load() of every stateful clipper (tests/fuzz/stateful.hpp) over
// random bytes. Every input must end in one of two ways:
//   - gradclip::state_error, with the clipper exactly as it was (its save() bytes
//     unchanged); any other exception, a crash, a hang or a huge allocation is a
//     failure (run with -timeout and -malloc_limit_mb, see .ci/hardening/fuzz.sh);
//   - a loaded state: its save() loads again to the same bytes, and it keeps working: a few steps on finite and non-finite gradients, whose state
//     then saves and loads again.
//
// Input: byte 0 picks the clipper (low nibble) and the mode (bit 4): raw, the rest
// of the input is the stream load() reads; wrapped, the rest is a payload that the
// target wraps in a well-formed record of that clipper (magic, kind, version,
// length, checksum), so that mutations reach the payload checks.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "stateful.hpp"

namespace {

template <class C>
void exercise(C& c) {
  using S = fz::stateful<C>;
  std::vector<float> finite{0.5f, -2.0f, 3.0f, 0.25f};
  std::vector<float> bad{1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f, 0.0f};
  std::vector<float> huge{3e38f, -3e38f, 1e-45f, 0.0f};
  for (int k = 0; k < 6; ++k) {
    std::vector<float>& g = k == 3 ? bad : (k == 4 ? huge : finite);
    try {
      S::step(c, g, gradclip::norm(g));
    } catch (const std::invalid_argument&) {   // e.g. a group of another size than the state's
    } catch (const gradclip::nonfinite_error&) {  // the loaded policy may be error
    } catch (const gradclip::nonfinite_streak_error&) {
    } catch (const std::out_of_range&) {
    }
  }
}

template <class C>
void one(const std::string& stream, bool wrapped) {
  using S = fz::stateful<C>;
  const std::string mode = wrapped ? " (wrapped payload)" : " (raw record)";
  C c = S::make();
  const std::string before = fz::saved(c);
  std::istringstream in(stream);
  try {
    c.load(in);
  } catch (const gradclip::state_error&) {
    if (fz::saved(c) != before) fz::fail("a failed load() changed the clipper" + mode);
    return;
  }
  // Loaded: what it saves now loads again and saves the same (save(load(x)) may
  // differ from x only in fields the state does not use, e.g. auto_clip's P^2
  // markers outside streaming mode).
  const std::string after = fz::saved(c);
  {
    C e = S::make();
    std::istringstream in2(after);
    try {
      e.load(in2);
    } catch (const gradclip::state_error& err) {
      fz::fail("the saved form of a loaded state does not load" + mode + ": " + err.what());
    }
    if (fz::saved(e) != after) fz::fail("save(load(save(load(x)))) != save(load(x))" + mode);
  }
  exercise(c);
  // What it saves now loads again, into a fresh clipper.
  const std::string later = fz::saved(c);
  C d = S::make();
  std::istringstream again(later);
  try {
    d.load(again);
  } catch (const gradclip::state_error& e) {
    if (S::known_issue(c) && !fz::strict_from_environment()) return;
    fz::fail("a state reached by stepping a loaded clipper does not load" + mode + ": " + e.what());
  }
  if (fz::saved(d) != later) fz::fail("save/load round trip differs");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t selector = data[0];
  const bool wrapped = selector & 0x10;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  fz::visit_stateful(selector & 0x0f, [&](auto* tag) {
    using C = std::remove_pointer_t<decltype(tag)>;
    try {
      one<C>(wrapped ? fz::wrap_payload<C>(rest) : rest, wrapped);
    } catch (const gradclip::state_error&) {
      throw;  // escaped from load(): the checks above catch it; this cannot happen
    } catch (const std::exception& e) {
      fz::fail(std::string("load() or a step threw something other than state_error: ") + e.what());
    }
  });
  return 0;
}
