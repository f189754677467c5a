// gradclip/mpi.hpp: norms and norm clipping of gradients sharded across MPI ranks
// (ZeRO / FSDP shards, tensor- and pipeline-parallel slices). Opt-in: not part of
// gradclip.hpp; needs <mpi.h> (link gradclip::mpi in CMake).
//
//   auto r = gradclip::mpi::clip_by_global_norm(my_shard, 1.0, MPI_COMM_WORLD);
//
// Every rank passes its own group (any sizes, any element types, possibly empty);
// the norm is that of all ranks' buffers taken as one vector, and every rank scales
// its own buffers by the same coefficient, exactly as gradclip::clip_by_global_norm
// does on one process. Each call is ONE MPI_Allreduce of a few doubles: the ranks'
// partial norms (gradclip::partial_norm: range-safe scaled sums, so no rank's
// partial overflows or underflows) combined with gradclip::combine_partials.
//
// The norm matches the single-process norm of all the data to rounding (the sums
// are grouped differently), and every rank gets the same bits: the reduction is
// commutative bit for bit, so MPI's pairwise exchanges give both partners the same
// result (the MPI standard recommends one result on all ranks; Open MPI gives it,
// and tests/mpi checks it). Replicated copies therefore stay identical.
//
// Collective contract: every rank of comm calls the same function, in the same
// order with its other collectives, with the same norm_type, max_norm and options.
// Those agreements are checked in the same all-reduce: if any rank's arguments are
// invalid, or ranks disagree on them, EVERY rank throws std::invalid_argument and
// nothing is modified anywhere (no rank is left waiting in a collective).
//
// Non-finite gradients follow clip_options::on_nonfinite on every rank at once,
// since every rank sees the same NaN / inf total norm:
//   propagate  PyTorch's result on every rank;
//   skip       no rank writes; each returns clipped == false and the total norm;
//   error      every rank throws nonfinite_error and no rank writes; tensor_index()
//              is the first non-finite buffer of the rank's own group, npos on
//              ranks whose group is finite.
//
// Ownership: every piece of the model must count exactly once in the norm, as
// DeepSpeed and Megatron-LM count it, while every holder still scales its copy (so
// copies stay identical).
//  - counted_buffers{flags}: one flag per buffer of this rank's group, in group
//    order; false leaves the buffer out of this rank's share (a replica counted on
//    another rank, a tied weight). The general form.
//  - `replicated` (a plain std::vector<bool>): the flagged buffers count on rank 0
//    of comm only; counted_from_replicated(replicated, comm) is the mask it means.
//  - categories (std::vector<category>): each category (dense, expert, shared,
//    ...) names the buffers in it and the communicator over which its shards make
//    up its whole norm (the tensor-parallel group for dense layers, the expert-
//    and tensor-parallel group for experts); each is reduced over its own
//    communicator, and the categories' partials are then combined in list order.
//  - audit_ownership: gathers every buffer's id, flag and norm and reports the
//    first piece counted twice or never, and the norm without duplicates.
//
// Errors: std::invalid_argument as above; std::runtime_error with MPI's message when
// an MPI call fails (only seen with an error handler such as MPI_ERRORS_RETURN on
// comm; the default MPI_ERRORS_ARE_FATAL aborts first), or when MPI is not
// initialized or already finalized. Thread safety is MPI's: concurrent calls need
// MPI_THREAD_MULTIPLE (or serialising under MPI_THREAD_SERIALIZED).
#ifndef GRADCLIP_MPI_HPP
#define GRADCLIP_MPI_HPP

#include <mpi.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "buffer.hpp"
#include "clip_norm.hpp"
#include "norm.hpp"
#include "ownership.hpp"
#include "detail/float_bits.hpp"
#include "detail/kernels/kernels.hpp"
#include "detail/validate.hpp"

namespace gradclip::mpi {

// Which of this rank's buffers count in its share of the norm: one flag per buffer
// of its group, in group order (false: the buffer is left out of the norm here,
// counted on another rank, but still scaled). A type of its own so that it cannot
// be mistaken for a `replicated` mask, whose flags mean the opposite.
struct counted_buffers {
  std::vector<bool> flags;
};

// One category of buffers (dense, expert, shared, ...): the buffers of this rank's
// group in it (one flag per buffer, in group order; a buffer is in at most one
// category, and one in none is scaled but not counted) and the communicator over
// which its shards make up its whole norm. Every rank of `comm` passes the same
// categories in the same order.
struct category {
  MPI_Comm comm = MPI_COMM_NULL;
  std::vector<bool> members;
};

using gradclip::ownership_report;  // what audit_ownership returns (gradclip/ownership.hpp)

}  // namespace gradclip::mpi

namespace gradclip::detail::mpi {

// What each rank contributes to the all-reduce. The partial alone would be two
// doubles, but the reduction function receives no context, so norm_type (which
// combine_partials needs for p-th powers of the scale ratios) travels with it; the
// remaining arguments ride along so that the same message checks they agree.
struct message {
  double scale;      // the partial: norm^p = scale^p * sum
  double sum;        //   (max |x| for p = inf; NaN / inf mark non-finite data)
  double norm_type;  // must agree on all ranks
  double max_norm;   //   (0, 0, -1 for global_norm)
  double eps;
  double policy;
  double status;     // the worst of the statuses below, over all ranks
};

inline constexpr double status_ok = 0.0;
inline constexpr double status_mismatch = 1.0;  // ranks passed different arguments
inline constexpr double status_invalid = 2.0;   // some rank's arguments were invalid

inline constexpr int message_doubles = 7;
static_assert(sizeof(message) == message_doubles * sizeof(double), "gradclip::mpi: message must be plain doubles");

inline bool same(double a, double b) noexcept { return a == b || (is_nan(a) && is_nan(b)); }

// The reduction: commutative (combine_partials is, bit for bit: a two-term
// compensated sum and a max are symmetric) and associative up to rounding.
inline message combine(const message& a, const message& b) noexcept {
  message r = b;
  r.status = a.status > b.status ? a.status : b.status;
  if (r.status == status_ok && !(same(a.norm_type, b.norm_type) && same(a.max_norm, b.max_norm) &&
                                 same(a.eps, b.eps) && same(a.policy, b.policy))) {
    r.status = status_mismatch;
  }
  if (r.status != status_ok) {
    r.scale = 1.0;
    r.sum = std::numeric_limits<double>::quiet_NaN();
    return r;
  }
  try {  // norm_type was validated on every rank; this never throws, but nothing may escape into MPI
    const norm_partial c = gradclip::combine_partials({a.scale, a.sum}, {b.scale, b.sum}, b.norm_type);
    r.scale = c.scale;
    r.sum = c.sum;
  } catch (...) {
    r.status = status_invalid;
  }
  return r;
}

inline void reduce_messages(void* in, void* inout, int* len, MPI_Datatype*) noexcept {
  const auto* a = static_cast<const message*>(in);
  auto* b = static_cast<message*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = combine(a[i], b[i]);
}

[[noreturn]] inline void throw_mpi_error(int code, const char* call) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  std::string msg = std::string("gradclip::mpi: ") + call + " failed";
  if (length > 0) msg += ": " + std::string(text, static_cast<std::size_t>(length));
  throw std::runtime_error(msg);
}

inline void check(int code, const char* call) {
  if (code != MPI_SUCCESS) throw_mpi_error(code, call);
}

// The datatype and operation, created on first use and freed by MPI_Finalize:
// attributes of MPI_COMM_SELF are deleted at the start of MPI_Finalize, while MPI
// may still be called, so the delete callback frees them there (a static
// destructor would run after MPI_Finalize, when freeing is no longer allowed).
// Creation is a C++ magic static, so racing first calls are safe under
// MPI_THREAD_MULTIPLE. A contiguous type of one message (count 1), never
// MPI_DOUBLE with count 7: MPI may split a count of a basic type across segments
// of a pipelined or reduce-scatter all-reduce and apply the operation to pieces.
// Creating and freeing both on every call was measured at 0.2 to 3 us per call
// with Open MPI 4.1, as much as an on-node all-reduce of this message, for no gain.
class reduction {
 public:
  static const reduction& get() {
    static const reduction instance;
    return instance;
  }

  MPI_Datatype type() const noexcept { return type_; }
  MPI_Op op() const noexcept { return op_; }

  reduction(const reduction&) = delete;
  reduction& operator=(const reduction&) = delete;

 private:
  reduction() {
    check(MPI_Type_contiguous(message_doubles, MPI_DOUBLE, &type_), "MPI_Type_contiguous");
    int code = MPI_Type_commit(&type_);
    if (code == MPI_SUCCESS) code = MPI_Op_create(&reduce_messages, /*commute=*/1, &op_);
    int keyval = MPI_KEYVAL_INVALID;
    if (code == MPI_SUCCESS) code = MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, &release, &keyval, nullptr);
    if (code == MPI_SUCCESS) code = MPI_Comm_set_attr(MPI_COMM_SELF, keyval, this);
    if (code != MPI_SUCCESS) {
      if (keyval != MPI_KEYVAL_INVALID) MPI_Comm_free_keyval(&keyval);
      free_handles();
      throw_mpi_error(code, "creating the reduction (MPI_Op_create)");
    }
  }

  static int release(MPI_Comm, int keyval, void* attribute, void*) {
    static_cast<reduction*>(attribute)->free_handles();
    MPI_Comm_free_keyval(&keyval);
    return MPI_SUCCESS;
  }

  void free_handles() noexcept {
    if (op_ != MPI_OP_NULL) MPI_Op_free(&op_);
    if (type_ != MPI_DATATYPE_NULL) MPI_Type_free(&type_);
  }

  MPI_Datatype type_ = MPI_DATATYPE_NULL;
  MPI_Op op_ = MPI_OP_NULL;
};

// MPI_Initialized and MPI_Finalized may be called at any time; without this check
// a call before MPI_Init or after MPI_Finalize would be undefined behaviour.
inline void require_mpi_running(MPI_Comm comm) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    throw std::runtime_error(std::string("gradclip::mpi: MPI is ") + (finalized ? "finalized" : "not initialized"));
  }
  if (comm == MPI_COMM_NULL) throw std::invalid_argument("gradclip::mpi: comm is MPI_COMM_NULL");
  int inter = 0;
  check(MPI_Comm_test_inter(comm, &inter), "MPI_Comm_test_inter");
  // An all-reduce over an intercommunicator returns the other group's result.
  if (inter) throw std::invalid_argument("gradclip::mpi: comm is an intercommunicator; pass an intracommunicator");
}

inline void check_mask(std::size_t mask_size, std::size_t buffers, const char* what = "counted / replicated mask") {
  if (mask_size != buffers) {
    throw std::invalid_argument(std::string("gradclip::mpi: the ") + what + " has " + std::to_string(mask_size) +
                                " flags for a group of " + std::to_string(buffers) + " buffers");
  }
}

// This rank's share of the norm: the group through the measure stage, the
// buffers whose flag is false left out (counted == nullptr: all count).
// With buffer_norms, every buffer's own norm (counted or not) from the same pass.
template <class Group>
norm_partial shard_partial(const Group& group, const std::vector<bool>* counted, const kernels::norm_spec& spec,
                           std::vector<double>* buffer_norms) noexcept {
  const auto measure = [&](auto counts) {
    if (buffer_norms == nullptr) return kernels::measure(group, spec, counts);
    return measure_with_buffer_norms(group, spec, buffer_norms->data(), counts);
  };
  if (counted == nullptr) return measure(kernels::count_all{});
  return measure([counted](std::size_t i) { return static_cast<bool>((*counted)[i]); });
}

// Validates locally, all-reduces the partials together with the arguments and the
// verdict, and throws on every rank if any rank's arguments were bad. Returns the
// global norm; buffer_norms, when given, gets this rank's buffers' norms.
// One all-reduce of a message over comm: the ranks' partials combined and the
// worst status.
inline message all_reduce(message m, MPI_Comm comm) {
  const reduction& red = reduction::get();
  check(MPI_Allreduce(MPI_IN_PLACE, &m, 1, red.type(), red.op(), comm), "MPI_Allreduce");
  return m;
}

// The verdict every rank of the communicator shares once the message is reduced:
// throws on every rank if some rank's arguments were invalid or the ranks' differ.
inline norm_partial verdict(const message& m, const std::string& local_error) {
  if (m.status == status_invalid) {
    if (!local_error.empty()) throw std::invalid_argument(local_error + " (every rank of the communicator throws)");
    throw std::invalid_argument("gradclip::mpi: another rank's arguments were invalid; nothing was modified");
  }
  if (m.status != status_ok) {
    throw std::invalid_argument(
        "gradclip::mpi: ranks passed different norm_type, max_norm, eps or on_nonfinite (or called different "
        "gradclip::mpi functions); nothing was modified");
  }
  return {m.scale, m.sum};
}

template <class Group>
double reduce_norm(const Group& group, const std::vector<bool>* counted, MPI_Comm comm, double norm_type,
                   norm_accuracy accuracy, double max_norm, double eps, double policy,
                   void (*validate)(double, double, double, double), std::vector<double>* buffer_norms = nullptr) {
  require_mpi_running(comm);

  std::string local_error;
  try {
    validate(norm_type, max_norm, eps, policy);
    check_accuracy(accuracy);  // a rank's own: each rank's partial is valid in either
    if (counted != nullptr) check_mask(counted->size(), buffer_count(group));
  } catch (const std::invalid_argument& e) {
    local_error = e.what();
  }
  if (local_error.empty() && buffer_norms != nullptr) {
    try {  // sized before the collective: a rank that cannot must not leave the others waiting
      buffer_norms->resize(buffer_count(group));
    } catch (const std::bad_alloc&) {
      local_error = "gradclip::mpi: out of memory for buffer_norms";
    }
  }

  message m{1.0, 0.0, norm_type, max_norm, eps, policy, status_ok};
  if (local_error.empty()) {
    const norm_partial part = shard_partial(group, counted, spec_of(norm_type, accuracy), buffer_norms);
    m.scale = part.scale;
    m.sum = part.sum;
  } else {
    m.status = status_invalid;
  }
  return norm_from_partial(verdict(all_reduce(m, comm), local_error), norm_type);
}

inline void validate_norm_type(double norm_type, double, double, double) { check_norm_type(norm_type); }

// The clip options, through the one check of the core; the policy travels as its
// code, and anything but a policy's code is refused.
inline void validate_clip(double norm_type, double max_norm, double eps, double policy) {
  const bool known = policy == 0.0 || policy == 1.0 || policy == 2.0;
  const auto code = static_cast<nonfinite>(known ? static_cast<int>(policy) : -1);
  check_clip_options(max_norm, {norm_type, eps, code});
}

inline double policy_code(nonfinite policy) noexcept { return static_cast<double>(static_cast<int>(policy)); }

template <class Group>
clip_result clip(Group&& group, const std::vector<bool>* counted, double max_norm, MPI_Comm comm,
                 const clip_options& options, std::vector<double>* buffer_norms = nullptr) {
  const double total = reduce_norm(group, counted, comm, options.norm_type, options.accuracy, max_norm,
                                   options.eps, policy_code(options.on_nonfinite), &validate_clip, buffer_norms);
  // Every rank holds the same total, so every rank takes the same decision here.
  return gradclip::clip_with_norm(group, max_norm, total, options);
}


// Throws on every rank of every category's communicator that saw a bad status.
// All the all-reduces run first, so that no rank leaves a collective another rank
// is waiting in; a rank that shares no category communicator with a rank whose
// arguments were bad does not see them.
template <class Group>
double reduce_categories(const Group& group, const std::vector<gradclip::mpi::category>& categories,
                         double norm_type, norm_accuracy accuracy, double max_norm, double eps, double policy,
                         void (*validate)(double, double, double, double)) {
  if (categories.empty()) throw std::invalid_argument("gradclip::mpi: no categories");
  for (const auto& c : categories) require_mpi_running(c.comm);

  std::string local_error;
  const std::size_t buffers = buffer_count(group);
  try {
    validate(norm_type, max_norm, eps, policy);
    check_accuracy(accuracy);
    std::vector<bool> seen(buffers, false);
    for (const auto& c : categories) {
      check_mask(c.members.size(), buffers, "category's members mask");
      for (std::size_t i = 0; i < buffers; ++i) {
        if (!c.members[i]) continue;
        if (seen[i]) {
          throw std::invalid_argument("gradclip::mpi: buffer " + std::to_string(i) +
                                      " is in more than one category (it would count twice)");
        }
        seen[i] = true;
      }
    }
  } catch (const std::invalid_argument& e) {
    local_error = e.what();
  }

  const auto spec = spec_of(local_error.empty() ? norm_type : 2.0, accuracy);
  std::vector<message> reduced;
  reduced.reserve(categories.size());
  for (const auto& c : categories) {
    message m{1.0, 0.0, norm_type, max_norm, eps, policy, status_ok};
    if (local_error.empty()) {
      const norm_partial part = shard_partial(group, &c.members, spec, nullptr);
      m.scale = part.scale;
      m.sum = part.sum;
    } else {
      m.status = status_invalid;
    }
    reduced.push_back(all_reduce(m, c.comm));
  }
  kernels::norm_accumulator total(spec);
  for (const auto& m : reduced) total.add(verdict(m, local_error));
  return total.total();
}

template <class T>
void all_gather(const std::vector<T>& mine, std::vector<T>& all, MPI_Datatype type, const std::vector<int>& counts,
                MPI_Comm comm) {
  std::vector<int> displs(counts.size(), 0);
  std::size_t total = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    displs[r] = static_cast<int>(total);
    total += static_cast<std::size_t>(counts[r]);
  }
  all.assign(total, T{});
  check(MPI_Allgatherv(mine.data(), static_cast<int>(mine.size()), type, all.data(), counts.data(), displs.data(),
                       type, comm),
        "MPI_Allgatherv");
}

}  // namespace gradclip::detail::mpi

namespace gradclip::mpi {

// The norm of all ranks' groups taken as one vector; the same value on every rank.
// Collective over comm. Throws std::invalid_argument on every rank if norm_type is
// not > 0 on some rank or differs between ranks.
template <class Group>
double global_norm(const Group& group, MPI_Comm comm, double norm_type = 2.0,
                   norm_accuracy accuracy = norm_accuracy::fast) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::reduce_norm(group, nullptr, comm, norm_type, accuracy, 0.0, 0.0, -1.0,
                                  &detail::mpi::validate_norm_type);
}

// The `replicated` mask (one flag per buffer of this rank's group: a buffer every
// rank of comm holds) as the counted mask it means: every buffer counts on rank 0
// of comm, the unflagged ones elsewhere. Local (no collective).
inline counted_buffers counted_from_replicated(const std::vector<bool>& replicated, MPI_Comm comm) {
  detail::mpi::require_mpi_running(comm);
  int rank = 0;
  detail::mpi::check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  counted_buffers c;
  c.flags.resize(replicated.size());
  for (std::size_t i = 0; i < replicated.size(); ++i) c.flags[i] = rank == 0 || !replicated[i];
  return c;
}

// The norm counting this rank's buffers whose flag is true (the general form of
// ownership; see counted_buffers). Throws std::invalid_argument on every rank if
// some rank's mask does not have one flag per buffer.
template <class Group>
double global_norm(const Group& group, const counted_buffers& counted, MPI_Comm comm, double norm_type = 2.0,
                   norm_accuracy accuracy = norm_accuracy::fast) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::reduce_norm(group, &counted.flags, comm, norm_type, accuracy, 0.0, 0.0, -1.0,
                                  &detail::mpi::validate_norm_type);
}

// The same, counting the buffers flagged in `replicated` (one flag per buffer of
// this rank's group) on rank 0 only: global_norm(group,
// counted_from_replicated(replicated, comm), comm, ...).
template <class Group>
double global_norm(const Group& group, const std::vector<bool>& replicated, MPI_Comm comm, double norm_type = 2.0,
                   norm_accuracy accuracy = norm_accuracy::fast) {
  return global_norm(group, counted_from_replicated(replicated, comm), comm, norm_type, accuracy);
}

// The same norm and this rank's buffers' own norms from the same pass, in group
// order (buffer_norms resized to the group's buffer count; the bits
// gradclip::norm gives for each buffer, uncounted ones included). The returned
// norm is the bits of the call without buffer_norms.
template <class Group>
double global_norm(const Group& group, MPI_Comm comm, double norm_type, std::vector<double>& buffer_norms,
                   norm_accuracy accuracy = norm_accuracy::fast) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::reduce_norm(group, nullptr, comm, norm_type, accuracy, 0.0, 0.0, -1.0,
                                  &detail::mpi::validate_norm_type, &buffer_norms);
}

template <class Group>
double global_norm(const Group& group, const counted_buffers& counted, MPI_Comm comm, double norm_type,
                   std::vector<double>& buffer_norms, norm_accuracy accuracy = norm_accuracy::fast) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::reduce_norm(group, &counted.flags, comm, norm_type, accuracy, 0.0, 0.0, -1.0,
                                  &detail::mpi::validate_norm_type, &buffer_norms);
}

template <class Group>
double global_norm(const Group& group, const std::vector<bool>& replicated, MPI_Comm comm, double norm_type,
                   std::vector<double>& buffer_norms, norm_accuracy accuracy = norm_accuracy::fast) {
  return global_norm(group, counted_from_replicated(replicated, comm), comm, norm_type, buffer_norms, accuracy);
}

// The norm over categories: each category's members measured and all-reduced over
// the category's communicator, then the categories' partials combined in list
// order (one all-reduce per category). E.g. TP x DP x EP: dense layers over the
// tensor-parallel group (their data-parallel copies are alike), experts over the
// expert- and tensor-parallel group; see the README's recipe. Every rank of a
// category's communicator passes its categories in the same order with the same
// arguments; bad or disagreeing arguments throw std::invalid_argument on every rank
// that shares a category communicator with the faulty one, nothing modified.
// An empty list, or a category whose comm is MPI_COMM_NULL, throws on that rank
// alone before any collective.
template <class Group>
double global_norm(const Group& group, const std::vector<category>& categories, double norm_type = 2.0,
                   norm_accuracy accuracy = norm_accuracy::fast) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::reduce_categories(group, categories, norm_type, accuracy, 0.0, 0.0, -1.0,
                                        &detail::mpi::validate_norm_type);
}

// gradclip::clip_by_global_norm over the union of all ranks' groups: every rank
// scales its own group by max_norm / (global norm + eps) when that is < 1 and
// returns the same total_norm, scale and clipped. Collective over comm; the
// exceptions (std::invalid_argument, nonfinite_error) are thrown on every rank
// together, before anything is modified.
template <class Group>
clip_result clip_by_global_norm(Group&& group, double max_norm, MPI_Comm comm, const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::clip_by_global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::clip(group, nullptr, max_norm, comm, options);
}

// The same, counting the buffers whose flag is true (every rank still scales all
// of its buffers).
template <class Group>
clip_result clip_by_global_norm(Group&& group, const counted_buffers& counted, double max_norm, MPI_Comm comm,
                                const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::clip_by_global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::clip(group, &counted.flags, max_norm, comm, options);
}

// The same, counting the buffers flagged in `replicated` on rank 0 only.
template <class Group>
clip_result clip_by_global_norm(Group&& group, const std::vector<bool>& replicated, double max_norm, MPI_Comm comm,
                                const clip_options& options = {}) {
  return clip_by_global_norm(group, counted_from_replicated(replicated, comm), max_norm, comm, options);
}

// The clips with this rank's buffers' norms before clipping from the norm's own
// pass (as global_norm with buffer_norms); data and result are the bits of the
// call without them.
template <class Group>
clip_result clip_by_global_norm(Group&& group, double max_norm, MPI_Comm comm, const clip_options& options,
                                std::vector<double>& buffer_norms) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::clip_by_global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::clip(group, nullptr, max_norm, comm, options, &buffer_norms);
}

template <class Group>
clip_result clip_by_global_norm(Group&& group, const counted_buffers& counted, double max_norm, MPI_Comm comm,
                                const clip_options& options, std::vector<double>& buffer_norms) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::clip_by_global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::clip(group, &counted.flags, max_norm, comm, options, &buffer_norms);
}

template <class Group>
clip_result clip_by_global_norm(Group&& group, const std::vector<bool>& replicated, double max_norm, MPI_Comm comm,
                                const clip_options& options, std::vector<double>& buffer_norms) {
  return clip_by_global_norm(group, counted_from_replicated(replicated, comm), max_norm, comm, options,
                             buffer_norms);
}

// The clip over categories (see global_norm with categories): every rank scales
// all of its buffers, in a category or not, by the coefficient of the combined norm.
template <class Group>
clip_result clip_by_global_norm(Group&& group, const std::vector<category>& categories, double max_norm,
                                const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::clip_by_global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  const double total = detail::mpi::reduce_categories(group, categories, options.norm_type, options.accuracy,
                                                      max_norm, options.eps,
                                                      detail::mpi::policy_code(options.on_nonfinite),
                                                      &detail::mpi::validate_clip);
  return gradclip::clip_with_norm(group, max_norm, total, options);
}

// Checks that the counted masks count every piece of the model exactly once.
// `ids` (one per buffer of this rank's group) name what each buffer holds: a
// piece's id is the same on every rank that holds a copy of it. Gathers every
// rank's (id, counted flag, norm) and reports, the same on every rank: the norm
// the masks give (global_norm(group, counted, comm, norm_type)'s bits), the norm
// with each id once, the first id counted twice or never, the first whose copies
// differ. A debugging tool: one all-reduce and four all-gathers, O(total buffers)
// memory on every rank. Over categories, audit each category over its communicator.
// Collective over comm; bad arguments on any rank throw std::invalid_argument on
// every rank.
template <class Group>
ownership_report audit_ownership(const Group& group, const std::vector<std::uint64_t>& ids,
                                 const counted_buffers& counted, MPI_Comm comm, double norm_type = 2.0) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::audit_ownership: not a group of buffers (see gradclip/buffer.hpp)");
  const std::size_t n = detail::buffer_count(group);
  detail::mpi::require_mpi_running(comm);
  // The norm and every buffer's norm in one pass; the same all-reduce checks
  // every rank's arguments (an ids list of the wrong size makes the mask check
  // fail: it is passed as the counted mask's companion).
  std::vector<double> norms;
  std::string ids_error;
  if (ids.size() != n) {
    ids_error = "gradclip::mpi: audit_ownership: " + std::to_string(ids.size()) + " ids for a group of " +
                std::to_string(n) + " buffers";
  }
  ownership_report report;
  {
    std::string local_error = ids_error;
    detail::mpi::message m{1.0, 0.0, norm_type, 0.0, 0.0, -1.0, detail::mpi::status_ok};
    try {
      if (local_error.empty()) {
        detail::check_norm_type(norm_type);
        detail::mpi::check_mask(counted.flags.size(), n, "counted mask");
        norms.resize(n);
      }
    } catch (const std::invalid_argument& e) {
      local_error = e.what();
    }
    if (local_error.empty()) {
      const norm_partial part =
          detail::mpi::shard_partial(group, &counted.flags, detail::spec_of(norm_type, norm_accuracy::fast), &norms);
      m.scale = part.scale;
      m.sum = part.sum;
    } else {
      m.status = detail::mpi::status_invalid;
    }
    report.counted_norm = norm_from_partial(detail::mpi::verdict(detail::mpi::all_reduce(m, comm), local_error),
                                            norm_type);
  }

  int size = 1;
  detail::mpi::check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  std::vector<int> counts(static_cast<std::size_t>(size), 0);
  const int mine = static_cast<int>(n);
  detail::mpi::check(MPI_Allgather(&mine, 1, MPI_INT, counts.data(), 1, MPI_INT, comm), "MPI_Allgather");
  std::vector<std::uint64_t> all_ids;
  std::vector<double> all_norms;
  std::vector<unsigned char> flags(n), all_flags;
  for (std::size_t i = 0; i < n; ++i) flags[i] = counted.flags[i] ? 1 : 0;
  detail::mpi::all_gather(ids, all_ids, MPI_UINT64_T, counts, comm);
  detail::mpi::all_gather(norms, all_norms, MPI_DOUBLE, counts, comm);
  detail::mpi::all_gather(flags, all_flags, MPI_UNSIGNED_CHAR, counts, comm);

  std::vector<int> rank_of;
  rank_of.reserve(all_ids.size());
  for (int r = 0; r < size; ++r) rank_of.insert(rank_of.end(), static_cast<std::size_t>(counts[static_cast<std::size_t>(r)]), r);
  const double counted_norm = report.counted_norm;
  report = detail::ownership_from_records(all_ids, all_flags, all_norms, rank_of,
                                          detail::spec_of(norm_type, norm_accuracy::fast));
  report.counted_norm = counted_norm;
  return report;
}


}  // namespace gradclip::mpi

#endif  // GRADCLIP_MPI_HPP
