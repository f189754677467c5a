// Every stateful clipper with save/load, for the state fuzz target and the strong-
// guarantee tests. To cover a new one, add it to `all_stateful` below (one line):
// it needs a default constructor or a specialisation of `stateful<C>::make`, and is
// stepped by calling it on a group (or by `stateful<C>::step`).
#ifndef GRADCLIP_TESTS_FUZZ_STATEFUL_HPP
#define GRADCLIP_TESTS_FUZZ_STATEFUL_HPP

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <gradclip/gradclip.hpp>
#include <gradclip/loss_scale.hpp>
#if __has_include(<gradclip/adaptive/norm_stats.hpp>)
#include <gradclip/adaptive/norm_stats.hpp>
#endif
#if __has_include(<gradclip/adaptive/auto_clip.hpp>)
#include <gradclip/adaptive/auto_clip.hpp>
#endif
#if __has_include(<gradclip/adaptive/zclip.hpp>)
#include <gradclip/adaptive/zclip.hpp>
#endif
#if __has_include(<gradclip/adaptive/adagc.hpp>)
#include <gradclip/adaptive/adagc.hpp>
#endif
#if __has_include(<gradclip/adaptive/nonfinite_guard.hpp>)
#include <gradclip/adaptive/nonfinite_guard.hpp>
#endif
#if __has_include(<gradclip/adaptive/spike_guard.hpp>)
#include <gradclip/adaptive/spike_guard.hpp>
#endif

namespace fz {

using all_stateful = std::tuple<gradclip::norm_stats, gradclip::auto_clip, gradclip::zclip, gradclip::adagc,
                                gradclip::nonfinite_guard, gradclip::grad_scaler, gradclip::spike_guard>;

// How to build and step each clipper. The default: default-constructed, stepped by
// calling it on the group.
// known_issue(c): true when c is in a state that only 2^64 steps reach (a wrapped
// counter) and that therefore need not save and load (the fuzz target then does not
// fail on it; GRADCLIP_FUZZ_STRICT=1 fails anyway).
template <class C>
struct stateful {
  static C make() { return C{}; }
  static bool known_issue(const C&) { return false; }
  template <class Group>
  static void step(C& c, Group& g, double /*norm*/) {
    (void)c(g);
  }
};

template <>
struct stateful<gradclip::norm_stats> {
  // Not a bug: a counter wrapped after 2^64 records (reachable only from a loaded state).
  static bool known_issue(const gradclip::norm_stats& c) {
    return c.count() < c.nonfinite_count() || c.count() < c.clipped_count() || c.count() < c.skipped_count() ||
           c.count() < c.legacy_count() || c.count() < c.post_count();
  }
  static gradclip::norm_stats make() { return gradclip::norm_stats(4); }
  // Every form of record (a post-clip norm or none, skipped steps), and every
  // reading of the loaded state.
  template <class Group>
  static void step(gradclip::norm_stats& c, Group&, double norm) {
    if (c.count() % 2 == 0) {
      c.record(norm, norm > 1.0);
    } else {
      c.record(gradclip::clip_result{norm, 0.5, norm > 1.0}, !(norm > 100.0));
    }
    (void)c.quantile(0.5);
    (void)c.post_quantile(0.5);
    (void)c.suggest_max_norm();
    std::ostringstream sink;
    c.report(sink);
    c.write_histogram_csv(sink);
    c.write_histogram_json(sink);
  }
};

template <>
struct stateful<gradclip::auto_clip> {
  static gradclip::auto_clip make() { return gradclip::auto_clip{}; }
  static bool known_issue(const gradclip::auto_clip& c) { return c.nonfinite_count() > c.count(); }  // wrapped
  template <class Group>
  static void step(gradclip::auto_clip& c, Group& g, double) {
    (void)c(g);
  }
};

template <>
struct stateful<gradclip::nonfinite_guard> {
  static bool known_issue(const gradclip::nonfinite_guard& c) { return c.steps() < c.total_skipped(); }  // wrapped
  static gradclip::nonfinite_guard make() { return gradclip::nonfinite_guard(2); }
  template <class Group>
  static void step(gradclip::nonfinite_guard& c, Group& g, double) {
    (void)c(g);
  }
};

template <>
struct stateful<gradclip::grad_scaler> {
  // Not a bug: a counter wrapped after 2^64 steps (then the counters, or with
  // consecutive hysteresis what is left of it, disagree).
  static bool known_issue(const gradclip::grad_scaler& c) {
    if (c.steps() < c.skipped_steps() || c.skipped_steps() < c.consecutive_overflows()) return true;
    if (!c.options().consecutive_hysteresis) return false;
    const auto h = static_cast<std::uint64_t>(c.options().hysteresis);
    const std::uint64_t left = c.consecutive_overflows() >= h - 1 ? 1 : h - c.consecutive_overflows();
    return static_cast<std::uint64_t>(c.hysteresis_left()) != left;
  }
  // DeepSpeed's options, so that the seeds and the stepped states use them: a
  // hysteresis, a minimum with the error, a short growth interval.
  static gradclip::grad_scaler make() {
    gradclip::grad_scaler_options o = gradclip::grad_scaler_options::deepspeed();
    o.init_scale = 1024.0;
    o.growth_interval = 3;
    o.min_scale = 256.0;
    return gradclip::grad_scaler(o);
  }
  // An overflow at the minimum under min_scale_policy::error throws with the
  // scaler unchanged: not a failure.
  template <class Group>
  static void step(gradclip::grad_scaler& c, Group& g, double) {
    const auto r = c.unscale_and_clip(g, 1.0);
    try {
      c.update(r.found_inf);
    } catch (const gradclip::loss_scale_error&) {
    }
  }
};

template <>
struct stateful<gradclip::zclip> {
  static gradclip::zclip make() {
    gradclip::zclip_options o;
    o.warmup_steps = 3;  // reach the statistics within a few steps
    return gradclip::zclip(o);
  }
  template <class Group>
  static void step(gradclip::zclip& c, Group& g, double) {
    (void)c(g);
  }
  // Not a bug: the step counter wrapped after 2^64 steps.
  static bool known_issue(const gradclip::zclip& c) { return c.step() < c.warmup_count(); }
};

template <>
struct stateful<gradclip::adagc> {
  // Not a bug worth fixing: the step counter wraps after 2^64 steps, and a wrapped
  // counter (0 with a sized state) does not load.
  static bool known_issue(const gradclip::adagc& c) { return c.sized() && c.step() == 0; }
  static gradclip::adagc make() {
    gradclip::adagc_options o;
    o.warmup_steps = 2;
    return gradclip::adagc(o);
  }
  template <class Group>
  static void step(gradclip::adagc& c, Group& g, double) {
    (void)c(g);
  }
};

template <>
struct stateful<gradclip::spike_guard> {
  // Not a bug: the step counter wrapped after 2^64 steps.
  static bool known_issue(const gradclip::spike_guard& c) {
    return c.steps() < c.skipped() || c.steps() < c.loss_count() || c.steps() < c.grad_norm_count();
  }
  static gradclip::spike_guard make() {
    gradclip::spike_guard_options o;
    o.window = 4;  // judged from the 3rd step
    o.max_consecutive_skips = 3;
    return gradclip::spike_guard(o);
  }
  // The loss falls as the norm grows; every third step judges the loss alone. A
  // streak past max_consecutive_skips throws with the guard unchanged: not a failure.
  template <class Group>
  static void step(gradclip::spike_guard& c, Group&, double norm) {
    try {
      if (c.steps() % 3 == 2) {
        (void)c(1.0 / (1.0 + norm));
      } else {
        (void)c(1.0 / (1.0 + norm), norm);
      }
    } catch (const gradclip::spike_streak_error&) {
    }
  }
};

template <class C>
std::string saved(const C& c) {
  std::ostringstream out;
  c.save(out);
  return out.str();
}

// f(tag) for the clipper at index i of all_stateful (i taken modulo the count).
template <class F, std::size_t... I>
void visit_stateful_impl(std::size_t i, F&& f, std::index_sequence<I...>) {
  ((i == I ? (f(static_cast<std::tuple_element_t<I, all_stateful>*>(nullptr)), 0) : 0), ...);
}
template <class F>
void visit_stateful(std::size_t i, F&& f) {
  constexpr std::size_t n = std::tuple_size_v<all_stateful>;
  visit_stateful_impl(i % n, std::forward<F>(f), std::make_index_sequence<n>{});
}
template <class F>
void for_each_stateful(F&& f) {
  for (std::size_t i = 0; i < std::tuple_size_v<all_stateful>; ++i) visit_stateful(i, f);
}

// The fixed part of a record of clipper C (magic, format, kind, version), read from
// a saved default: lets the fuzz target wrap any payload into a record that reaches
// the payload checks.
struct record_header {
  std::string prefix;  // "GCLP" u32 format u32 kind_length kind u32 version
};
template <class C>
record_header header_of() {
  const std::string s = saved(stateful<C>::make());
  const std::size_t kind_length = static_cast<unsigned char>(s[8]) | (static_cast<unsigned char>(s[9]) << 8);
  return {s.substr(0, 12 + kind_length + 4)};
}

inline std::uint64_t fnv1a(const std::string& bytes) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}
inline void put_le(std::string& s, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// A well-formed record of C around any payload (correct length and checksum).
template <class C>
std::string wrap_payload(const std::string& payload) {
  std::string r = header_of<C>().prefix;
  put_le(r, payload.size(), 8);
  r += payload;
  put_le(r, fnv1a(r), 8);
  return r;
}

// The payload of a saved record (the inverse of wrap_payload).
inline std::string payload_of(const std::string& record) {
  const std::size_t kind_length = static_cast<unsigned char>(record[8]) | (static_cast<unsigned char>(record[9]) << 8);
  const std::size_t at = 12 + kind_length + 4 + 8;
  return record.substr(at, record.size() - at - 8);
}

}  // namespace fz

#endif  // GRADCLIP_TESTS_FUZZ_STATEFUL_HPP
