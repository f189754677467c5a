// gradclip: AdaGC, adaptive per-buffer (per-tensor) clipping against an EMA of each
// buffer's own clipped norms.
//
//   Wang, Li, Chen, Zeng, Yang, Sun, Ma, Yu, Shen, "AdaGC: Improving Training
//   Stability for Large Language Model Pretraining", arXiv:2502.11034 (2025; v2,
//   ICML 2026: "AdaGC: Enhancing LLM Pretraining Stability via Adaptive Gradient
//   Clipping"). The rule follows the authors' released code, github.com/lishuai-97/AdaGC
//   (Megatron patch, class AdaGC in megatron/optimizer/clip_grads.py).
//
//   gradclip::adagc clip;              // one buffer per parameter tensor, same order every step
//   ... backward ...   auto r = clip(grads);   // r.buffers[i]: buffer i's norm and factor
//
// Each call is one step t = 1, 2, ...; g_i is the norm of buffer i, gamma_i its state:
//   warm-up, t <= warmup_steps (T_start): the whole group is clipped by max_norm
//     (lambda_abs) as clip_by_global_norm does, with coefficient h; gamma_i becomes
//     min(gamma_i, h * g_i), the smallest clipped norm seen (the first one sets it).
//   afterwards, for each buffer: a gamma_i not yet set takes g_i (while it has none,
//     the buffer is not clipped); then the buffer is clipped to lambda_rel * gamma_i
//     with the core coefficient, and
//       gamma_i <- beta * gamma_i + (1 - beta) * min(g_i, lambda_rel * gamma_i)
//     (the EMA of the clipped norms).
//
// Defaults and their sources: lambda_rel = 1.05, beta = 0.98, warmup_steps (T_start)
// = 100 and max_norm (lambda_abs) = 1.0 are the values recommended in the paper
// (v1), as reproduced by the implementations that cite it (pytorch_optimizer's
// AdaGC among them); the paper text itself could not be consulted here. The
// authors' released code defaults to clip_ratio 1.04, beta 0.99, start_clip_steps
// 100 and eps 1e-6, with lambda_abs from Megatron's --clip-grad (1.0 in its script).
// eps = 1e-6 is the code's and PyTorch's.
//
// Where this differs from the released code, and why:
//   - The warm-up minimum uses h * g_i, not a second measurement of the clipped
//     buffer: the same value up to the rounding of the clipped elements, without
//     another pass over the data.
//   - The scale is the core coefficient limit / (g + eps), clamped to 1; the code
//     scales by the same ratio only when g_i > lambda_rel * gamma_i. The two differ
//     only for g_i within eps of the limit. The EMA uses exactly the code's
//     min(g_i, lambda_rel * gamma_i).
//   - A zero norm (a buffer with no gradient this step: an unused expert, a frozen
//     embedding row block) never sets gamma_i, as the code leaves a tensor without a
//     gradient unset. The code would take gamma_i = 0 from it and clip that buffer
//     to zero at every later step.
//   - A NaN or infinite norm never enters gamma. In the warm-up such a group is
//     clipped as clip_by_global_norm(group, max_norm) would under on_nonfinite and
//     no gamma changes; afterwards such a buffer is clipped as
//     clip_by_norm(buffer, lambda_rel * gamma_i) would (no limit while gamma_i is
//     unset) and its gamma is left alone; the other buffers proceed as usual.
//     Under nonfinite::error any non-finite buffer throws before anything changes.
//   - norm_type may be any p; the group's warm-up norm is combined from the
//     per-buffer partials (one pass over the data).
// The number of buffers is fixed by the first call; later groups must have as many.
#ifndef GRADCLIP_ADAPTIVE_ADAGC_HPP
#define GRADCLIP_ADAPTIVE_ADAGC_HPP

#include <cstddef>
#include <cstdint>
#include <istream>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../clip_norm.hpp"
#include "../detail/float_bits.hpp"
#include "../detail/kernels/kernels.hpp"
#include "../detail/state_io.hpp"
#include "../detail/validate.hpp"

namespace gradclip {

// The clip_options core (norm_type; eps, added to the norm in the clip
// coefficient; on_nonfinite), and AdaGC's own.
struct adagc_options : clip_options {
  double lambda_rel = 1.05;         // relative threshold: a buffer may grow to lambda_rel x its EMA, > 0
  double beta = 0.98;               // EMA smoothing, in [0, 1)
  std::int64_t warmup_steps = 100;  // T_start: steps of global clipping before the per-buffer rule, >= 0
  double max_norm = 1.0;            // lambda_abs: the warm-up's global limit (infinity: none)
};

struct adagc_result {
  double total_norm = 0.0;           // the group's norm before clipping
  bool warmup = false;               // this step clipped the group globally by max_norm
  std::vector<clip_result> buffers;  // per buffer, group order: its norm before clipping, the factor applied
};

namespace detail {

inline void check_adagc_options(const adagc_options& o) {
  const auto fail = [](const std::string& what) { throw std::invalid_argument("gradclip::adagc: " + what); };
  if (!(o.lambda_rel > 0.0) || !is_finite(o.lambda_rel)) {
    fail("lambda_rel must be finite and > 0, got " + number_text(o.lambda_rel));
  }
  if (!(o.beta >= 0.0 && o.beta < 1.0)) fail("beta must be in [0, 1), got " + number_text(o.beta));
  if (o.warmup_steps < 0) fail("warmup_steps must be >= 0, got " + std::to_string(o.warmup_steps));
  check_max_norm(o.max_norm);
  check_options(o);
}

}  // namespace detail

class adagc {
 public:
  // Throws std::invalid_argument for an option out of range (see adagc_options).
  explicit adagc(const adagc_options& options = {}) : options_(options) { detail::check_adagc_options(options); }

  // One step of AdaGC over the group (see the top of this file). Throws
  // std::invalid_argument when the group has another number of buffers than the
  // first one had, and nonfinite_error under nonfinite::error; either way the
  // group and this clipper are unchanged.
  template <class Group>
  adagc_result operator()(Group&& group) {
    static_assert(is_group_v<Group> || is_buffer_v<Group>,
                  "gradclip::adagc: not a group of buffers (see gradclip/buffer.hpp)");
    const std::size_t count = detail::buffer_count(group);
    if (sized_ && count != gamma_.size()) {
      throw std::invalid_argument("gradclip::adagc: a group of " + std::to_string(count) + " buffers, but this clipper tracks " +
                                  std::to_string(gamma_.size()));
    }

    // One pass: the group's norm and every buffer's.
    const auto spec = detail::spec_of(options_);
    adagc_result result;
    result.buffers.resize(count);
    result.total_norm = detail::total_norm(group, spec, [&result, &spec](std::size_t i, const norm_partial& part) noexcept {
      result.buffers[i].total_norm = detail::kernels::norm_accumulator::finish(part, spec);
    });
    std::size_t first_bad = nonfinite_error::npos;
    for (std::size_t i = 0; i < count && first_bad == nonfinite_error::npos; ++i) {
      if (!detail::is_finite(result.buffers[i].total_norm)) first_bad = i;
    }
    result.warmup = step_ < static_cast<std::uint64_t>(options_.warmup_steps);
    // (The group's norm can overflow with every buffer's finite: only the warm-up uses it.)
    if (options_.on_nonfinite == nonfinite::error &&
        (first_bad != nonfinite_error::npos || (result.warmup && !detail::is_finite(result.total_norm)))) {
      throw nonfinite_error(result.total_norm, first_bad);
    }

    // Nothing below throws but the allocation, which comes before any write.
    if (!sized_) gamma_.assign(count, unset());
    sized_ = true;
    const clip_options& core = options_;
    if (result.warmup) {
      const clip_result r = detail::clip_given_norm(group, options_.max_norm, result.total_norm, core);
      for (clip_result& b : result.buffers) {
        b.scale = r.scale;
        b.clipped = r.clipped;
      }
      if (detail::is_finite(result.total_norm)) {
        for (std::size_t i = 0; i < count; ++i) {
          const double clipped_norm = r.clipped ? r.scale * result.buffers[i].total_norm : result.buffers[i].total_norm;
          if (clipped_norm > 0.0 && (is_unset(gamma_[i]) || clipped_norm < gamma_[i])) gamma_[i] = clipped_norm;
        }
      }
    } else {
      detail::for_each_buffer(group, [&](std::size_t i, const auto& v) {
        clip_result& b = result.buffers[i];
        const double g = b.total_norm;
        if (is_unset(gamma_[i]) && detail::is_finite(g) && g > 0.0) gamma_[i] = g;
        const bool tracked = !is_unset(gamma_[i]);
        const double limit = tracked ? options_.lambda_rel * gamma_[i] : std::numeric_limits<double>::infinity();
        b = detail::clip_given_norm(v, limit, g, core);
        if (tracked && detail::is_finite(g)) {
          const double x = g > limit ? limit : g;
          gamma_[i] = gamma_[i] * options_.beta + x * (1.0 - options_.beta);
        }
      });
    }
    ++step_;
    return result;
  }

  const adagc_options& options() const noexcept { return options_; }
  // Calls completed.
  std::uint64_t step() const noexcept { return step_; }
  // Whether the number of buffers is fixed yet (by the first call), and that number.
  bool sized() const noexcept { return sized_; }
  std::size_t buffer_count() const noexcept { return gamma_.size(); }
  // Buffer i's EMA of clipped norms (gamma_i); NaN until the buffer has had a finite norm.
  double gamma(std::size_t i) const {
    if (i >= gamma_.size()) throw std::out_of_range("gradclip::adagc::gamma: no buffer " + std::to_string(i));
    return gamma_[i];
  }
  const std::vector<double>& gammas() const noexcept { return gamma_; }

  void save(std::ostream& out) const {
    detail::state_writer w(kind, version);
    w.put_double(options_.lambda_rel);
    w.put_double(options_.beta);
    w.put_u64(static_cast<std::uint64_t>(options_.warmup_steps));
    w.put_double(options_.max_norm);
    w.put_double(options_.eps);
    w.put_double(options_.norm_type);
    w.put_u64(static_cast<std::uint64_t>(options_.on_nonfinite));
    w.put_u64(step_);
    w.put_bool(sized_);
    w.put_doubles(gamma_);
    w.write(out);
  }

  // Replaces this clipper, options included, with a saved one; on any error throws
  // gradclip::state_error and leaves it unchanged.
  void load(std::istream& in) {
    detail::state_reader r(in, kind, version);
    adagc_options o;
    o.lambda_rel = r.get_double();
    o.beta = r.get_double();
    const std::uint64_t warmup_steps = r.get_u64();
    o.max_norm = r.get_double();
    o.eps = r.get_double();
    o.norm_type = r.get_double();
    const std::uint64_t policy = r.get_u64();
    if (warmup_steps > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) || policy > 2) {
      r.fail("inconsistent options");
    }
    o.warmup_steps = static_cast<std::int64_t>(warmup_steps);
    o.on_nonfinite = static_cast<nonfinite>(policy);
    try {
      detail::check_adagc_options(o);
    } catch (const std::invalid_argument& e) {
      r.fail(std::string("invalid options (") + e.what() + ")");
    }
    adagc s(o);
    s.step_ = r.get_u64();
    s.sized_ = r.get_bool();
    s.gamma_ = r.get_doubles();
    r.finish();
    bool consistent = s.sized_ ? s.step_ > 0 : (s.step_ == 0 && s.gamma_.empty());
    for (double v : s.gamma_) consistent = consistent && (is_unset(v) || (detail::is_finite(v) && v >= 0.0));
    if (!consistent) r.fail("inconsistent fields");
    *this = std::move(s);
  }

 private:
  static constexpr const char* kind = "adagc";
  static constexpr std::uint32_t version = 1;
  // gamma_i before the buffer's first finite norm.
  static double unset() noexcept { return std::numeric_limits<double>::quiet_NaN(); }
  static bool is_unset(double gamma) noexcept { return detail::is_nan(gamma); }

  adagc_options options_;
  std::uint64_t step_ = 0;
  bool sized_ = false;
  std::vector<double> gamma_;
};

}  // namespace gradclip

#endif  // GRADCLIP_ADAPTIVE_ADAGC_HPP
