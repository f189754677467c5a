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
// Replicated buffers -- a parameter every rank holds in full (biases and layer norms
// outside the shards, tensor-parallel duplicates) -- must count once in the norm, as
// DeepSpeed and Megatron-LM count them. The overloads taking `replicated` (one flag
// per buffer, in group order) count a flagged buffer on rank 0 of comm only; every
// rank still scales its copy, so the copies stay identical. A buffer that is copied
// on only some ranks (e.g. across one tensor-parallel group of a larger comm) is
// flagged on all its holders but the one that should count it; rank 0 always counts
// everything, so make rank 0 a counting holder.
//
// Errors: std::invalid_argument as above; std::runtime_error with MPI's message when
// an MPI call fails (only seen with an error handler such as MPI_ERRORS_RETURN on
// comm; the default MPI_ERRORS_ARE_FATAL aborts first), or when MPI is not
// initialized or already finalized. Thread safety is MPI's: concurrent calls need
// MPI_THREAD_MULTIPLE (or serialising under MPI_THREAD_SERIALIZED).
#ifndef GRADCLIP_MPI_HPP
#define GRADCLIP_MPI_HPP

#include <mpi.h>

#include <cstddef>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "buffer.hpp"
#include "clip_norm.hpp"
#include "norm.hpp"
#include "detail/float_bits.hpp"
#include "detail/kernels/kernels.hpp"
#include "detail/validate.hpp"

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

inline void check_mask(std::size_t mask_size, std::size_t buffers) {
  if (mask_size != buffers) {
    throw std::invalid_argument("gradclip::mpi: the replicated mask has " + std::to_string(mask_size) +
                                " flags for a group of " + std::to_string(buffers) + " buffers");
  }
}

// This rank's share of the norm: the group through the measure stage, the
// flagged buffers left out on every rank but rank 0.
// With buffer_norms, every buffer's own norm (counted or not) from the same pass.
template <class Group>
norm_partial shard_partial(const Group& group, const std::vector<bool>* replicated, int rank,
                           const kernels::norm_spec& spec, std::vector<double>* buffer_norms) noexcept {
  const auto measure = [&](auto counted) {
    if (buffer_norms == nullptr) return kernels::measure(group, spec, counted);
    return measure_with_buffer_norms(group, spec, buffer_norms->data(), counted);
  };
  if (replicated == nullptr || rank == 0) return measure(kernels::count_all{});
  return measure([replicated](std::size_t i) { return !(*replicated)[i]; });
}

// Validates locally, all-reduces the partials together with the arguments and the
// verdict, and throws on every rank if any rank's arguments were bad. Returns the
// global norm; buffer_norms, when given, gets this rank's buffers' norms.
template <class Group>
double reduce_norm(const Group& group, const std::vector<bool>* replicated, MPI_Comm comm, double norm_type,
                   norm_accuracy accuracy, double max_norm, double eps, double policy,
                   void (*validate)(double, double, double, double), std::vector<double>* buffer_norms = nullptr) {
  require_mpi_running(comm);
  int rank = 0;
  check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");

  std::string local_error;
  try {
    validate(norm_type, max_norm, eps, policy);
    check_accuracy(accuracy);  // a rank's own: each rank's partial is valid in either
    if (replicated != nullptr) check_mask(replicated->size(), buffer_count(group));
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
    const norm_partial part = shard_partial(group, replicated, rank, spec_of(norm_type, accuracy), buffer_norms);
    m.scale = part.scale;
    m.sum = part.sum;
  } else {
    m.status = status_invalid;
  }

  const reduction& red = reduction::get();
  check(MPI_Allreduce(MPI_IN_PLACE, &m, 1, red.type(), red.op(), comm), "MPI_Allreduce");

  if (m.status == status_invalid) {
    if (!local_error.empty()) throw std::invalid_argument(local_error + " (every rank of the communicator throws)");
    throw std::invalid_argument("gradclip::mpi: another rank's arguments were invalid; nothing was modified");
  }
  if (m.status != status_ok) {
    throw std::invalid_argument(
        "gradclip::mpi: ranks passed different norm_type, max_norm, eps or on_nonfinite (or called different "
        "gradclip::mpi functions); nothing was modified");
  }
  return norm_from_partial({m.scale, m.sum}, norm_type);
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
clip_result clip(Group&& group, const std::vector<bool>* replicated, double max_norm, MPI_Comm comm,
                 const clip_options& options, std::vector<double>* buffer_norms = nullptr) {
  const double total = reduce_norm(group, replicated, comm, options.norm_type, options.accuracy, max_norm,
                                   options.eps, policy_code(options.on_nonfinite), &validate_clip, buffer_norms);
  // Every rank holds the same total, so every rank takes the same decision here.
  return gradclip::clip_with_norm(group, max_norm, total, options);
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

// The same, counting the buffers flagged in `replicated` (one flag per buffer of
// this rank's group) on rank 0 only. Throws std::invalid_argument on every rank if
// some rank's mask does not have one flag per buffer.
template <class Group>
double global_norm(const Group& group, const std::vector<bool>& replicated, MPI_Comm comm, double norm_type = 2.0,
                   norm_accuracy accuracy = norm_accuracy::fast) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::reduce_norm(group, &replicated, comm, norm_type, accuracy, 0.0, 0.0, -1.0,
                                  &detail::mpi::validate_norm_type);
}

// The same norm and this rank's buffers' own norms from the same pass, in group
// order (buffer_norms resized to the group's buffer count; the bits
// gradclip::norm gives for each buffer, replicated ones included). The returned
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
double global_norm(const Group& group, const std::vector<bool>& replicated, MPI_Comm comm, double norm_type,
                   std::vector<double>& buffer_norms, norm_accuracy accuracy = norm_accuracy::fast) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::reduce_norm(group, &replicated, comm, norm_type, accuracy, 0.0, 0.0, -1.0,
                                  &detail::mpi::validate_norm_type, &buffer_norms);
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

// The same, counting the buffers flagged in `replicated` on rank 0 only (every rank
// still scales them).
template <class Group>
clip_result clip_by_global_norm(Group&& group, const std::vector<bool>& replicated, double max_norm, MPI_Comm comm,
                                const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::clip_by_global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::clip(group, &replicated, max_norm, comm, options);
}

// Both clips, with this rank's buffers' norms before clipping from the norm's own
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
clip_result clip_by_global_norm(Group&& group, const std::vector<bool>& replicated, double max_norm, MPI_Comm comm,
                                const clip_options& options, std::vector<double>& buffer_norms) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::mpi::clip_by_global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  return detail::mpi::clip(group, &replicated, max_norm, comm, options, &buffer_norms);
}

}  // namespace gradclip::mpi

#endif  // GRADCLIP_MPI_HPP
