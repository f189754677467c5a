// gradclip: mixed-precision loss scaling. The fused unscale + clip of loss-scaled
// gradients (DeepSpeed's unscale_and_clip_grads) and a dynamic loss scaler with
// the semantics and defaults of PyTorch's GradScaler, and DeepSpeed's dynamic loss
// scaler options (hysteresis, a minimum scale, DeepSpeed's fp16 optimizer's growth
// count; grad_scaler_options::deepspeed() for DeepSpeed's fp16 defaults).
//
//   gradclip::grad_scaler scaler;                       // 2^16; x2 after 2000 finite steps, x0.5 on inf/NaN
//   backward(loss * scaler.scale());                    // the gradients now hold scale * g
//   auto r = scaler.unscale_and_clip(grads, 1.0);       // one read pass, one write pass
//   if (!r.found_inf) optimizer_step();                 // an inf/NaN step is skipped: nothing was written
//   scaler.update(r.found_inf);                         // then the scale for the next step
//
// unscale_and_clip(group, loss_scale, max_norm) works on any gradclip group (float,
// double, half, bfloat16; mixed in a tuple). The group holds loss_scale * g; then
//   total_norm  = norm(group) / loss_scale                (the norm of g)
//   coefficient = min(1, max_norm / (total_norm + eps))
//   every element x becomes x * (coefficient / loss_scale)
// The norm pass is the found-inf check: a partial norm is NaN or inf exactly when
// an element is (finite data cannot overflow it, see detail/kernels), so a NaN or
// infinity among the scaled gradients costs no extra pass. Then nothing is written
// at all and found_inf is reported: the caller skips the optimizer step.
//
// Unscaling in place keeps the element type: fp16 gradients divided by 2^16 lose
// their small values to fp16's subnormals, as in PyTorch. Unscale fp32 master
// gradients where that matters (DeepSpeed's arrangement).
#ifndef GRADCLIP_LOSS_SCALE_HPP
#define GRADCLIP_LOSS_SCALE_HPP

#include <cstdint>
#include <istream>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>

#include "buffer.hpp"
#include "clip_norm.hpp"
#include "errors.hpp"
#include "detail/element.hpp"
#include "detail/float_bits.hpp"
#include "detail/kernels/kernels.hpp"
#include "detail/state_io.hpp"
#include "detail/validate.hpp"

namespace gradclip {

// norm_type and eps as clip_options (eps is added to the unscaled norm). The
// policy for a NaN or an infinity among the scaled gradients defaults to skip,
// GradScaler's: nothing is written and found_inf is reported. error throws
// nonfinite_error (nothing written); propagate writes what PyTorch's unscale_
// followed by clip_grad_norm_ would (NaN, or 0 times 1 / loss_scale).
struct unscale_options : clip_options {
  unscale_options() noexcept { on_nonfinite = nonfinite::skip; }
  unscale_options(double norm_type_, double eps_ = 1e-6, nonfinite on_nonfinite_ = nonfinite::skip) noexcept
      : clip_options{norm_type_, eps_, on_nonfinite_} {}
};

struct unscale_result {
  bool found_inf = false;    // a NaN or an infinity among the scaled gradients: nothing was written
                             // (unless on_nonfinite is propagate)
  double total_norm = 0.0;   // the norm of the unscaled gradients (NaN or inf when found_inf)
  double coefficient = 1.0;  // the clipping coefficient, min(1, max_norm / (total_norm + eps)); 1 when
                             // found_inf and nothing was written
  double scale = 1.0;        // the factor every element was multiplied by, coefficient / loss_scale;
                             // 1 when nothing was written
  bool clipped = false;      // whether coefficient < 1
};

namespace detail {

// The smallest loss scale accepted: below FLT_MIN, 1 / loss_scale would leave
// float's range and float gradients would be unscaled into infinities.
inline constexpr double min_loss_scale = 0x1p-126;

inline void check_loss_scale(double loss_scale) {
  if (!is_finite(loss_scale) || !(loss_scale >= min_loss_scale)) {
    throw std::invalid_argument("gradclip: loss_scale must be finite and >= 2^-126 (FLT_MIN), got " +
                                number_text(loss_scale));
  }
}

// The norm of the unscaled gradients from the partial of the scaled ones. The
// division comes before the power-of-two partial scale is applied, so a norm
// beyond double's range before unscaling is still found when it is in range after.
inline double unscaled_norm(const kernels::norm_partial& part, const kernels::norm_spec& spec, double loss_scale) {
  if (!is_finite(part.sum)) return part.sum;
  if (spec.kind == kernels::norm_kind::linf) return part.sum / loss_scale;
  return part.scale * (kernels::norm_accumulator::root(part.sum, spec) / loss_scale);
}

}  // namespace detail

// Unscales and clips a loss-scaled group in one read pass and one write pass.
// max_norm = infinity only unscales (with the same found-inf check). Throws
// std::invalid_argument (loss_scale not finite or < 2^-126, max_norm < 0 or NaN,
// norm_type <= 0 or NaN, eps < 0 or not finite) before reading the data.
template <class Group>
unscale_result unscale_and_clip(Group&& group, double loss_scale, double max_norm, const unscale_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::unscale_and_clip: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_loss_scale(loss_scale);
  detail::check_clip_options(max_norm, options);

  const auto spec = detail::spec_of(options);
  unscale_result r;
  const detail::kernels::norm_partial part = detail::kernels::measure(group, spec);
  r.found_inf = !detail::is_finite(part.sum);
  r.total_norm = detail::unscaled_norm(part, spec, loss_scale);
  const detail::kernels::decision d = detail::decide_clip(group, max_norm, r.total_norm, options);
  if (!detail::is_finite(r.total_norm) && !d.scales()) return r;  // skip: nothing written
  r.coefficient = d.reported();
  r.clipped = d.scales();
  // coefficient / loss_scale, exact-range: one write pass, skipped when it is 1.
  const detail::kernels::coefficient k = (d.scales() ? d.k : detail::kernels::coefficient{1.0}).over(loss_scale);
  if (!k.is_one()) {
    detail::kernels::apply(group, k);
    r.scale = k.value();
  }
  return r;
}

// ---- dynamic loss scaling -------------------------------------------------------

// What update() does with an overflow that would back the scale off while it is
// already at min_scale (grad_scaler_options::at_min_scale).
enum class min_scale_policy {
  clamp,  // the scale stays at min_scale: every back-off is floored there
          // (DeepSpeed's DynamicLossScaler with raise_error_at_min_scale=False)
  error,  // throw gradclip::loss_scale_error, the scaler unchanged (DeepSpeed's
          // DynamicLossScaler default, raise_error_at_min_scale=True)
};

// Which finite steps count towards growth (grad_scaler_options::growth_counting).
enum class growth_rule {
  // growth_interval finite steps in a row grow the scale, and so does every
  // growth_interval-th one after them: PyTorch's GradScaler, and DeepSpeed's
  // DynamicLossScaler (ZeRO stages 1-3), whose (cur_iter - last_overflow_iter) %
  // scale_window == 0 is the same rule.
  consecutive,
  // DeepSpeed's FP16_Optimizer and FP16_UnfusedOptimizer (fp16 without ZeRO):
  // the first finite step after an overflow (or the first step of all) does not
  // count, so the first growth comes after growth_interval + 1 finite steps, the
  // later ones every growth_interval. (Those optimizers have no hysteresis and no
  // error at the minimum: pair it with hysteresis 1 and min_scale_policy::clamp.)
  fp16_optimizer,
};

// PyTorch's GradScaler defaults. The fields after growth_interval are DeepSpeed's
// dynamic loss scaler options; their defaults keep GradScaler's rule bit for bit.
// DeepSpeed's one scale_factor f is growth_factor = f, backoff_factor = 1 / f.
struct grad_scaler_options {
  double init_scale = 65536.0;   // rounded to float, as GradScaler keeps its scale in a float32 tensor
  double growth_factor = 2.0;    // > 1: applied after growth_interval consecutive finite steps
  double backoff_factor = 0.5;   // in (0, 1): applied on a step with a NaN or an infinity (see hysteresis)
  int growth_interval = 2000;    // > 0 (DeepSpeed's loss_scale_window / scale_window)
  // DeepSpeed's hysteresis (delayed_shift), >= 1: an overflow backs the scale off
  // only when hysteresis_left() is 1, otherwise it decrements hysteresis_left() and
  // leaves the scale (the step is skipped all the same). 1 backs off on every
  // overflow (GradScaler). hysteresis_left() is refilled at every growth point.
  int hysteresis = 1;
  // DeepSpeed's consecutive_hysteresis: refill hysteresis_left() on every finite
  // step instead, so that exactly hysteresis - 1 overflows in a row are tolerated.
  bool consecutive_hysteresis = false;
  // DeepSpeed's min_scale (min_loss_scale): a back-off never goes below it. 0 is no
  // minimum (GradScaler); otherwise within float's range (rounded to float, as
  // init_scale) and not above init_scale.
  double min_scale = 0.0;
  min_scale_policy at_min_scale = min_scale_policy::clamp;
  growth_rule growth_counting = growth_rule::consecutive;

  // The DynamicLossScaler a DeepSpeed fp16 config with ZeRO builds from its
  // defaults (initial_scale_power 16, loss_scale_window 1000, hysteresis 2,
  // consecutive_hysteresis false, min_loss_scale 1) and raise_error_at_min_scale's
  // default (true). (A config that sets none of these keys gets the class defaults
  // instead: 2^32 and hysteresis 1.)
  static grad_scaler_options deepspeed() noexcept {
    grad_scaler_options o;
    o.init_scale = 65536.0;
    o.growth_factor = 2.0;
    o.backoff_factor = 0.5;
    o.growth_interval = 1000;
    o.hysteresis = 2;
    o.consecutive_hysteresis = false;
    o.min_scale = 1.0;
    o.at_min_scale = min_scale_policy::error;
    o.growth_counting = growth_rule::consecutive;
    return o;
  }
};

// The dynamic loss scale of torch.cuda.amp.GradScaler, with DeepSpeed's options:
// scale() multiplies the loss; update(found_inf) ends each step. With the default
// options it is exactly GradScaler.update() (aten::_amp_update_scale_):
//   found_inf:  scale *= backoff_factor, growth tracker = 0 (the step was skipped)
//   otherwise:  tracker + 1 == growth_interval ? (scale *= growth_factor unless
//               that overflows float; tracker = 0) : ++tracker
// DeepSpeed's DynamicLossScaler.update_scale adds (see grad_scaler_options):
//   found_inf:  hysteresis_left > 1 ? --hysteresis_left (scale kept)
//               : scale at min_scale and at_min_scale == error ? throw loss_scale_error
//               : scale = max(scale * backoff_factor, min_scale);  tracker = 0 either way
//   otherwise:  consecutive_hysteresis ? hysteresis_left = hysteresis;
//               at a growth point (above) also hysteresis_left = hysteresis when
//               !consecutive_hysteresis (even if a growth past float's range is skipped)
// The scale is kept as a float and every update rounds to float, as ATen does
// with its float32 scale tensor, so the sequence of scales matches PyTorch's bit
// for bit, and DeepSpeed's (a Python float) whenever the factors are powers of two,
// min_scale is a float and the scale stays within float's normal range (DeepSpeed's
// scale grows past FLT_MAX, this one does not). The scale used to unscale a step is the one before
// that step's update.
class grad_scaler {
 public:
  // Throws std::invalid_argument for bad options (init_scale not finite, not > 0
  // or out of float's range; growth_factor not finite or <= 1; backoff_factor
  // outside (0, 1); growth_interval <= 0; hysteresis <= 0; min_scale negative,
  // NaN, inf, positive but below float's range, or above init_scale; at_min_scale
  // or growth_counting not one of their enumerators).
  explicit grad_scaler(const grad_scaler_options& options = {}) : options_(options) {
    check(options);
    scale_ = to_float(options.init_scale);
    min_ = to_float(options.min_scale);
    hysteresis_left_ = options.hysteresis;
  }

  // Multiply the loss by this before the backward pass.
  double scale() const noexcept { return static_cast<double>(scale_); }
  // Finite steps counted towards the next growth (0 after an overflow).
  int growth_tracker() const noexcept { return tracker_; }
  // Overflows still absorbed before one backs the scale off (DeepSpeed's
  // cur_hysteresis): in [1, options().hysteresis]; 1 backs off on the next one.
  int hysteresis_left() const noexcept { return hysteresis_left_; }
  // update() calls that returned; of them, with found_inf (skipped steps); the
  // current run of those.
  std::uint64_t steps() const noexcept { return steps_; }
  std::uint64_t skipped_steps() const noexcept { return skipped_; }
  std::uint64_t consecutive_overflows() const noexcept { return consecutive_; }
  const grad_scaler_options& options() const noexcept { return options_; }

  // unscale_and_clip with the current scale; changes no state. Throws as
  // unscale_and_clip does (std::invalid_argument once the scale has backed off
  // below 2^-126, some 140 consecutive non-finite steps from the default, unless
  // min_scale keeps it above).
  template <class Group>
  unscale_result unscale_and_clip(Group&& group, double max_norm, const unscale_options& options = {}) const {
    return gradclip::unscale_and_clip(std::forward<Group>(group), scale(), max_norm, options);
  }

  // Ends a step: found_inf says whether any of its gradients held a NaN or an
  // infinity (for several groups or optimizers, whether any did). Throws
  // gradclip::loss_scale_error, with the scaler unchanged, for an overflow that
  // would back off a scale already at min_scale under min_scale_policy::error;
  // never throws otherwise.
  void update(bool found_inf) {
    if (found_inf) {
      if (hysteresis_left_ > 1) {
        --hysteresis_left_;  // absorbed: the scale stays
      } else {
        if (options_.at_min_scale == min_scale_policy::error && !(scale_ > min_)) {
          throw loss_scale_error(static_cast<double>(scale_), static_cast<double>(min_));
        }
        const float next = to_float(static_cast<double>(scale_) * options_.backoff_factor);
        scale_ = next < min_ ? min_ : next;
      }
      tracker_ = 0;
      ++steps_;
      ++skipped_;
      ++consecutive_;
      return;
    }
    // DeepSpeed's FP16_Optimizer does not count the first finite step after an
    // overflow (or the first step of all).
    const bool counted =
        options_.growth_counting == growth_rule::consecutive || (steps_ != 0 && consecutive_ == 0);
    if (options_.consecutive_hysteresis) hysteresis_left_ = options_.hysteresis;
    if (counted) {
      const int successful = tracker_ + 1;
      if (successful == options_.growth_interval) {
        const float grown = to_float(static_cast<double>(scale_) * options_.growth_factor);
        if (detail::element_traits<float>::is_finite(grown)) scale_ = grown;  // never grow to inf
        tracker_ = 0;
        if (!options_.consecutive_hysteresis) hysteresis_left_ = options_.hysteresis;
      } else {
        tracker_ = successful;
      }
    }
    ++steps_;
    consecutive_ = 0;
  }

  // Version 2: the options (DeepSpeed's included), the scale, the tracker, the
  // hysteresis left and the step counters.
  void save(std::ostream& out) const {
    detail::state_writer w(kind, version);
    w.put_double(options_.init_scale);
    w.put_double(options_.growth_factor);
    w.put_double(options_.backoff_factor);
    w.put_u64(static_cast<std::uint64_t>(options_.growth_interval));
    w.put_u64(static_cast<std::uint64_t>(options_.hysteresis));
    w.put_bool(options_.consecutive_hysteresis);
    w.put_double(options_.min_scale);
    w.put_u64(static_cast<std::uint64_t>(options_.at_min_scale));
    w.put_u64(static_cast<std::uint64_t>(options_.growth_counting));
    w.put_double(static_cast<double>(scale_));
    w.put_u64(static_cast<std::uint64_t>(tracker_));
    w.put_u64(static_cast<std::uint64_t>(hysteresis_left_));
    w.put_u64(steps_);
    w.put_u64(skipped_);
    w.put_u64(consecutive_);
    w.write(out);
  }

  // Replaces this scaler's state (options included) with a saved one; on any
  // error throws gradclip::state_error and leaves it unchanged. Reads this
  // version's records and version 1's (gradclip 0.1: GradScaler's options, the
  // scale and the tracker), which resume with GradScaler's rule (hysteresis 1, no
  // minimum, the default growth rule) and the step counters at 0.
  void load(std::istream& in) {
    detail::state_reader r(in, kind, 1, version);
    const bool v2 = r.version() >= 2;
    grad_scaler_options o;
    o.init_scale = r.get_double();
    o.growth_factor = r.get_double();
    o.backoff_factor = r.get_double();
    const std::uint64_t interval = r.get_u64();
    std::uint64_t hysteresis = 1, policy = 0, rule = 0;
    if (v2) {
      hysteresis = r.get_u64();
      o.consecutive_hysteresis = r.get_bool();
      o.min_scale = r.get_double();
      policy = r.get_u64();
      rule = r.get_u64();
    }
    const double scale = r.get_double();
    const std::uint64_t tracker = r.get_u64();
    std::uint64_t left = hysteresis, steps = 0, skipped = 0, consecutive = 0;
    if (v2) {
      left = r.get_u64();
      steps = r.get_u64();
      skipped = r.get_u64();
      consecutive = r.get_u64();
    }
    r.finish();
    constexpr auto int_max = static_cast<std::uint64_t>(std::numeric_limits<int>::max());
    if (interval == 0 || interval > int_max) r.fail("growth_interval out of range");
    if (hysteresis == 0 || hysteresis > int_max) r.fail("hysteresis out of range");
    if (policy > static_cast<std::uint64_t>(min_scale_policy::error)) r.fail("unknown min_scale_policy");
    if (rule > static_cast<std::uint64_t>(growth_rule::fp16_optimizer)) r.fail("unknown growth_rule");
    o.growth_interval = static_cast<int>(interval);
    o.hysteresis = static_cast<int>(hysteresis);
    o.at_min_scale = static_cast<min_scale_policy>(policy);
    o.growth_counting = static_cast<growth_rule>(rule);
    try {
      check(o);
    } catch (const std::invalid_argument& e) {
      r.fail(e.what());
    }
    // A float value >= 0 (a scale backed off to 0 is a state GradScaler reaches too).
    if (!detail::is_finite(scale) || !(scale >= 0.0) || static_cast<double>(to_float(scale)) != scale) {
      r.fail("the scale is not a finite float >= 0");
    }
    if (scale < static_cast<double>(to_float(o.min_scale))) r.fail("the scale is below min_scale");
    if (tracker >= interval) r.fail("growth tracker not below growth_interval");
    if (left == 0 || left > hysteresis) r.fail("hysteresis left not in [1, hysteresis]");
    if (skipped > steps || consecutive > skipped) {
      r.fail("step counters out of order (consecutive overflows <= skipped steps <= steps)");
    }
    if (consecutive != 0 && tracker != 0) r.fail("a growth tracker after an overflow");
    // With consecutive hysteresis, what is left follows from the run of overflows.
    if (o.consecutive_hysteresis && left != (consecutive >= hysteresis - 1 ? 1 : hysteresis - consecutive)) {
      r.fail("hysteresis left does not match the consecutive overflows");
    }
    grad_scaler s(o);
    s.scale_ = static_cast<float>(scale);
    s.tracker_ = static_cast<int>(tracker);
    s.hysteresis_left_ = static_cast<int>(left);
    s.steps_ = steps;
    s.skipped_ = skipped;
    s.consecutive_ = consecutive;
    *this = s;
  }

 private:
  static constexpr const char* kind = "grad_scaler";
  static constexpr std::uint32_t version = 2;

  // ATen multiplies its float scale by a double factor and stores the float
  // nearest to the product.
  static float to_float(double v) noexcept { return detail::element_traits<float>::nearest(v); }

  static void check(const grad_scaler_options& o) {
    const float init = to_float(o.init_scale);
    if (!detail::is_finite(o.init_scale) || !(o.init_scale > 0.0) || !detail::element_traits<float>::is_finite(init) ||
        !(init > 0.0f)) {
      throw std::invalid_argument("gradclip::grad_scaler: init_scale must be > 0 and within float's range, got " +
                                  detail::number_text(o.init_scale));
    }
    if (!detail::is_finite(o.growth_factor) || !(o.growth_factor > 1.0)) {
      throw std::invalid_argument("gradclip::grad_scaler: growth_factor must be finite and > 1, got " +
                                  detail::number_text(o.growth_factor));
    }
    if (!(o.backoff_factor > 0.0 && o.backoff_factor < 1.0)) {
      throw std::invalid_argument("gradclip::grad_scaler: backoff_factor must be in (0, 1), got " +
                                  detail::number_text(o.backoff_factor));
    }
    if (o.growth_interval <= 0) {
      throw std::invalid_argument("gradclip::grad_scaler: growth_interval must be > 0, got " +
                                  std::to_string(o.growth_interval));
    }
    if (o.hysteresis <= 0) {
      throw std::invalid_argument(
          "gradclip::grad_scaler: hysteresis must be >= 1 (1 backs off on every overflow), got " +
          std::to_string(o.hysteresis));
    }
    if (!detail::is_finite(o.min_scale) || !(o.min_scale >= 0.0)) {
      throw std::invalid_argument("gradclip::grad_scaler: min_scale must be finite and >= 0 (0: no minimum), got " +
                                  detail::number_text(o.min_scale));
    }
    const float min = to_float(o.min_scale);
    if (o.min_scale > 0.0 && !(min > 0.0f)) {
      throw std::invalid_argument("gradclip::grad_scaler: min_scale must be 0 or within float's range, got " +
                                  detail::number_text(o.min_scale));
    }
    if (min > init) {
      throw std::invalid_argument("gradclip::grad_scaler: min_scale (" + detail::number_text(o.min_scale) +
                                  ") must not be above init_scale (" + detail::number_text(o.init_scale) + ")");
    }
    if (o.at_min_scale != min_scale_policy::clamp && o.at_min_scale != min_scale_policy::error) {
      throw std::invalid_argument("gradclip::grad_scaler: at_min_scale is not a min_scale_policy value");
    }
    if (o.growth_counting != growth_rule::consecutive && o.growth_counting != growth_rule::fp16_optimizer) {
      throw std::invalid_argument("gradclip::grad_scaler: growth_counting is not a growth_rule value");
    }
  }

  grad_scaler_options options_;
  float scale_ = 65536.0f;
  float min_ = 0.0f;  // options_.min_scale rounded to float
  int tracker_ = 0;
  int hysteresis_left_ = 1;
  std::uint64_t steps_ = 0;
  std::uint64_t skipped_ = 0;
  std::uint64_t consecutive_ = 0;
};

}  // namespace gradclip

#endif  // GRADCLIP_LOSS_SCALE_HPP
