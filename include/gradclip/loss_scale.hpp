// gradclip: mixed-precision loss scaling. The fused unscale + clip of loss-scaled
// gradients (DeepSpeed's unscale_and_clip_grads) and a dynamic loss scaler with
// the semantics and defaults of PyTorch's GradScaler.
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

// PyTorch's GradScaler defaults.
struct grad_scaler_options {
  double init_scale = 65536.0;   // rounded to float, as GradScaler keeps its scale in a float32 tensor
  double growth_factor = 2.0;    // > 1: applied after growth_interval consecutive finite steps
  double backoff_factor = 0.5;   // in (0, 1): applied on every step with a NaN or an infinity
  int growth_interval = 2000;    // > 0
};

// The dynamic loss scale of torch.cuda.amp.GradScaler: scale() multiplies the loss;
// update(found_inf) ends each step exactly as GradScaler.update() does
// (aten::_amp_update_scale_):
//   found_inf:  scale *= backoff_factor, growth tracker = 0 (the step was skipped)
//   otherwise:  tracker + 1 == growth_interval ? (scale *= growth_factor unless
//               that overflows float; tracker = 0) : ++tracker
// The scale is kept as a float and every update rounds to float, as ATen does
// with its float32 scale tensor, so the sequence of scales matches PyTorch's bit
// for bit. The scale used to unscale a step is the one before that step's update.
class grad_scaler {
 public:
  // Throws std::invalid_argument for bad options (init_scale not finite, not > 0
  // or out of float's range; growth_factor not finite or <= 1; backoff_factor
  // outside (0, 1); growth_interval <= 0).
  explicit grad_scaler(const grad_scaler_options& options = {}) : options_(options) {
    check(options);
    scale_ = detail::element_traits<float>::nearest(options.init_scale);
  }

  // Multiply the loss by this before the backward pass.
  double scale() const noexcept { return static_cast<double>(scale_); }
  // Consecutive finite steps since the last growth or back-off.
  int growth_tracker() const noexcept { return tracker_; }
  const grad_scaler_options& options() const noexcept { return options_; }

  // unscale_and_clip with the current scale; changes no state. Throws as
  // unscale_and_clip does (std::invalid_argument once the scale has backed off
  // below 2^-126, some 140 consecutive non-finite steps from the default).
  template <class Group>
  unscale_result unscale_and_clip(Group&& group, double max_norm, const unscale_options& options = {}) const {
    return gradclip::unscale_and_clip(std::forward<Group>(group), scale(), max_norm, options);
  }

  // Ends a step: found_inf says whether any of its gradients held a NaN or an
  // infinity (for several groups or optimizers, whether any did).
  void update(bool found_inf) noexcept {
    if (found_inf) {
      scale_ = to_float(static_cast<double>(scale_) * options_.backoff_factor);
      tracker_ = 0;
      return;
    }
    const int successful = tracker_ + 1;
    if (successful == options_.growth_interval) {
      const float grown = to_float(static_cast<double>(scale_) * options_.growth_factor);
      if (detail::element_traits<float>::is_finite(grown)) scale_ = grown;  // never grow to inf
      tracker_ = 0;
    } else {
      tracker_ = successful;
    }
  }

  void save(std::ostream& out) const {
    detail::state_writer w(kind, version);
    w.put_double(options_.init_scale);
    w.put_double(options_.growth_factor);
    w.put_double(options_.backoff_factor);
    w.put_u64(static_cast<std::uint64_t>(options_.growth_interval));
    w.put_double(static_cast<double>(scale_));
    w.put_u64(static_cast<std::uint64_t>(tracker_));
    w.write(out);
  }

  // Replaces this scaler's state (options included) with a saved one; on any
  // error throws gradclip::state_error and leaves it unchanged.
  void load(std::istream& in) {
    detail::state_reader r(in, kind, version);
    grad_scaler_options o;
    o.init_scale = r.get_double();
    o.growth_factor = r.get_double();
    o.backoff_factor = r.get_double();
    const std::uint64_t interval = r.get_u64();
    const double scale = r.get_double();
    const std::uint64_t tracker = r.get_u64();
    r.finish();
    if (interval == 0 || interval > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) {
      r.fail("growth_interval out of range");
    }
    o.growth_interval = static_cast<int>(interval);
    try {
      check(o);
    } catch (const std::invalid_argument& e) {
      r.fail(e.what());
    }
    // A float value >= 0 (a scale backed off to 0 is a state GradScaler reaches too).
    if (!detail::is_finite(scale) || !(scale >= 0.0) ||
        static_cast<double>(detail::element_traits<float>::nearest(scale)) != scale) {
      r.fail("the scale is not a finite float >= 0");
    }
    if (tracker >= interval) r.fail("growth tracker not below growth_interval");
    grad_scaler s(o);
    s.scale_ = static_cast<float>(scale);
    s.tracker_ = static_cast<int>(tracker);
    *this = s;
  }

 private:
  static constexpr const char* kind = "grad_scaler";
  static constexpr std::uint32_t version = 1;

  // ATen multiplies its float scale by a double factor and stores the float
  // nearest to the product.
  static float to_float(double v) noexcept { return detail::element_traits<float>::nearest(v); }

  static void check(const grad_scaler_options& o) {
    const float init = detail::element_traits<float>::nearest(o.init_scale);
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
  }

  grad_scaler_options options_;
  float scale_ = 65536.0f;
  int tracker_ = 0;
};

}  // namespace gradclip

#endif  // GRADCLIP_LOSS_SCALE_HPP
