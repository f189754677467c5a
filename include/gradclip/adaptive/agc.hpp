// gradclip: adaptive gradient clipping (AGC), unit-wise, relative to the weights.
//
//   gradclip::agc clip;                                 // clipping 0.01, eps 1e-3
//   auto r = clip(params, grads);                        // r.clipped of r.units were clipped
//
// Brock, De, Smith, Simonyan 2021, "High-Performance Large-Scale Image Recognition
// Without Normalization" (NFNets), section 4.1, and the authors' SGD_AGC
// (google-deepmind/deepmind-research, nfnets/optim.py); also Optax's
// adaptive_grad_clip and timm's adaptive_clip_grad. For every unit i of every
// gradient buffer G with weights W (L2 norms):
//   max_i = clipping * max(||W_i||, eps)
//   G_i  *= max_i / max(||G_i||, 1e-6)     when ||G_i|| > max_i
// The units of a matrix are its rows (the output units of an out x in weight
// matrix, PyTorch's layout; store a convolution kernel as out x (in * kh * kw)) or,
// with axis::cols, its columns (the output units of JAX's in x out layout). A
// vector, a 1 x n or n x 1 matrix, a std::vector or any other non-matrix buffer is
// one unit, as the authors' code and Optax squeeze it.
//
// eps keeps zero-initialised weights (biases, gains) from freezing their gradients
// at zero; the 1e-6 only guards the division. The test is strict, as in the paper
// and the authors' code: a unit exactly at max_i is not written (Optax's
// where(||G|| < max) rescales it by max_i / max(||G_i||, 1e-6), which is 1 unless
// ||G_i|| < 1e-6). The paper leaves the final classifier layer unclipped: exclude
// its buffers with agc_options::mask. Units lying across the storage order (the
// rows of a column-major matrix) are read a tile at a time in storage order.
//
// Defaults: clipping = 0.01 and eps = 1e-3, those of the authors' SGD_AGC and of
// timm (Optax's eps is 1e-3 too; it has no default for clipping). The paper finds
// that the best clipping value shrinks as the batch grows.
#ifndef GRADCLIP_ADAPTIVE_AGC_HPP
#define GRADCLIP_ADAPTIVE_AGC_HPP

#include <algorithm>
#include <cstddef>
#include <iterator>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../axis.hpp"
#include "../buffer.hpp"
#include "../clip_norm.hpp"
#include "../errors.hpp"
#include "../options.hpp"
#include "../detail/float_bits.hpp"
#include "../detail/kernels/kernels.hpp"
#include "../detail/validate.hpp"
#include "../detail/view.hpp"
#include "clip_units.hpp"

namespace gradclip {

struct agc_options {
  axis units = axis::rows;  // the units of a matrix: its rows (out x in weights) or its columns
  // Empty: every buffer is clipped. Otherwise one flag per buffer, in group order;
  // false leaves that buffer's gradient as it is (e.g. the final classifier).
  std::vector<bool> mask = {};
  // A unit is non-finite when its gradient norm is NaN or infinite, or its weight
  // norm is NaN. propagate gives Optax's result: such a unit is scaled by NaN (or
  // by 0 when only the gradient norm is inf and the weights are finite). skip
  // leaves such a unit as it is. error throws nonfinite_error before anything is
  // written: total_norm() is the unit's gradient norm (NaN for NaN weights),
  // tensor_index() the index of its buffer in the group.
  nonfinite on_nonfinite = nonfinite::propagate;
  norm_accuracy accuracy = norm_accuracy::fast;  // of the unit norms (gradclip/options.hpp)
};

struct agc_result {
  std::size_t units = 0;      // units measured (buffers excluded by the mask not counted)
  std::size_t clipped = 0;    // units scaled
  std::size_t nonfinite = 0;  // units with a non-finite gradient norm or a NaN weight norm
  std::size_t excluded = 0;   // buffers left out by the mask
  // total_norm: the L2 norm of all measured gradients before clipping; clipped:
  // whether any unit was scaled; scale: the smallest coefficient applied (1 if
  // none; NaN if a NaN one was).
  clip_result summary;

  // So that norm_stats::record(result) records the gradient norm.
  operator clip_result() const noexcept { return summary; }
};

namespace detail {

// Like for_each_buffer, but hands out the buffer object itself: its shape decides
// its units.
template <class G, class F>
void for_each_buffer_object(G&& g, F&& f) {
  using P = plain_t<G>;
  if constexpr (is_buffer_v<P>) {
    f(std::size_t{0}, unwrap(g));
  } else if constexpr (group_kind<P>::value == 2) {
    std::apply(
        [&f](auto&&... b) {
          std::size_t i = 0;
          (f(i++, unwrap(b)), ...);
        },
        g);
  } else {
    static_assert(group_kind<P>::value == 1, "gradclip: not a buffer or a group of buffers (see gradclip/buffer.hpp)");
    std::size_t i = 0;
    for (auto&& b : g) f(i++, unwrap(b));
  }
}

// Calls f(buffer) for the buffer at `index` of the group.
template <class G, class F>
void with_buffer_object(G&& g, std::size_t index, F&& f) {
  using P = plain_t<G>;
  if constexpr (is_buffer_v<P> || group_kind<P>::value == 2) {
    for_each_buffer_object(g, [&](std::size_t i, auto&& b) {
      if (i == index) f(b);
    });
  } else {
    f(unwrap(*std::next(std::begin(g), static_cast<std::ptrdiff_t>(index))));
  }
}

template <class A, class B, class F, std::size_t... I>
void zip_tuples(A& a, B& b, F& f, std::index_sequence<I...>) {
  (f(I, unwrap(std::get<I>(a)), unwrap(std::get<I>(b))), ...);
}

// Calls f(index, w, g) for the buffers at the same index of two groups of as many
// buffers. Two tuples of one size are zipped element by element; otherwise each
// buffer of gs is matched with its counterpart by index (which, with a tuple on
// one side, instantiates f for every pair of types).
template <class Ws, class Gs, class F>
void for_each_buffer_pair(Ws& ws, Gs& gs, F&& f) {
  using W = plain_t<Ws>;
  using G = plain_t<Gs>;
  if constexpr (!is_buffer_v<W> && !is_buffer_v<G> && group_kind<W>::value == 2 && group_kind<G>::value == 2) {
    if constexpr (std::tuple_size_v<W> == std::tuple_size_v<G>) {
      zip_tuples(ws, gs, f, std::make_index_sequence<std::tuple_size_v<W>>{});
      return;
    }
  }
  for_each_buffer_object(gs, [&](std::size_t i, auto& g) { with_buffer_object(ws, i, [&](auto& w) { f(i, w, g); }); });
}

// AGC's units: the rows or columns of a matrix with both dimensions > 1, else the
// whole buffer as one unit.
template <class X>
auto agc_units(X& x, axis along) noexcept {
  using B = plain_t<X>;
  if constexpr (buffer_kind<B>::value == 1) {
    if (x.rows() > 1 && x.cols() > 1) return matrix_units(x, along);
  }
  const auto v = as_view(x);  // a vector: one segment (make_view folds n x 1 and 1 x n)
  using P = std::remove_pointer_t<decltype(v.data)>;
  unit_layout<P> l;
  l.data = v.data;
  l.count = 1;
  l.length = v.size();
  l.element_stride = v.inner_stride;
  return l;
}

template <class X>
std::string shape_text(const X& x) {
  if constexpr (buffer_kind<plain_t<X>>::value == 1) {
    return std::to_string(x.rows()) + "x" + std::to_string(x.cols());
  } else {
    return std::to_string(as_view(x).size());
  }
}

// Parameters and gradients must have the same units: equal rows and columns for a
// matrix, equal sizes for vectors (1 x n against n x 1 is allowed).
template <class W, class G>
void check_same_units(const W& w, const G& g, std::size_t index) {
  auto is_matrix = [](const auto& x) {
    if constexpr (buffer_kind<plain_t<decltype(x)>>::value == 1) {
      return x.rows() > 1 && x.cols() > 1;
    } else {
      return false;
    }
  };
  bool same = false;
  if (is_matrix(w) && is_matrix(g)) {
    if constexpr (buffer_kind<plain_t<W>>::value == 1 && buffer_kind<plain_t<G>>::value == 1) {
      same = w.rows() == g.rows() && w.cols() == g.cols();
    }
  } else if (!is_matrix(w) && !is_matrix(g)) {
    same = as_view(w).size() == as_view(g).size();
  }
  if (!same) {
    throw std::invalid_argument("gradclip::agc: buffer " + std::to_string(index) + " is " + shape_text(w) +
                                " in the parameters and " + shape_text(g) + " in the gradients");
  }
}

inline void check_agc_arguments(double clipping, double eps, const agc_options& options) {
  if (is_nan(clipping) || !(clipping >= 0.0)) {
    throw std::invalid_argument("gradclip::agc: clipping must be >= 0, got " + number_text(clipping));
  }
  check_eps(eps);
  check_policy(options.on_nonfinite);
  check_accuracy(options.accuracy);
  if (options.units != axis::rows && options.units != axis::cols) {
    throw std::invalid_argument("gradclip::agc: agc_options::units must be axis::rows or axis::cols");
  }
}

// clipping * max(weight_norm, eps), with NaN weights giving NaN, clipping = inf
// meaning no limit and clipping = 0 a limit of 0 (never inf * 0).
inline double agc_max_norm(double weight_norm, double clipping, double eps) noexcept {
  if (is_nan(weight_norm)) return weight_norm;
  if (is_inf(clipping)) return clipping;
  if (clipping == 0.0) return 0.0;
  return clipping * (weight_norm > eps ? weight_norm : eps);
}

// AGC's limit for a unit: coefficient max_norm / max(||G_i||, 1e-6), and a unit at or
// below max_norm never written (the authors' strict test).
inline kernels::clip_limit agc_limit(double max_norm) noexcept { return {max_norm, 0.0, 1e-6, true}; }

// Calls f(buffer_index, weight_units, grad_units) for every buffer the mask keeps.
template <class Params, class Grads, class F>
void for_each_agc_pair(const Params& params, Grads& grads, const agc_options& options, F&& f) {
  for_each_buffer_pair(params, grads, [&](std::size_t i, const auto& w, auto& g) {
    if (!options.mask.empty() && !options.mask[i]) return;
    f(i, agc_units(w, options.units), agc_units(g, options.units));
  });
}

}  // namespace detail

// Clips grads unit-wise against params (see the top of this header). params and
// grads are groups (or single buffers) with the same number of buffers, in the
// same order, and the same shapes; element types may differ. params are only read.
// Throws std::invalid_argument (clipping < 0 or NaN, eps < 0 or not finite, a
// mismatched count or shape, a mask of the wrong size) and, under
// nonfinite::error, nonfinite_error, before writing anything.
template <class Params, class Grads>
agc_result adaptive_grad_clip(const Params& params, Grads&& grads, double clipping, double eps = 1e-3,
                              const agc_options& options = {}) {
  static_assert(is_group_v<Params> || is_buffer_v<Params>,
                "gradclip::adaptive_grad_clip: the parameters are not a group of buffers (see gradclip/buffer.hpp)");
  static_assert(is_group_v<Grads> || is_buffer_v<Grads>,
                "gradclip::adaptive_grad_clip: the gradients are not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_agc_arguments(clipping, eps, options);
  const std::size_t count = detail::buffer_count(grads);
  if (detail::buffer_count(params) != count) {
    throw std::invalid_argument("gradclip::agc: " + std::to_string(detail::buffer_count(params)) +
                                " parameter buffers for " + std::to_string(count) + " gradient buffers");
  }
  if (!options.mask.empty() && options.mask.size() != count) {
    throw std::invalid_argument("gradclip::agc: a mask of " + std::to_string(options.mask.size()) + " flags for " +
                                std::to_string(count) + " buffers");
  }
  detail::for_each_buffer_pair(params, grads,
                               [](std::size_t i, const auto& w, const auto& g) { detail::check_same_units(w, g, i); });

  const auto l2 = detail::spec_of(2.0, options.accuracy);
  detail::kernels::norm_partial weight_parts[detail::unit_tile], grad_parts[detail::unit_tile];
  if (options.on_nonfinite == nonfinite::error) {
    // Every norm first: a non-finite unit anywhere throws before any unit is written.
    detail::for_each_agc_pair(params, grads, options, [&](std::size_t i, const auto& w, const auto& g) {
      for (std::size_t first = 0; first < g.count; first += detail::unit_tile) {
        const std::size_t n = std::min(detail::unit_tile, g.count - first);
        detail::kernels::measure_units(w, first, n, l2, weight_parts);
        detail::kernels::measure_units(g, first, n, l2, grad_parts);
        for (std::size_t u = 0; u < n; ++u) {
          const double gn = detail::kernels::norm_accumulator::finish(grad_parts[u], l2);
          const double max_norm =
              detail::agc_max_norm(detail::kernels::norm_accumulator::finish(weight_parts[u], l2), clipping, eps);
          if (!detail::is_finite(gn) || detail::is_nan(max_norm)) {
            throw nonfinite_error(detail::is_finite(gn) ? max_norm : gn, i);
          }
        }
      }
    });
  }

  agc_result result;
  detail::unit_tally tally(l2);
  detail::kernels::coefficient coefficients[detail::unit_tile];
  detail::for_each_agc_pair(params, grads, options, [&](std::size_t, const auto& w, const auto& g) {
    result.units += g.count;
    for (std::size_t first = 0; first < g.count; first += detail::unit_tile) {
      const std::size_t n = std::min(detail::unit_tile, g.count - first);
      detail::kernels::measure_units(w, first, n, l2, weight_parts);
      detail::kernels::measure_units(g, first, n, l2, grad_parts);
      for (std::size_t u = 0; u < n; ++u) {
        const double gn = tally.add(grad_parts[u]);
        const double max_norm =
            detail::agc_max_norm(detail::kernels::norm_accumulator::finish(weight_parts[u], l2), clipping, eps);
        if (!detail::is_finite(gn) || detail::is_nan(max_norm)) ++result.nonfinite;
        // (error: every unit is finite here, checked above)
        const auto d = detail::kernels::decide(gn, detail::agc_limit(max_norm), options.on_nonfinite);
        coefficients[u] = d.scales() ? d.k : detail::kernels::coefficient{1.0};
        if (d.scales()) tally.scaled(d.k.value());
      }
      detail::kernels::apply_units(g, first, n, coefficients);
    }
  });
  if (!options.mask.empty()) {
    result.excluded = static_cast<std::size_t>(std::count(options.mask.begin(), options.mask.end(), false));
  }
  result.clipped = tally.clipped();
  result.summary = tally.summary();
  return result;
}

// A fixed AGC configuration for a training loop:
//   gradclip::agc clip{0.01, 1e-3};   ...   clip(params, grads);
class agc {
 public:
  explicit agc(double clipping = 0.01, double eps = 1e-3, agc_options options = {})
      : clipping_(clipping), eps_(eps), options_(std::move(options)) {
    detail::check_agc_arguments(clipping, eps, options_);
  }

  template <class Params, class Grads>
  agc_result operator()(const Params& params, Grads&& grads) const {
    return adaptive_grad_clip(params, std::forward<Grads>(grads), clipping_, eps_, options_);
  }

  double clipping() const noexcept { return clipping_; }
  double eps() const noexcept { return eps_; }
  const agc_options& options() const noexcept { return options_; }

 private:
  double clipping_;
  double eps_;
  agc_options options_;
};

}  // namespace gradclip

#endif  // GRADCLIP_ADAPTIVE_AGC_HPP
