// gradclip for libtorch's process groups (c10d): clip_grad_norm_ over a model whose
// gradients are spread across the ranks of a c10d::ProcessGroup (Gloo on CPU, NCCL
// on GPU: what DDP- and FSDP-style C++ trainers hold). Opt-in, beside
// gradclip/torch.hpp; needs libtorch's c10d headers (torch/csrc/distributed/c10d),
// nothing backend-specific: link gradclip::torch.
//
//   double total = gradclip::torch::clip_grad_norm_(my_params, 1.0, 2.0, false, *group);
//   double total = gradclip::torch::clip_grad_norm_(my_params, 1.0, 2.0, false, *group, counted);
//   double total = gradclip::torch::clip_grad_norm_(my_params, 1.0, 2.0, false, categories);
//   auto report = gradclip::torch::audit_ownership(my_params, ids, counted, *group);
//
// Every rank passes its own parameters (any number, any dtypes, possibly none); the
// norm is that of every rank's counted gradients taken as one vector, the same bits
// on every rank, and every rank scales all of its own gradients (counted or not) by
// the same coefficient, as gradclip::torch::clip_grad_norm_ does on one process.
// counted (empty: every parameter counts) has one flag per parameter, indexed like
// `parameters` (parameters without a gradient included); counted[i] == false leaves
// parameter i's gradient out of this rank's share of the norm but still scales it:
// a tensor-parallel duplicate, a tied embedding, a parameter every rank holds is
// counted on exactly one rank.
//
// The reduction: ONE all-reduce (ReduceOp::SUM) of a double tensor with one slot
// per rank; rank r writes its slot (its range-safe partial norm {scale, sum} as
// gradclip::partial_norm gives it, its arguments and a verdict) and zeros in the
// others, so the sum is every rank's slot, exactly (x + 0 is x, NaN and inf
// included: no reduction order or MAX can drop a NaN). Every rank then combines the
// partials in rank order with gradclip's range-safe accumulation: one result, the
// same bits everywhere, whatever the backend's algorithm. c10d has no user-defined
// reduction (MPI's custom operation, gradclip/mpi.hpp), and a SUM of raw p-th powers
// would overflow; the message is 6 doubles per rank (48 bytes * world size).
// The tensor lives on the CPU, or on the current CUDA device for NCCL.
//
// Gradients gradclip does not read directly (CUDA, sparse, gapped or overlapping,
// complex: see gradclip/torch.hpp) do NOT send the call to libtorch's own
// clip_grad_norm_ (which would not reduce across ranks): their share of the partial
// is computed with libtorch ops (max |x|, then the sum of (|x| / 2^e)^p in double),
// and they are scaled with mul_ by the same coefficient. Every rank therefore takes
// part in the same collective with the same shape.
//
// Collective contract: every rank of the group calls this, in the same order with
// its other collectives, with the same max_norm, norm_type and error_if_nonfinite.
// Those travel in the all-reduce and are checked there: if any rank's arguments are
// invalid (max_norm < 0 or NaN, norm_type <= 0 or NaN: the distributed form refuses
// what the one-process form hands to libtorch; a counted mask of the wrong size) or
// the ranks disagree, EVERY rank throws std::invalid_argument and nothing is
// modified anywhere. A rank whose share fails to compute (a libtorch error, out of
// memory) still takes part; then every rank throws std::runtime_error. A failing
// collective (c10d's own error or timeout) propagates c10d's exception.
// error_if_nonfinite = true: every rank sees the same non-finite total, so every
// rank throws c10::Error with libtorch's message and no rank writes; otherwise a
// non-finite norm propagates as in libtorch (NaN everywhere, zeros for inf).
#ifndef GRADCLIP_TORCH_DISTRIBUTED_HPP
#define GRADCLIP_TORCH_DISTRIBUTED_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "ownership.hpp"
#include "torch.hpp"

namespace gradclip::torch {

namespace detail::distributed {

// One rank's slot in the all-reduced tensor.
enum slot_field : int { f_scale, f_sum, f_norm_type, f_max_norm, f_error, f_status, slot_doubles };

inline constexpr double status_ok = 0.0;
inline constexpr double status_invalid = 1.0;  // this rank's arguments were invalid
inline constexpr double status_failed = 2.0;   // this rank could not compute its share

inline bool same(double a, double b) noexcept {
  return a == b || (gradclip::detail::is_nan(a) && gradclip::detail::is_nan(b));
}

// The partial of a gradient gradclip does not read, with libtorch ops: for finite p
// {2^e, sum (|x| / 2^e)^p} with 2^e >= max |x| (so no term overflows), in double;
// {1, max |x|} for p = inf. NaN / inf data gives a NaN / inf sum, as gradclip's own.
inline norm_partial libtorch_partial(const at::Tensor& grad, double norm_type) {
  at::Tensor g = grad;
  if (g.is_sparse()) g = g.coalesce().values();
  if (g.numel() == 0) return {};
  // |x| in double (a complex tensor's abs is its real magnitude, taken in its own precision).
  const at::Tensor a = g.is_complex() ? g.abs().to(at::kDouble) : g.to(at::kDouble).abs();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (a.isnan().any().item<bool>()) return {1.0, nan};
  const double max = a.max().item<double>();
  if (gradclip::detail::is_inf(norm_type) || !gradclip::detail::is_finite(max)) return {1.0, max};
  if (max == 0.0) return {};
  int e = 0;
  std::frexp(max, &e);  // max = m * 2^e, m in [0.5, 1)
  const double scale = std::ldexp(1.0, e);
  return {scale, a.div(scale).pow(norm_type).sum().item<double>()};
}

// This rank's gradients, sorted for measuring and scaling, and its partial.
struct share {
  gradclip::torch::detail::grad_groups direct;          // every supported gradient (scaled)
  gradclip::torch::detail::grad_groups counted_direct;  // the counted ones (measured)
  std::vector<at::Tensor> fallback;   // every unsupported gradient (scaled)
  norm_partial partial;               // this rank's partial
};

inline void compute_share(at::TensorList parameters, const std::vector<bool>& counted, double norm_type,
                          share& out) {
  std::vector<at::Tensor> counted_fallback;
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    const auto& g = parameters[i].grad();
    if (!g.defined()) continue;
    const bool counts = counted.empty() || counted[i];
    if (gradclip::torch::detail::supported_grad(g)) {
      out.direct.add(g);
      if (counts) out.counted_direct.add(g);
    } else {
      out.fallback.push_back(g);
      if (counts) counted_fallback.push_back(g);
    }
  }
  // The supported groups in torch.hpp's order (float, double, half, bfloat16), then
  // the others in parameter order: a rank's partial is the one-process one's bits
  // when everything is supported and counted.
  norm_partial total = out.counted_direct.partial(norm_type);
  for (const auto& g : counted_fallback) total = combine_partials(total, libtorch_partial(g, norm_type), norm_type);
  out.partial = total;
}

// This rank's slot: its partial (or {1, 0} when it failed), its arguments, its status.
struct slot_values {
  norm_partial partial;
  double status = status_ok;
  std::string error;  // this rank's own message when status != ok
};

// Validates this rank's arguments (and any `extra_error` of the caller's), and
// computes its share with `counted` as the counted mask. Never throws for a bad
// argument: the verdict is collective.
inline slot_values prepare(at::TensorList parameters, double max_norm, double norm_type,
                           const std::vector<bool>& counted, const std::string& extra_error, share& mine) {
  slot_values v;
  if (!extra_error.empty()) {
    v.error = extra_error;
    v.status = status_invalid;
  } else if (!gradclip::torch::detail::valid_norm_args(max_norm, norm_type)) {
    v.error = "gradclip::torch::clip_grad_norm_ (c10d): max_norm must be >= 0 and norm_type > 0 (got max_norm " +
              std::to_string(max_norm) + ", norm_type " + std::to_string(norm_type) + ")";
    v.status = status_invalid;
  } else if (!counted.empty() && counted.size() != parameters.size()) {
    v.error = "gradclip::torch::clip_grad_norm_ (c10d): counted has " + std::to_string(counted.size()) +
              " flags for " + std::to_string(parameters.size()) + " parameters";
    v.status = status_invalid;
  } else {
    try {  // a rank that cannot compute its share must not leave the others waiting
      compute_share(parameters, counted, norm_type, mine);
      v.partial = mine.partial;
    } catch (const std::exception& e) {
      v.error = std::string("gradclip::torch::clip_grad_norm_ (c10d): ") + e.what();
      v.status = status_failed;
    }
  }
  return v;
}

// ONE all-reduce (SUM) of a slot per rank, zeros but this rank's: every rank's
// slot, exactly. Returns size * slot_doubles values.
inline std::vector<double> exchange(c10d::ProcessGroup& group, const slot_values& v, double max_norm,
                                    double norm_type, bool error_if_nonfinite) {
  const int rank = group.getRank();
  const int size = group.getSize();
  std::vector<double> host(static_cast<std::size_t>(size) * slot_doubles, 0.0);
  double* slot = host.data() + static_cast<std::size_t>(rank) * slot_doubles;
  const bool ok = v.status == status_ok;
  slot[f_scale] = ok ? v.partial.scale : 1.0;
  slot[f_sum] = ok ? v.partial.sum : 0.0;
  slot[f_norm_type] = norm_type;
  slot[f_max_norm] = max_norm;
  slot[f_error] = error_if_nonfinite ? 1.0 : 0.0;
  slot[f_status] = v.status;

  auto options = at::TensorOptions().dtype(at::kDouble);
  at::Tensor buffer = at::from_blob(host.data(), {static_cast<std::int64_t>(host.size())}, options).clone();
  if (group.getBackendName() == "nccl") buffer = buffer.to(at::Device(at::kCUDA));
  std::vector<at::Tensor> tensors{buffer};
  c10d::AllreduceOptions reduce_options;
  reduce_options.reduceOp = c10d::ReduceOp::SUM;
  group.allreduce(tensors, reduce_options)->wait();
  const at::Tensor result = tensors[0].to(at::Device(at::kCPU)).contiguous();
  const double* all = result.data_ptr<double>();
  return std::vector<double>(all, all + host.size());
}

// The verdict, from the slots every rank of the group now holds: the same on every
// rank. Throws std::invalid_argument or std::runtime_error.
inline void verdict(const std::vector<double>& all, const slot_values& mine) {
  const std::size_t size = all.size() / slot_doubles;
  int invalid = -1, failed = -1;
  bool mismatch = false;
  for (std::size_t r = 0; r < size; ++r) {
    const double* s = all.data() + r * slot_doubles;
    if (s[f_status] == status_invalid && invalid < 0) invalid = static_cast<int>(r);
    if (s[f_status] == status_failed && failed < 0) failed = static_cast<int>(r);
    if (!same(s[f_norm_type], all[f_norm_type]) || !same(s[f_max_norm], all[f_max_norm]) ||
        s[f_error] != all[f_error]) {
      mismatch = true;
    }
  }
  if (invalid >= 0) {
    if (mine.status == status_invalid) {
      throw std::invalid_argument(mine.error + " (every rank of the group throws; nothing was modified)");
    }
    throw std::invalid_argument("gradclip::torch::clip_grad_norm_ (c10d): rank " + std::to_string(invalid) +
                                "'s arguments were invalid; nothing was modified");
  }
  if (mismatch) {
    throw std::invalid_argument(
        "gradclip::torch::clip_grad_norm_ (c10d): ranks passed different max_norm, norm_type or "
        "error_if_nonfinite; nothing was modified");
  }
  if (failed >= 0) {
    if (mine.status == status_failed) throw std::runtime_error(mine.error + " (every rank of the group throws)");
    throw std::runtime_error("gradclip::torch::clip_grad_norm_ (c10d): rank " + std::to_string(failed) +
                             " could not compute its share of the norm; nothing was modified");
  }
}

// Every rank's partial, in rank order, into the range-safe accumulation.
inline void add_slots(const std::vector<double>& all, gradclip::detail::kernels::norm_accumulator& acc) {
  for (std::size_t r = 0; r < all.size() / slot_doubles; ++r) {
    const double* s = all.data() + r * slot_doubles;
    acc.add({s[f_scale], s[f_sum]});
  }
}

inline double reduce(at::TensorList parameters, double max_norm, double norm_type, bool error_if_nonfinite,
                     c10d::ProcessGroup& group, const std::vector<bool>& counted, share& mine,
                     const std::string& extra_error = {}) {
  const slot_values v = prepare(parameters, max_norm, norm_type, counted, extra_error, mine);
  const auto all = exchange(group, v, max_norm, norm_type, error_if_nonfinite);
  verdict(all, v);
  gradclip::detail::kernels::norm_accumulator acc(gradclip::detail::kernels::norm_spec::from(norm_type));
  add_slots(all, acc);
  return acc.total();
}

// Scales every gradient of this rank by the coefficient of `total` (libtorch's
// max_norm / (total + 1e-6), clamped to 1), after the nonfinite check.
inline void apply(share& mine, double max_norm, double norm_type, bool error_if_nonfinite, double total) {
  if (error_if_nonfinite && !gradclip::detail::is_finite(total)) gradclip::torch::detail::throw_nonfinite(norm_type);
  mine.direct.clip_with_total(max_norm, total, norm_type);
  if (!mine.fallback.empty()) {
    const auto d = gradclip::detail::kernels::decide(total, {max_norm, 1e-6}, nonfinite::propagate);
    if (d.scales()) {
      // On the gradient itself, not on .data(): a sparse tensor's .data() is a shallow copy
      // whose in-place mul_ replaces the copy's values and leaves the gradient's unscaled.
      const at::NoGradGuard no_grad;
      for (auto& g : mine.fallback) g.mul_(d.reported());
    }
  }
}

}  // namespace detail::distributed

// torch::nn::utils::clip_grad_norm_ over the union of every rank's gradients:
// returns the total norm (the same on every rank) and scales this rank's gradients
// by max_norm / (total + 1e-6) when that is < 1. Collective over `group`.
inline double clip_grad_norm_(at::TensorList parameters, double max_norm, double norm_type, bool error_if_nonfinite,
                              c10d::ProcessGroup& group, const std::vector<bool>& counted = {}) {
  detail::distributed::share mine;
  const double total =
      detail::distributed::reduce(parameters, max_norm, norm_type, error_if_nonfinite, group, counted, mine);
  detail::distributed::apply(mine, max_norm, norm_type, error_if_nonfinite, total);
  return total;
}

inline double clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm, double norm_type,
                              bool error_if_nonfinite, c10d::ProcessGroup& group,
                              const std::vector<bool>& counted = {}) {
  return clip_grad_norm_(at::TensorList(parameters), max_norm, norm_type, error_if_nonfinite, group, counted);
}

inline double clip_grad_norm_(std::initializer_list<at::Tensor> parameters, double max_norm, double norm_type,
                              bool error_if_nonfinite, c10d::ProcessGroup& group,
                              const std::vector<bool>& counted = {}) {
  return clip_grad_norm_(at::TensorList(parameters), max_norm, norm_type, error_if_nonfinite, group, counted);
}

inline double clip_grad_norm_(const ::torch::OrderedDict<std::string, at::Tensor>& named_parameters, double max_norm,
                              double norm_type, bool error_if_nonfinite, c10d::ProcessGroup& group,
                              const std::vector<bool>& counted = {}) {
  return clip_grad_norm_(at::TensorList(named_parameters.values()), max_norm, norm_type, error_if_nonfinite, group,
                         counted);
}

// One category of parameters (dense, expert, shared, ...) for the categorized
// clip_grad_norm_: the parameters in it (one flag per parameter, indexed like
// `parameters`; a parameter is in at most one category, and one in none is scaled
// but not counted) and the process group over which its shards make up its whole
// norm (the tensor-parallel group for dense layers, the expert-parallel group for
// experts; see gradclip::mpi::category and the README's recipe).
struct category {
  c10d::ProcessGroup* group = nullptr;
  std::vector<bool> members;
};

// clip_grad_norm_ over categories: each category's members measured and
// all-reduced over its own process group (one all-reduce per category, in list
// order), the categories' partials combined in list order; every rank then scales
// all of its gradients by the same coefficient. Every rank of a category's group
// passes its categories in the same order with the same arguments. Bad or
// disagreeing arguments throw std::invalid_argument on every rank that shares a
// category group with the faulty one (all the all-reduces run first), nothing
// modified; an empty list or a null group throws on that rank alone, before any
// collective.
inline double clip_grad_norm_(at::TensorList parameters, double max_norm, double norm_type, bool error_if_nonfinite,
                              const std::vector<category>& categories) {
  if (categories.empty()) throw std::invalid_argument("gradclip::torch::clip_grad_norm_ (c10d): no categories");
  for (const auto& c : categories) {
    if (c.group == nullptr) throw std::invalid_argument("gradclip::torch::clip_grad_norm_ (c10d): a null group");
  }
  std::string error;  // a members mask of the wrong size, a parameter in two categories
  std::vector<bool> seen(parameters.size(), false);
  for (const auto& c : categories) {
    if (c.members.size() != parameters.size()) {
      error = "gradclip::torch::clip_grad_norm_ (c10d): a category's members has " +
              std::to_string(c.members.size()) + " flags for " + std::to_string(parameters.size()) + " parameters";
      break;
    }
    for (std::size_t i = 0; i < parameters.size() && error.empty(); ++i) {
      if (c.members[i] && seen[i]) {
        error = "gradclip::torch::clip_grad_norm_ (c10d): parameter " + std::to_string(i) +
                " is in more than one category (it would count twice)";
      }
      seen[i] = seen[i] || c.members[i];
    }
    if (!error.empty()) break;
  }

  // Every category's exchange first, then the verdicts.
  std::vector<detail::distributed::share> shares(categories.size());  // each sorts every gradient too
  std::vector<detail::distributed::slot_values> values;
  std::vector<std::vector<double>> slots;
  for (std::size_t k = 0; k < categories.size(); ++k) {
    values.push_back(detail::distributed::prepare(parameters, max_norm, norm_type, categories[k].members, error,
                                                  shares[k]));
    slots.push_back(
        detail::distributed::exchange(*categories[k].group, values.back(), max_norm, norm_type, error_if_nonfinite));
  }
  for (std::size_t k = 0; k < categories.size(); ++k) detail::distributed::verdict(slots[k], values[k]);
  gradclip::detail::kernels::norm_accumulator acc(gradclip::detail::kernels::norm_spec::from(norm_type));
  for (const auto& all : slots) detail::distributed::add_slots(all, acc);
  const double total = acc.total();
  // Every share holds all of this rank's gradients (direct and fallback); scale through the first.
  detail::distributed::apply(shares[0], max_norm, norm_type, error_if_nonfinite, total);
  return total;
}

// Checks that the counted mask counts every piece of the model exactly once (see
// gradclip/ownership.hpp): `ids` (one per parameter, indexed like `parameters`)
// name what each parameter's gradient holds, the same id on every rank holding a
// copy. Gathers every rank's (id, counted flag, norm) of the parameters with a
// gradient and returns the same report on every rank; counted_norm is the bits
// clip_grad_norm_(parameters, ..., group, counted) computes. A debugging tool:
// three all-reduces (the norm, then ids and norms in slots), a second read of the
// gradients for their own norms, O(total parameters) memory on every rank. Over
// categories, audit each category over its group. Collective over `group`; bad
// arguments on any rank throw std::invalid_argument on every rank.
inline ownership_report audit_ownership(at::TensorList parameters, const std::vector<std::uint64_t>& ids,
                                        const std::vector<bool>& counted, c10d::ProcessGroup& group,
                                        double norm_type = 2.0) {
  std::string error;
  if (ids.size() != parameters.size()) {
    error = "gradclip::torch::audit_ownership: " + std::to_string(ids.size()) + " ids for " +
            std::to_string(parameters.size()) + " parameters";
  }
  detail::distributed::share mine;
  ownership_report report;
  report.counted_norm = detail::distributed::reduce(parameters, 0.0, norm_type, false, group, counted, mine, error);

  // This rank's records: parameters with a gradient.
  const auto spec = gradclip::detail::kernels::norm_spec::from(norm_type);
  std::vector<std::int64_t> my_ids;
  std::vector<double> my_records;  // (norm, counted) pairs
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    const auto& g = parameters[i].grad();
    if (!g.defined()) continue;
    norm_partial part;
    if (gradclip::torch::detail::supported_grad(g)) {
      gradclip::torch::detail::grad_groups one;
      one.add(g);
      part = one.partial(norm_type);
    } else {
      part = detail::distributed::libtorch_partial(g, norm_type);
    }
    my_ids.push_back(static_cast<std::int64_t>(ids[i]));  // two's complement: the SUM below is exact
    my_records.push_back(norm_from_partial(part, norm_type));
    my_records.push_back(counted.empty() || counted[i] ? 1.0 : 0.0);
  }

  // Sizes, then ids and records, each in slots (zeros but this rank's): SUM is exact.
  const int rank = group.getRank();
  const auto size = static_cast<std::size_t>(group.getSize());
  const bool nccl = group.getBackendName() == "nccl";
  const auto sum_all = [&](at::Tensor t) {
    if (nccl) t = t.to(at::Device(at::kCUDA));
    std::vector<at::Tensor> tensors{t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    group.allreduce(tensors, o)->wait();
    return tensors[0].to(at::Device(at::kCPU)).contiguous();
  };
  at::Tensor counts = at::zeros({static_cast<std::int64_t>(size)}, at::TensorOptions().dtype(at::kLong));
  counts[rank] = static_cast<std::int64_t>(my_ids.size());
  counts = sum_all(counts);
  const std::int64_t* count = counts.data_ptr<std::int64_t>();
  std::int64_t total = 0, first = 0;
  for (std::size_t r = 0; r < size; ++r) {
    if (static_cast<int>(r) == rank) first = total;
    total += count[r];
  }
  at::Tensor all_ids = at::zeros({total}, at::TensorOptions().dtype(at::kLong));
  at::Tensor all_records = at::zeros({2 * total}, at::TensorOptions().dtype(at::kDouble));
  std::copy(my_ids.begin(), my_ids.end(), all_ids.data_ptr<std::int64_t>() + first);
  std::copy(my_records.begin(), my_records.end(), all_records.data_ptr<double>() + 2 * first);
  all_ids = sum_all(all_ids);
  all_records = sum_all(all_records);

  std::vector<std::uint64_t> record_ids(static_cast<std::size_t>(total));
  std::vector<double> norms(static_cast<std::size_t>(total));
  std::vector<unsigned char> flags(static_cast<std::size_t>(total));
  std::vector<int> rank_of;
  rank_of.reserve(static_cast<std::size_t>(total));
  for (std::size_t r = 0; r < size; ++r) rank_of.insert(rank_of.end(), static_cast<std::size_t>(count[r]), static_cast<int>(r));
  const std::int64_t* gi = all_ids.data_ptr<std::int64_t>();
  const double* gr = all_records.data_ptr<double>();
  for (std::size_t k = 0; k < record_ids.size(); ++k) {
    record_ids[k] = static_cast<std::uint64_t>(gi[k]);
    norms[k] = gr[2 * k];
    flags[k] = gr[2 * k + 1] != 0.0 ? 1 : 0;
  }
  const double counted_norm = report.counted_norm;
  report = gradclip::detail::ownership_from_records(record_ids, flags, norms, rank_of, spec);
  report.counted_norm = counted_norm;
  return report;
}

}  // namespace gradclip::torch

#endif  // GRADCLIP_TORCH_DISTRIBUTED_HPP
