// gradclip: clipping every row (or every column) of a matrix by its own norm.
//
//   gradclip::clip_units_by_norm(G, 1.0);                          // each row of G
//   gradclip::clip_units_by_norm(G, 1.0, {gradclip::axis::cols});  // each column
//
// This is TensorFlow's tf.clip_by_norm(t, clip_norm, axes) on a matrix, and the
// per-example clipping of DP-SGD (Abadi et al. 2016, "Deep Learning with
// Differential Privacy"): with one example's gradient per row of a batch x params
// matrix, clip_units_and_accumulate clips every example and adds the clipped rows
// into a sum. DP-SGD then adds Gaussian noise N(0, (sigma * max_norm)^2) to that
// sum and divides by the batch size; neither is done here.
//
// Each unit u (row or column) is scaled by
//   coefficient = max_norm / (||u|| + eps)   when that is < 1,
// the core rule of clip_by_norm applied per unit. With the default eps = 1e-6 this
// is Opacus' per-sample rule (PyTorch's DP-SGD). With eps = 0 it is exactly
// TensorFlow's u * clip_norm / max(||u||, clip_norm) and Abadi et al.'s
// u / max(1, ||u|| / C), except that an all-zero unit with max_norm = 0 is left
// alone (TensorFlow computes 0/0 = NaN there). eps > 0 makes every clipped norm
// strictly below max_norm; eps = 0 lands on it up to the rounding of the elements.
//
// Units are taken literally: an n x 1 matrix has n rows of one element each. (AGC
// instead treats any vector as one unit; see adaptive/agc.hpp.) Units lying across
// the storage order (the rows of a column-major matrix) are read a tile of 1024 at
// a time in storage order (kernels/across.hpp), not one strided unit at a time.
#ifndef GRADCLIP_ADAPTIVE_CLIP_UNITS_HPP
#define GRADCLIP_ADAPTIVE_CLIP_UNITS_HPP

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "../axis.hpp"
#include "../buffer.hpp"
#include "../clip_norm.hpp"
#include "../errors.hpp"
#include "../options.hpp"
#include "../detail/float_bits.hpp"
#include "../detail/kernels/kernels.hpp"
#include "../detail/validate.hpp"
#include "../detail/view.hpp"

namespace gradclip {

// clip_options per unit (eps 0 gives TensorFlow's rule), and which slices are the
// units: {gradclip::axis::cols}, or {axis, norm_type, eps, on_nonfinite}.
// on_nonfinite acts per unit, as clip_each_by_norm does per buffer: propagate
// scales a unit whose norm is NaN by NaN and one whose norm is inf by 0; skip
// leaves such a unit as it is (and out of an accumulated sum); error throws
// nonfinite_error, with tensor_index() the index of the first such unit (its row
// or column), before anything is written.
struct unit_clip_options : clip_options {
  axis units = axis::rows;  // rows: each row is a unit (an example of a batch x params matrix)

  unit_clip_options() noexcept = default;
  unit_clip_options(axis units_, double norm_type_ = 2.0, double eps_ = 1e-6,  // NOLINT(google-explicit-constructor)
                    nonfinite on_nonfinite_ = nonfinite::propagate) noexcept
      : clip_options{norm_type_, eps_, on_nonfinite_}, units(units_) {}
};

struct unit_clip_result {
  std::size_t units = 0;      // units measured
  std::size_t clipped = 0;    // units scaled
  std::size_t nonfinite = 0;  // units whose norm was NaN or infinite
  double max_unit_norm = 0.0; // the largest unit norm before clipping; NaN if one was NaN
  // total_norm: the norm of all units together before clipping (their norms
  // combined); clipped: whether any unit was scaled; scale: the smallest
  // coefficient applied (1 if none; NaN if a NaN one was).
  clip_result summary;

  // So that norm_stats::record(result) records the whole matrix.
  operator clip_result() const noexcept { return summary; }
};

namespace detail {

template <class P>
using unit_layout = kernels::unit_layout<P>;

// The literal rows or columns of an Eigen matrix (an n x 1 matrix has n rows).
template <class X>
auto matrix_units(X& x, axis along) noexcept {
  using P = std::remove_pointer_t<decltype(x.data())>;
  const bool by_rows = along == axis::rows;
  unit_layout<P> l;
  l.data = x.data();
  l.count = static_cast<std::size_t>(by_rows ? x.rows() : x.cols());
  l.length = static_cast<std::size_t>(by_rows ? x.cols() : x.rows());
  l.unit_stride = static_cast<std::ptrdiff_t>(by_rows ? x.rowStride() : x.colStride());
  l.element_stride = static_cast<std::ptrdiff_t>(by_rows ? x.colStride() : x.rowStride());
  return l;
}

// Unit-wise methods work a tile of units at a time: partials of the tile, a
// coefficient per unit, then the writes, with no allocation.
inline constexpr std::size_t unit_tile = kernels::across_tile;

// Running summary of the units measured and the coefficients applied. Units are
// added as partials (norm^p = scale^p * sum), so that their combined norm is as
// exact as a norm of the whole.
class unit_tally {
 public:
  explicit unit_tally(const kernels::norm_spec& spec) noexcept : spec_(spec), total_(spec) {}

  // Adds one unit's partial; returns its norm.
  double add(const kernels::norm_partial& part) noexcept {
    total_.add(part);
    const double norm = kernels::norm_accumulator::finish(part, spec_);
    if (!is_nan(max_) && (is_nan(norm) || norm > max_)) max_ = norm;
    return norm;
  }
  void scaled(double coefficient) noexcept {
    ++clipped_;
    if (!is_nan(min_scale_) && (is_nan(coefficient) || coefficient < min_scale_)) min_scale_ = coefficient;
  }

  double max_norm() const noexcept { return max_; }
  std::size_t clipped() const noexcept { return clipped_; }
  clip_result summary() const noexcept { return {total_.total(), min_scale_, clipped_ > 0}; }

 private:
  kernels::norm_spec spec_;
  kernels::norm_accumulator total_;
  double max_ = 0.0;
  double min_scale_ = 1.0;
  std::size_t clipped_ = 0;
};

template <class Matrix>
constexpr void check_matrix_type() noexcept {
  static_assert(buffer_kind<plain_t<Matrix>>::value == 1,
                "gradclip::clip_units_by_norm takes an Eigen matrix, array, Map, Ref or Block (its rows and "
                "columns are the units)");
}

inline void check_unit_clip_options(double max_norm, const unit_clip_options& options) {
  check_clip_options(max_norm, options);
  if (options.units != axis::rows && options.units != axis::cols) {
    throw std::invalid_argument("gradclip: unit_clip_options::units must be axis::rows or axis::cols");
  }
}

// The shared body: Sum is void_sum when nothing is accumulated.
struct void_sum {};

template <class Matrix, class Sum>
unit_clip_result clip_units(Matrix& m, double max_norm, const unit_clip_options& options, Sum* sum) {
  check_unit_clip_options(max_norm, options);
  const auto units = matrix_units(m, options.units);

  // The sum's view, checked before anything is written.
  [[maybe_unused]] auto sum_view = [&]() {
    if constexpr (std::is_same_v<Sum, void_sum>) {
      return 0;
    } else {
      static_assert(is_buffer_v<Sum>, "gradclip::clip_units_and_accumulate: the sum must be a buffer");
      auto&& s = unwrap(*sum);
      if constexpr (buffer_kind<plain_t<decltype(s)>>::value == 1) {
        if (s.rows() != 1 && s.cols() != 1) {
          throw std::invalid_argument("gradclip::clip_units_and_accumulate: the sum must be a vector, got a " +
                                      std::to_string(s.rows()) + "x" + std::to_string(s.cols()) + " matrix");
        }
      }
      const auto v = as_view(s);
      kernels::require_writable<std::decay_t<decltype(v)>>();
      if (v.size() != units.length) {
        throw std::invalid_argument("gradclip::clip_units_and_accumulate: the sum has " + std::to_string(v.size()) +
                                    " elements for units of " + std::to_string(units.length));
      }
      return v;
    }
  }();

  const auto spec = spec_of(options);
  kernels::norm_partial parts[unit_tile];
  if (options.on_nonfinite == nonfinite::error) {
    // Every norm first: a non-finite unit anywhere throws before any unit is written.
    for (std::size_t first = 0; first < units.count; first += unit_tile) {
      const std::size_t n = std::min(unit_tile, units.count - first);
      kernels::measure_units(units, first, n, spec, parts);
      for (std::size_t i = 0; i < n; ++i) {
        const double norm = kernels::norm_accumulator::finish(parts[i], spec);
        if (!is_finite(norm)) throw nonfinite_error(norm, first + i, "unit");
      }
    }
  }

  unit_tally tally(spec);
  unit_clip_result result;
  result.units = units.count;
  kernels::coefficient coefficients[unit_tile];
  bool include[unit_tile];
  for (std::size_t first = 0; first < units.count; first += unit_tile) {
    const std::size_t n = std::min(unit_tile, units.count - first);
    kernels::measure_units(units, first, n, spec, parts);
    for (std::size_t i = 0; i < n; ++i) {
      const double norm = tally.add(parts[i]);
      const bool finite = is_finite(norm);
      if (!finite) ++result.nonfinite;
      // (error: every unit is finite here, checked above)
      const kernels::decision d = kernels::decide(norm, {max_norm, options.eps}, options.on_nonfinite);
      coefficients[i] = d.scales() ? d.k : kernels::coefficient{1.0};
      if (d.scales()) tally.scaled(d.k.value());
      // Under skip a non-finite unit stays out of the sum: it contributes zero,
      // which keeps DP-SGD's bound on each example's contribution.
      include[i] = finite || options.on_nonfinite != nonfinite::skip;
    }
    kernels::apply_units(units, first, n, coefficients);
    if constexpr (!std::is_same_v<Sum, void_sum>) kernels::add_units(sum_view, units, first, n, include);
  }
  result.clipped = tally.clipped();
  result.max_unit_norm = tally.max_norm();
  result.summary = tally.summary();
  return result;
}

}  // namespace detail

// Scales each row (options.units = axis::rows) or each column of m whose norm
// exceeds max_norm down to max_norm: coefficient max_norm / (norm + eps) when < 1;
// a unit within the limit is not written. m is an Eigen object with direct access
// (Matrix, Array, Map, Ref, Block; strided and row-major ones included).
// Throws std::invalid_argument (max_norm < 0 or NaN, norm_type <= 0 or NaN, eps < 0
// or not finite) and, under nonfinite::error, nonfinite_error, before writing anything.
template <class Matrix>
unit_clip_result clip_units_by_norm(Matrix&& m, double max_norm, const unit_clip_options& options = {}) {
  detail::check_matrix_type<Matrix>();
  return detail::clip_units<std::remove_reference_t<Matrix>, detail::void_sum>(m, max_norm, options, nullptr);
}

// The same, then adds every clipped unit into sum (sum += unit, element by element,
// in double and rounded once into sum's type): DP-SGD's sum of clipped per-example
// gradients. sum is a vector of the units' length (m.cols() for rows), of any
// element type; it is added to, not overwritten, so several calls (micro-batches)
// can accumulate into one sum: zero it first for a fresh one. It must not overlap m.
// Throws std::invalid_argument as clip_units_by_norm, and when sum is not a vector
// of the units' length, before writing anything.
template <class Matrix, class Sum>
unit_clip_result clip_units_and_accumulate(Matrix&& m, double max_norm, Sum&& sum,
                                           const unit_clip_options& options = {}) {
  detail::check_matrix_type<Matrix>();
  return detail::clip_units<std::remove_reference_t<Matrix>, std::remove_reference_t<Sum>>(m, max_norm, options, &sum);
}

// A fixed configuration for a training loop:
//   gradclip::unit_norm_clipper clip(1.0);   ...   clip.accumulate(per_example, sum);
class unit_norm_clipper {
 public:
  explicit unit_norm_clipper(double max_norm, const unit_clip_options& options = {})
      : max_norm_(max_norm), options_(options) {
    detail::check_unit_clip_options(max_norm, options);
  }

  template <class Matrix>
  unit_clip_result operator()(Matrix&& m) const {
    return clip_units_by_norm(std::forward<Matrix>(m), max_norm_, options_);
  }

  template <class Matrix, class Sum>
  unit_clip_result accumulate(Matrix&& m, Sum&& sum) const {
    return clip_units_and_accumulate(std::forward<Matrix>(m), max_norm_, std::forward<Sum>(sum), options_);
  }

  double max_norm() const noexcept { return max_norm_; }
  const unit_clip_options& options() const noexcept { return options_; }

 private:
  double max_norm_;
  unit_clip_options options_;
};

}  // namespace gradclip

#endif  // GRADCLIP_ADAPTIVE_CLIP_UNITS_HPP
