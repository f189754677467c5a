// gradclip: which buffers a norm comes from. Ranks per-buffer norms (from
// global_norm or clip_by_global_norm with buffer_norms) by their share of the
// group's norm, to name the layer that spiked:
//
//   std::vector<double> norms;
//   gradclip::clip_by_global_norm(grads, 1.0, {}, norms);
//   for (const auto& c : gradclip::top_contributors(norms, 3, names))
//     std::cout << c.name << " " << c.norm << " " << 100 * c.share << "%\n";
#ifndef GRADCLIP_CONTRIBUTORS_HPP
#define GRADCLIP_CONTRIBUTORS_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "detail/float_bits.hpp"
#include "detail/kernels/partials.hpp"
#include "detail/validate.hpp"

namespace gradclip {

// One buffer's part in a group's norm.
struct contribution {
  std::size_t index = 0;  // the buffer's position in the group
  double norm = 0.0;      // its own norm
  // norm^p / (sum of every buffer's norm^p): the fraction of the group's norm^p it
  // holds (the shares of all buffers add to 1). For p = infinity, norm / max norm.
  // 0 for every buffer when all norms are 0; NaN for every buffer when any norm
  // is NaN or infinite (a share of a non-finite total means nothing).
  double share = 0.0;
  std::string name;  // names[index] when names were given, else empty
};

namespace detail {

template <class Names>
std::vector<contribution> rank_contributors(const std::vector<double>& norms, std::size_t k, double norm_type,
                                            const Names* names) {
  check_norm_type(norm_type);
  bool finite = true;
  double top = 0.0;
  for (double n : norms) {
    if (n < 0.0) throw std::invalid_argument("gradclip::top_contributors: a norm is negative: " + number_text(n));
    finite = finite && is_finite(n);
    if (n > top) top = n;
  }
  // Shares from norm / max norm: terms in [0, 1], the largest exactly 1, so no
  // power of any norm (1e300 squared, a subnormal) leaves double's range.
  const auto spec = kernels::norm_spec::from(norm_type);
  const auto term = [&](double n) {
    const double r = n / top;
    switch (spec.kind) {
      case kernels::norm_kind::l1:
      case kernels::norm_kind::linf:
        return r;
      case kernels::norm_kind::l2:
        return r * r;
      default:
        return std::pow(r, norm_type);
    }
  };
  kernels::compensated_sum total;
  if (finite && top > 0.0 && spec.kind != kernels::norm_kind::linf) {
    for (double n : norms) total.add(term(n));
  }

  // Largest norm first (NaN above infinity above the rest), ties in group order.
  const auto key = [](double n) { return is_nan(n) ? std::numeric_limits<double>::infinity() : n; };
  const auto before = [&](std::size_t a, std::size_t b) {
    const double x = key(norms[a]), y = key(norms[b]);
    if (x != y) return x > y;
    if (is_nan(norms[a]) != is_nan(norms[b])) return is_nan(norms[a]);
    return a < b;
  };
  std::vector<std::size_t> order(norms.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  const std::size_t count = std::min(k, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(count), order.end(), before);

  std::vector<contribution> out(count);
  for (std::size_t j = 0; j < count; ++j) {
    const std::size_t i = order[j];
    contribution& c = out[j];
    c.index = i;
    c.norm = norms[i];
    if (!finite) {
      c.share = std::numeric_limits<double>::quiet_NaN();
    } else if (top > 0.0) {
      c.share = spec.kind == kernels::norm_kind::linf ? term(norms[i]) : term(norms[i]) / total.value();
    }
    if (names != nullptr) c.name = std::string((*names)[i]);
  }
  return out;
}

}  // namespace detail

// The k buffers holding the largest shares of the norm (fewer when there are fewer
// buffers), largest first; equal norms keep group order. buffer_norms: any range of
// norms, e.g. what global_norm(group, norm_type, buffer_norms) filled; norm_type
// must be the one they were computed with. Throws std::invalid_argument for a
// negative norm or a norm_type not > 0.
template <class Norms>
std::vector<contribution> top_contributors(const Norms& buffer_norms, std::size_t k, double norm_type = 2.0) {
  const std::vector<double> norms(std::begin(buffer_norms), std::end(buffer_norms));
  return detail::rank_contributors<std::vector<std::string>>(norms, k, norm_type, nullptr);
}

// The same, with each buffer's name from `names`, a range parallel to buffer_norms
// (anything a std::string is constructible from). Throws std::invalid_argument
// when the two ranges differ in length.
template <class Norms, class Names, std::enable_if_t<!std::is_arithmetic_v<Names>, int> = 0>
std::vector<contribution> top_contributors(const Norms& buffer_norms, std::size_t k, const Names& names,
                                           double norm_type = 2.0) {
  const std::vector<double> norms(std::begin(buffer_norms), std::end(buffer_norms));
  const auto named = static_cast<std::size_t>(std::distance(std::begin(names), std::end(names)));
  if (named != norms.size()) {
    throw std::invalid_argument("gradclip::top_contributors: " + std::to_string(named) + " names for " +
                                std::to_string(norms.size()) + " norms");
  }
  using name_type = typename std::iterator_traits<decltype(std::begin(names))>::value_type;
  const std::vector<name_type> list(std::begin(names), std::end(names));
  return detail::rank_contributors(norms, k, norm_type, &list);
}

}  // namespace gradclip

#endif  // GRADCLIP_CONTRIBUTORS_HPP
