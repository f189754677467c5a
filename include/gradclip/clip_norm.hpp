// gradclip: clipping by norm (PyTorch's clip_grad_norm_ and clip_grads_with_norm_).
//
//   coefficient = max_norm / (total_norm + eps), clamped to 1
//   every buffer is scaled by the coefficient when it is < 1; when it is 1 nothing
//   is written at all (PyTorch always multiplies).
#ifndef GRADCLIP_CLIP_NORM_HPP
#define GRADCLIP_CLIP_NORM_HPP

#include <cstddef>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "buffer.hpp"
#include "errors.hpp"
#include "norm.hpp"
#include "options.hpp"
#include "detail/float_bits.hpp"
#include "detail/kernels/kernels.hpp"
#include "detail/validate.hpp"

namespace gradclip {

namespace detail {

// decide for a group's norm under clip_options; under nonfinite::error, throws
// nonfinite_error naming the group's first non-finite buffer (nothing written yet).
template <class G>
kernels::decision decide_clip(const G& g, double max_norm, double total_norm, const clip_options& options) {
  const kernels::decision d = kernels::decide(total_norm, {max_norm, options.eps}, options.on_nonfinite);
  if (d.action == kernels::verdict::fail) throw nonfinite_error(total_norm, kernels::first_nonfinite(g));
  return d;
}

// decide, then apply: the whole of a norm clip once the norm is known.
template <class G>
clip_result clip_given_norm(G&& g, double max_norm, double total_norm, const clip_options& options) {
  const kernels::decision d = decide_clip(g, max_norm, total_norm, options);
  if (d.scales()) kernels::apply(g, d.k);
  return {total_norm, d.reported(), d.scales()};
}

}  // namespace detail

// Scales the whole group so that its norm is at most max_norm; returns the norm
// before clipping. Throws std::invalid_argument (max_norm < 0 or NaN, norm_type <= 0
// or NaN, eps < 0 or not finite) and nonfinite_error before modifying anything.
template <class Group>
clip_result clip_by_global_norm(Group&& group, double max_norm, const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::clip_by_global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_clip_options(max_norm, options);
  const double total = detail::total_norm(group, detail::spec_of(options));
  return detail::clip_given_norm(group, max_norm, total, options);
}

// The same clip and, from the norm's own read of the data, every buffer's norm
// before clipping (buffer_norms, resized to the group's buffer count; the bits
// norm(buffer i) gives). The data, the result and the group's norm are the bits of
// the call without buffer_norms. Throws as that call; buffer_norms is unchanged by
// std::invalid_argument and already filled when nonfinite_error is thrown (it
// shows which buffers are not finite).
template <class Group>
clip_result clip_by_global_norm(Group&& group, double max_norm, const clip_options& options,
                                std::vector<double>& buffer_norms) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::clip_by_global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_clip_options(max_norm, options);
  const double total = detail::total_and_buffer_norms(group, detail::spec_of(options), buffer_norms);
  return detail::clip_given_norm(group, max_norm, total, options);
}

// The same for one buffer.
template <class Buffer>
clip_result clip_by_norm(Buffer&& x, double max_norm, const clip_options& options = {}) {
  static_assert(is_buffer_v<Buffer>,
                "gradclip::clip_by_norm takes one buffer; use gradclip::clip_by_global_norm for a group");
  return clip_by_global_norm(std::forward<Buffer>(x), max_norm, options);
}

// The scaling step alone, for a total norm computed elsewhere (another pass, other
// ranks): PyTorch's clip_grads_with_norm_. options.norm_type is not used. Under
// nonfinite::error, tensor_index() is npos when no buffer here is non-finite.
template <class Group>
clip_result clip_with_norm(Group&& group, double max_norm, double total_norm, const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::clip_with_norm: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_clip_options(max_norm, options);
  if (!detail::is_nan(total_norm) && total_norm < 0.0) {
    throw std::invalid_argument("gradclip: total_norm must be >= 0, got " + detail::number_text(total_norm));
  }
  return detail::clip_given_norm(group, max_norm, total_norm, options);
}

// The norm and the coefficient clip_by_global_norm would apply, writing nothing:
// for folding the scale into an optimizer step (multiply the gradient by r.scale
// as it is read). r.clipped says whether a coefficient other than 1 applies. The
// same arguments, checks and policies as clip_by_global_norm.
template <class Group>
clip_result clip_coefficient(const Group& group, double max_norm, const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::clip_coefficient: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_clip_options(max_norm, options);
  const double total = detail::total_norm(group, detail::spec_of(options));
  const detail::kernels::decision d = detail::decide_clip(group, max_norm, total, options);
  return {total, d.reported(), d.scales()};
}

// Clips every buffer of a group by its own norm (Keras' clipnorm): max_norms is one
// limit for all, or a range with one limit per buffer. Returns one result per
// buffer, in group order. Under propagate and skip each buffer is measured and
// scaled while it is in cache; under error every norm is computed first, so a
// non-finite buffer anywhere throws before any buffer is written.
// Throws std::invalid_argument (a bad limit, or as many limits as buffers is not
// the case) before modifying anything.
template <class Group, class MaxNorms>
std::vector<clip_result> clip_each_by_norm(Group&& group, const MaxNorms& max_norms,
                                           const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::clip_each_by_norm: not a group of buffers (see gradclip/buffer.hpp)");
  const std::size_t count = detail::buffer_count(group);
  std::vector<double> limits;
  if constexpr (std::is_arithmetic_v<MaxNorms>) {
    detail::check_max_norm(static_cast<double>(max_norms));  // also for an empty group
    limits.assign(count, static_cast<double>(max_norms));
  } else {
    for (const auto& m : max_norms) limits.push_back(static_cast<double>(m));
    if (limits.size() != count) {
      throw std::invalid_argument("gradclip::clip_each_by_norm: " + std::to_string(limits.size()) + " limits for " +
                                  std::to_string(count) + " buffers");
    }
  }
  for (double m : limits) detail::check_max_norm(m);
  detail::check_options(options);

  const auto spec = detail::spec_of(options);
  std::vector<clip_result> results(count);
  if (options.on_nonfinite == nonfinite::error) {
    std::vector<double> norms(count);
    detail::measure_with_buffer_norms(group, spec, norms.data());
    std::vector<detail::kernels::decision> decisions(count);
    for (std::size_t i = 0; i < count; ++i) {
      if (!detail::is_finite(norms[i])) throw nonfinite_error(norms[i], i);
      decisions[i] = detail::kernels::decide(norms[i], {limits[i], options.eps}, options.on_nonfinite);
      results[i] = {norms[i], decisions[i].reported(), decisions[i].scales()};
    }
    detail::for_each_buffer(group, [&](std::size_t i, const auto& v) {
      if (decisions[i].scales()) detail::kernels::apply(v, decisions[i].k);
    });
  } else {
    detail::for_each_buffer(group, [&](std::size_t i, const auto& v) {
      results[i] = detail::clip_given_norm(v, limits[i], detail::total_norm(v, spec), options);
    });
  }
  return results;
}

// A fixed clipping configuration for a training loop:
//   gradclip::norm_clipper clip(1.0);   ...   auto r = clip(grads);
class norm_clipper {
 public:
  explicit norm_clipper(double max_norm, const clip_options& options = {}) : max_norm_(max_norm), options_(options) {
    detail::check_clip_options(max_norm, options);
  }

  template <class Group>
  clip_result operator()(Group&& group) const {
    return clip_by_global_norm(std::forward<Group>(group), max_norm_, options_);
  }

  double max_norm() const noexcept { return max_norm_; }
  const clip_options& options() const noexcept { return options_; }

 private:
  double max_norm_;
  clip_options options_;
};

}  // namespace gradclip

#endif  // GRADCLIP_CLIP_NORM_HPP
