// gradclip: skip the optimizer steps whose gradients are not finite, and give up
// after too many in a row.
//
//   gradclip::nonfinite_guard guard{5};
//   if (guard(grads)) optimizer.step();               // or: guard(clip(grads)), guard(norm)
//   auto s = guard(grads, clip);                        // calls clip(grads) on finite steps only
//   if (s) optimizer.step();                            // s.result: clip's result
//
// The rule of Optax's apply_if_finite(inner, max_consecutive_errors): a step is
// finite when every gradient element is (or, given a norm or a clip_result, when
// that norm is); a finite step resets the count of consecutive non-finite steps,
// a non-finite one increments it and the total. Optax rejects a non-finite step
// (zero update, inner state kept) while that count is <= max_consecutive_errors,
// and past it applies the update anyway, NaNs and all. This guard raises instead:
// the step that would make the count exceed max_consecutive throws
// gradclip::nonfinite_streak_error, so training stops rather than corrupts the
// weights. Like every gradclip call that throws, that step changes nothing: the
// counters stay as they were (a later finite step still resets them).
// The guard never modifies gradients.
#ifndef GRADCLIP_ADAPTIVE_NONFINITE_GUARD_HPP
#define GRADCLIP_ADAPTIVE_NONFINITE_GUARD_HPP

#include <cstddef>
#include <cstdint>
#include <istream>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "../buffer.hpp"
#include "../clip_norm.hpp"
#include "../errors.hpp"
#include "../detail/float_bits.hpp"
#include "../detail/kernels/kernels.hpp"
#include "../detail/state_io.hpp"

namespace gradclip {

// Thrown by nonfinite_guard when more than max_consecutive non-finite steps come
// in a row. A std::runtime_error, like nonfinite_error (which it is not: that one
// is the error policy of a single clip).
class nonfinite_streak_error : public std::runtime_error {
 public:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  nonfinite_streak_error(std::uint64_t consecutive, std::uint64_t max_consecutive, std::size_t tensor_index)
      : std::runtime_error(make_message(consecutive, max_consecutive, tensor_index)),
        consecutive_(consecutive),
        max_consecutive_(max_consecutive),
        tensor_index_(tensor_index) {}

  // Non-finite steps in a row, the one that raised included (max_consecutive + 1).
  std::uint64_t consecutive() const noexcept { return consecutive_; }
  std::uint64_t max_consecutive() const noexcept { return max_consecutive_; }
  // First buffer holding a NaN or an infinity in the raising step; npos when the
  // guard was given a norm rather than the gradients.
  std::size_t tensor_index() const noexcept { return tensor_index_; }

 private:
  static std::string make_message(std::uint64_t consecutive, std::uint64_t max_consecutive, std::size_t index) {
    std::string msg = "gradclip::nonfinite_guard: " + std::to_string(consecutive) +
                      " non-finite gradient steps in a row (at most " + std::to_string(max_consecutive) +
                      " may be skipped)";
    if (index != npos) msg += "; buffer " + std::to_string(index) + " is the first that holds a non-finite value";
    return msg;
  }

  std::uint64_t consecutive_, max_consecutive_;
  std::size_t tensor_index_;
};

// What the guard says about one step.
struct guard_step {
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  bool apply = true;              // finite: take the optimizer step
  std::uint64_t consecutive = 0;  // non-finite steps in a row, this one included (0 when apply)
  std::size_t tensor_index = npos;  // first non-finite buffer, when the guard saw the gradients

  explicit operator bool() const noexcept { return apply; }
};

// guard(group, clipper): the step, and the clipper's result when it was called.
template <class Result>
struct guarded_step : guard_step {
  std::optional<Result> result;  // empty on a skipped step
};

class nonfinite_guard {
 public:
  // max_consecutive: how many non-finite steps in a row are skipped; the next one
  // throws. 0 throws on the first. Any integer type (no narrowing in braces);
  // throws std::invalid_argument when negative.
  template <class Int, std::enable_if_t<std::is_integral_v<Int> && !std::is_same_v<Int, bool>, int> = 0>
  explicit nonfinite_guard(Int max_consecutive) : max_consecutive_(checked(max_consecutive)) {}

  // Judges the gradients themselves: finite when every element is.
  template <class Group, std::enable_if_t<is_group_v<Group> || is_buffer_v<Group>, int> = 0>
  guard_step operator()(const Group& group) {
    return record(detail::kernels::first_nonfinite(group));
  }

  // Judges a norm computed elsewhere (finite or not).
  guard_step operator()(double total_norm) {
    return record(detail::is_finite(total_norm) ? guard_step::npos : unknown);
  }
  // Judges a clipper's result by its total_norm.
  guard_step operator()(const clip_result& r) { return (*this)(r.total_norm); }

  // Checks the gradients, then calls clipper(group) on a finite step only (as
  // Optax calls the inner transformation). Nothing is recorded when the clipper throws.
  template <class Group, class Clipper,
            std::enable_if_t<is_group_v<Group> || is_buffer_v<Group>, int> = 0>
  auto operator()(Group&& group, Clipper&& clipper) {
    using R = std::decay_t<std::invoke_result_t<Clipper&, Group&>>;
    static_assert(!std::is_void_v<R>, "gradclip::nonfinite_guard: the clipper must return its result");
    guarded_step<R> out;
    const std::size_t bad = detail::kernels::first_nonfinite(group);
    if (bad != guard_step::npos) {
      static_cast<guard_step&>(out) = record(bad);
      return out;
    }
    out.result.emplace(clipper(group));
    static_cast<guard_step&>(out) = record(guard_step::npos);
    return out;
  }

  std::uint64_t max_consecutive() const noexcept { return max_consecutive_; }
  std::uint64_t steps() const noexcept { return steps_; }                // steps judged
  std::uint64_t total_skipped() const noexcept { return skipped_; }      // non-finite steps skipped
  std::uint64_t consecutive() const noexcept { return consecutive_; }    // the current run of them
  bool last_finite() const noexcept { return consecutive_ == 0; }        // true before the first step

  void save(std::ostream& out) const {
    detail::state_writer w(kind, version);
    w.put_u64(max_consecutive_);
    w.put_u64(steps_);
    w.put_u64(skipped_);
    w.put_u64(consecutive_);
    w.write(out);
  }

  // Replaces max_consecutive and the counters with saved ones; on any error throws
  // gradclip::state_error and leaves this object unchanged.
  void load(std::istream& in) {
    detail::state_reader r(in, kind, version);
    nonfinite_guard s(0);
    s.max_consecutive_ = r.get_u64();
    s.steps_ = r.get_u64();
    s.skipped_ = r.get_u64();
    s.consecutive_ = r.get_u64();
    r.finish();
    if (s.skipped_ > s.steps_ || s.consecutive_ > s.skipped_ || s.consecutive_ > s.max_consecutive_) {
      r.fail("inconsistent fields");
    }
    *this = s;
  }

 private:
  static constexpr const char* kind = "nonfinite_guard";
  static constexpr std::uint32_t version = 1;
  static constexpr std::size_t unknown = static_cast<std::size_t>(-2);  // non-finite, buffer not known
  template <class Int>
  static std::uint64_t checked(Int max_consecutive) {
    if constexpr (std::is_signed_v<Int>) {
      if (max_consecutive < 0) {
        throw std::invalid_argument("gradclip::nonfinite_guard: max_consecutive must be >= 0, got " +
                                    std::to_string(max_consecutive));
      }
    }
    return static_cast<std::uint64_t>(max_consecutive);
  }

  // bad: npos for a finite step, else the first non-finite buffer (or unknown).
  guard_step record(std::size_t bad) {
    if (bad == guard_step::npos) {
      ++steps_;
      consecutive_ = 0;
      return {true, 0, guard_step::npos};
    }
    const std::size_t index = bad == unknown ? guard_step::npos : bad;
    if (consecutive_ + 1 > max_consecutive_) {
      throw nonfinite_streak_error(consecutive_ + 1, max_consecutive_, index);
    }
    ++steps_;
    ++skipped_;
    ++consecutive_;
    return {false, consecutive_, index};
  }

  std::uint64_t max_consecutive_;
  std::uint64_t steps_ = 0, skipped_ = 0, consecutive_ = 0;
};

}  // namespace gradclip

#endif  // GRADCLIP_ADAPTIVE_NONFINITE_GUARD_HPP
