// gradclip: norms of a buffer and of a group.
//
// norm_type is any p > 0 (1, 2, 3.5, ...) or std::numeric_limits<double>::infinity()
// for max |x|. Results are double whatever the element type. Double data (and any
// p other than 1, 2 and infinity) is summed in double lanes with compensation
// across blocks: relative error <= 1e-13. The L1 and L2 norms of float, half and
// bfloat16 data are summed in float lanes flushed into double ones every 16 terms
// per lane: <= 1e-6 for any input, about 1e-9 on random data (norm_accuracy::exact:
// double lanes, <= 1e-14). A check of the result and an automatic second pass keep
// every norm free of overflow and underflow for any finite input. A NaN anywhere
// gives NaN; otherwise an infinity gives inf (PyTorch's results).
#ifndef GRADCLIP_NORM_HPP
#define GRADCLIP_NORM_HPP

#include <cstddef>
#include <vector>

#include "buffer.hpp"
#include "detail/kernels/kernels.hpp"
#include "detail/validate.hpp"
#include "options.hpp"

namespace gradclip {

namespace detail {

// The norm of a group: measure, then the p-th root of the combined partial.
// report(i, partial): each buffer's own partial, from the same pass (measure).
template <class G, class Report = kernels::report_none>
double total_norm(G&& g, const kernels::norm_spec& spec, Report&& report = {}) noexcept {
  return kernels::norm_accumulator::finish(kernels::measure(g, spec, kernels::count_all{}, report), spec);
}

// measure, with every buffer's norm (counted or not) into out[0, buffer_count(g)):
// the bits norm() gives for each.
template <class G, class Counted = kernels::count_all>
kernels::norm_partial measure_with_buffer_norms(G&& g, const kernels::norm_spec& spec, double* out,
                                                Counted counted = {}) noexcept {
  const kernels::norm_partial part = kernels::measure(g, spec, counted, kernels::norm_sink{out, spec});
  kernels::finish_norms(out, buffer_count(g), spec);
  return part;
}

// total_norm, with buffer_norms sized to the group and filled by the same pass.
template <class G>
double total_and_buffer_norms(G&& g, const kernels::norm_spec& spec, std::vector<double>& buffer_norms) {
  buffer_norms.resize(buffer_count(g));  // the one step that may throw (bad_alloc), before any read
  return kernels::norm_accumulator::finish(measure_with_buffer_norms(g, spec, buffer_norms.data()), spec);
}

}  // namespace detail

// The norm of all buffers of a group taken as one vector. An empty group has norm 0.
// accuracy: how float, half and bfloat16 data are summed (gradclip/options.hpp).
// Throws std::invalid_argument if norm_type is not > 0.
template <class Group>
double global_norm(const Group& group, double norm_type = 2.0, norm_accuracy accuracy = norm_accuracy::fast) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_norm_type(norm_type);
  detail::check_accuracy(accuracy);
  return detail::total_norm(group, detail::spec_of(norm_type, accuracy));
}

// The same norm and, from the same read of the data, every buffer's own norm in
// group order: buffer_norms is resized to the group's buffer count and
// buffer_norms[i] is the bits norm(buffer i, norm_type, accuracy) gives. The
// returned norm is the bits of the call without buffer_norms. Throws
// std::invalid_argument (buffer_norms unchanged) if norm_type is not > 0.
template <class Group>
double global_norm(const Group& group, double norm_type, std::vector<double>& buffer_norms,
                   norm_accuracy accuracy = norm_accuracy::fast) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_norm_type(norm_type);
  detail::check_accuracy(accuracy);
  return detail::total_and_buffer_norms(group, detail::spec_of(norm_type, accuracy), buffer_norms);
}

// The norm of one buffer. Throws std::invalid_argument if norm_type is not > 0.
template <class Buffer>
double norm(const Buffer& x, double norm_type = 2.0, norm_accuracy accuracy = norm_accuracy::fast) {
  static_assert(is_buffer_v<Buffer>, "gradclip::norm takes one buffer; use gradclip::global_norm for a group");
  return global_norm(x, norm_type, accuracy);
}

// ---- partial norms: for norms of data spread over processes -------------------
//
// A partial is one process's share of a norm: norm^p = scale^p * sum (scale 1
// unless the data needed range-safe scaling; then a power of two for p = 1 and 2,
// max |x| for other p), or max |x| in sum for
// p = infinity. NaN or inf in sum marks non-finite data. Each rank computes the
// partial of its shard, any all-reduce combines them with combine_partials (an
// associative, commutative operation), and norm_from_partial gives the norm to
// pass to clip_with_norm. gradclip/mpi.hpp does all of this over MPI.
using norm_partial = detail::kernels::norm_partial;

template <class Group>
norm_partial partial_norm(const Group& group, double norm_type = 2.0, norm_accuracy accuracy = norm_accuracy::fast) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::partial_norm: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_norm_type(norm_type);
  detail::check_accuracy(accuracy);
  return detail::kernels::measure(group, detail::spec_of(norm_type, accuracy));
}

inline norm_partial combine_partials(const norm_partial& a, const norm_partial& b, double norm_type) {
  detail::check_norm_type(norm_type);
  detail::kernels::norm_accumulator acc(detail::kernels::norm_spec::from(norm_type));
  acc.add(a);
  acc.add(b);
  return acc.partial();
}

inline double norm_from_partial(const norm_partial& partial, double norm_type) {
  detail::check_norm_type(norm_type);
  return detail::kernels::norm_accumulator::finish(partial, detail::kernels::norm_spec::from(norm_type));
}

}  // namespace gradclip

#endif  // GRADCLIP_NORM_HPP
