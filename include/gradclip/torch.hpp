// gradclip for libtorch: drop-ins for torch::nn::utils::clip_grad_norm_ and
// clip_grad_value_ (libtorch 1.13's C++ API: same arguments, same return value).
// Opt-in, not part of gradclip.hpp; link the CMake target gradclip::torch.
//
//   double total = gradclip::torch::clip_grad_norm_(model->parameters(), 1.0);
//   gradclip::torch::clip_grad_value_(model->parameters(), 0.5);
//
// gradient_arena (below) puts every gradient in one buffer per dtype, so that the
// many-small-tensors case runs as one run per dtype.
//
// Both take what libtorch's do (a std::vector<Tensor>, a braced list, a single
// Tensor) and also an at::TensorList and a module's named_parameters() (a
// torch::OrderedDict<std::string, Tensor>): the same call on the same tensors.
//
// Which gradients gradclip computes on: defined, CPU, strided tensors of float,
// double, half or bfloat16 with storage (not a ZeroTensor, neg or conj view) that
// are contiguous or non-overlapping and dense (libtorch's
// is_non_overlapping_and_dense(): channels_last and channels_last_3d, transposed
// and permuted tensors): their elements fill numel() consecutive slots from
// data_ptr(), which gradclip's kernels read, and scale in place, as one run in
// memory order (a norm does not depend on the order, within the same accuracy
// bound; clipping is elementwise). Mixed dtypes are grouped
// per dtype and the groups' partial norms combined (float, double, half, bfloat16
// order). When any defined gradient is of another kind (a CUDA or sparse tensor;
// an overlapping one such as an expanded view; one with gaps such as a slice with
// a step or a narrowed inner dimension; a complex dtype), or an argument is one
// gradclip rejects (max_norm < 0 or NaN, norm_type <= 0 or NaN: libtorch computes
// something for these), the whole clip_grad_norm_ call is libtorch's own: the norm
// couples every tensor. clip_grad_value_ falls back per tensor (and wholly for
// clip_value < 0 or NaN). uses_gradclip(parameters) says which path
// clip_grad_norm_ takes.
//
// Where the gradclip path differs from libtorch 1.13, deliberately:
//   - the total norm is gradclip's (the default norm_accuracy: float lanes of at
//     most 16 terms flushed into double, <= 4.8e-7 for L2; double for double
//     data) and range-safe (libtorch sums float in float: float grads differ by up
//     to ~1.5e-6 relative (measured), and values near 1e20 give libtorch an
//     infinite norm and zeroed gradients);
//     bfloat16 norms for p != 2 are accurate (libtorch accumulates them in
//     bfloat16), and half works (libtorch 1.13 has no CPU clamp for half);
//   - the coefficient is computed in double and the gradients are not written at
//     all when it is 1 (libtorch always multiplies, by a coefficient rounded to
//     the gradient dtype), so gradients differ from libtorch's by about an ulp
//     when clipped and not at all otherwise;
//   - the infinity norm of a list holding an empty gradient is taken over the
//     others (libtorch raises "max(): Expected reduction dim ...");
//   - writes go to the gradients' memory directly, as libtorch's grad.data().mul_()
//     does: autograd's version counter is not bumped;
//   - clip_grad_value_ with a bound beyond float's range leaves float gradients as
//     they are (libtorch throws "value cannot be converted to type float without
//     overflow"), and clamps half gradients (libtorch 1.13: no CPU clamp for half).
// error_if_nonfinite = true throws c10::Error with libtorch's message before
// anything is modified, as libtorch does; non-finite norms otherwise propagate as
// in libtorch (NaN everywhere for a NaN norm, zeros for an infinite one).
//
// The namespace is gradclip::torch: in code that says `using namespace gradclip;`,
// an unqualified `torch::` is ambiguous; write ::torch:: or qualify gradclip's.
#ifndef GRADCLIP_TORCH_HPP
#define GRADCLIP_TORCH_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

// clip_grad.h is not self-contained: torch/types.h (Tensor, the torch:: ops) comes first.
#include <torch/types.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/ordered_dict.h>
#include <torch/utils.h>
#include <c10/util/strides.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "gradclip.hpp"

namespace gradclip::torch {

namespace detail {

static_assert(sizeof(at::Half) == sizeof(Eigen::half) && sizeof(at::BFloat16) == sizeof(Eigen::bfloat16),
              "gradclip::torch: at::Half / at::BFloat16 must have the layout of Eigen::half / Eigen::bfloat16");

// Whether gradclip reads this gradient's memory directly as one run of numel()
// elements of a supported type: contiguous, or non-overlapping and dense in any
// order of its dimensions. libtorch computes the latter from sizes and strides:
// sorted by stride, the dimensions of size > 1 have strides 1, size, size * size,
// ... (so all positive; libtorch 1.13 has no negative strides at all: as_strided
// rejects them and TensorImpl::set_sizes_and_strides replaces them). Such a
// tensor's elements are exactly the numel() slots from data_ptr() (the element
// at index 0, the lowest address), each once: reading or scaling that run touches
// every element once and nothing else in the storage. Overlapping tensors (a
// stride 0 over a size > 1, as expand makes) and ones with gaps fail the test.
inline bool supported_grad(const at::Tensor& g) {
  if (!g.device().is_cpu() || g.layout() != at::kStrided || !g.has_storage() || g._is_zerotensor() ||
      g.is_neg() || g.is_conj() || !(g.is_contiguous() || g.is_non_overlapping_and_dense())) {
    return false;
  }
  const auto t = g.scalar_type();
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

[[noreturn]] inline void throw_nonfinite(double norm_type) {
  // libtorch's TORCH_CHECK message, word for word.
  std::ostringstream msg;
  msg << "The total norm of order " << norm_type << " for gradients from `parameters` "
      << "is non-finite, so it cannot be clipped. To disable this error and scale "
      << "the gradients with the non-finite norm anyway, set "
      << "`error_if_nonfinite=false`";
  throw c10::Error(c10::SourceLocation{__func__, __FILE__, static_cast<std::uint32_t>(__LINE__)}, msg.str());
}

// A hint to fetch the cache line at p (no effect where the compiler has no such builtin).
inline void prefetch(const void* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

// Views of the gradients, one group per dtype. Building them allocates (the
// vectors); libtorch's own call allocates a tensor per parameter.
struct grad_groups {
  std::vector<buffer_view<float>> f32;
  std::vector<buffer_view<double>> f64;
  std::vector<buffer_view<Eigen::half>> f16;
  std::vector<buffer_view<Eigen::bfloat16>> bf16;

  std::size_t size() const noexcept { return f32.size() + f64.size() + f16.size() + bf16.size(); }

  template <class F>
  void for_each(F&& f) {
    f(f32);
    f(f64);
    f(f16);
    f(bf16);
  }

  template <class F>
  void for_each(F&& f) const {
    f(f32);
    f(f64);
    f(f16);
    f(bf16);
  }

  // The groups' partial norms combined in the fixed order above (float, double,
  // half, bfloat16): one read pass over every gradient.
  norm_partial partial(double norm_type) const {
    norm_partial total;
    for_each([&](const auto& group) {
      if (!group.empty()) total = combine_partials(total, partial_norm(group, norm_type), norm_type);
    });
    return total;
  }

  // libtorch's clip_grad_value_ on every group: the bound rounded to nearest in
  // each dtype, as libtorch does, so results are libtorch's bit for bit.
  void clip_value(double clip_value) {
    for_each([&](auto& group) {
      using T = std::remove_pointer_t<decltype(group.front().data())>;
      const double bound = gradclip::detail::to_double(gradclip::detail::element_traits<T>::nearest(clip_value));
      if (!group.empty()) clip_by_value(group, -bound, bound);
    });
  }

  // libtorch's coefficient max_norm / (total + 1e-6), clamped to 1, on every group
  // (no write pass when it is 1).
  void clip_with_total(double max_norm, double total, double norm_type) {
    const clip_options options{norm_type, 1e-6, nonfinite::propagate};
    for_each([&](auto& group) {
      if (!group.empty()) clip_with_norm(group, max_norm, total, options);
    });
  }

  // clip_grad_norm_ on gradclip's kernels: one read pass, the total, libtorch's
  // error check, one write pass. No gradient gives 0.
  double clip_norm(double max_norm, double norm_type, bool error_if_nonfinite) {
    if (size() == 0) return 0.0;
    const double total = norm_from_partial(partial(norm_type), norm_type);
    if (error_if_nonfinite && !gradclip::detail::is_finite(total)) throw_nonfinite(norm_type);
    clip_with_total(max_norm, total, norm_type);
    return total;
  }

  void add(const at::Tensor& g) {
    const auto n = static_cast<std::size_t>(g.numel());
    // data_ptr() is the element at index 0 (storage offset included), the start of
    // the run of numel() elements (supported_grad). The 16-bit types are read
    // through Eigen's types of the same layout.
    void* p = g.data_ptr();
    switch (g.scalar_type()) {
      case at::kFloat:
        f32.emplace_back(static_cast<float*>(p), n);
        break;
      case at::kDouble:
        f64.emplace_back(static_cast<double*>(p), n);
        break;
      case at::kHalf:
        f16.emplace_back(static_cast<Eigen::half*>(p), n);
        break;
      default:
        bf16.emplace_back(static_cast<Eigen::bfloat16*>(p), n);
        break;
    }
  }
};

// Collects the defined gradients; false if any of them is not one gradclip reads.
inline bool collect(at::TensorList parameters, grad_groups& out) {
  for (const auto& p : parameters) {
    const auto& g = p.grad();
    if (!g.defined()) continue;
    if (!supported_grad(g)) return false;
    out.add(g);
  }
  return true;
}

inline bool valid_norm_args(double max_norm, double norm_type) noexcept {
  return !gradclip::detail::is_nan(max_norm) && max_norm >= 0.0 && !gradclip::detail::is_nan(norm_type) &&
         norm_type > 0.0;
}


}  // namespace detail

// Whether clip_grad_norm_(parameters, ...) with valid arguments runs on gradclip's
// kernels (true) or is libtorch's own call (false).
inline bool uses_gradclip(at::TensorList parameters) {
  for (const auto& p : parameters) {
    const auto& g = p.grad();
    if (g.defined() && !detail::supported_grad(g)) return false;
  }
  return true;
}

inline bool uses_gradclip(const std::vector<at::Tensor>& parameters) {
  return uses_gradclip(at::TensorList(parameters));
}

inline bool uses_gradclip(std::initializer_list<at::Tensor> parameters) {
  return uses_gradclip(at::TensorList(parameters));
}

inline bool uses_gradclip(const at::Tensor& parameter) { return uses_gradclip(at::TensorList(parameter)); }

inline bool uses_gradclip(const ::torch::OrderedDict<std::string, at::Tensor>& named_parameters) {
  return uses_gradclip(at::TensorList(named_parameters.values()));
}

// torch::nn::utils::clip_grad_norm_: scales the gradients so that their total
// norm of order norm_type is at most max_norm (coefficient max_norm / (norm +
// 1e-6), clamped to 1); returns the total norm before clipping. Parameters
// without a gradient are skipped; none with one gives 0.
inline double clip_grad_norm_(at::TensorList parameters, double max_norm, double norm_type = 2.0,
                              bool error_if_nonfinite = false) {
  detail::grad_groups groups;
  if (!detail::valid_norm_args(max_norm, norm_type) || !detail::collect(parameters, groups)) {
    return ::torch::nn::utils::clip_grad_norm_(parameters.vec(), max_norm, norm_type, error_if_nonfinite);
  }
  return groups.clip_norm(max_norm, norm_type, error_if_nonfinite);
}

inline double clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm, double norm_type = 2.0,
                              bool error_if_nonfinite = false) {
  return clip_grad_norm_(at::TensorList(parameters), max_norm, norm_type, error_if_nonfinite);
}

inline double clip_grad_norm_(std::initializer_list<at::Tensor> parameters, double max_norm, double norm_type = 2.0,
                              bool error_if_nonfinite = false) {
  return clip_grad_norm_(at::TensorList(parameters), max_norm, norm_type, error_if_nonfinite);
}

inline double clip_grad_norm_(const at::Tensor& parameter, double max_norm, double norm_type = 2.0,
                              bool error_if_nonfinite = false) {
  return clip_grad_norm_(at::TensorList(parameter), max_norm, norm_type, error_if_nonfinite);
}

// model->named_parameters(): the values, in the dict's order (libtorch's own
// function does not take the dict; this is the call on named_parameters.values()).
inline double clip_grad_norm_(const ::torch::OrderedDict<std::string, at::Tensor>& named_parameters, double max_norm,
                              double norm_type = 2.0, bool error_if_nonfinite = false) {
  return clip_grad_norm_(at::TensorList(named_parameters.values()), max_norm, norm_type, error_if_nonfinite);
}

// torch::nn::utils::clip_grad_value_: clamps every gradient element into
// [-clip_value, clip_value]. The bound is rounded to nearest in each gradient's
// dtype, as libtorch does, so results are libtorch's bit for bit (gradclip's own
// clip_by_value rounds inward instead). NaN stays NaN.
inline void clip_grad_value_(at::TensorList parameters, double clip_value) {
  if (gradclip::detail::is_nan(clip_value) || clip_value < 0.0) {
    ::torch::nn::utils::clip_grad_value_(parameters.vec(), clip_value);  // lo > hi: libtorch's clamp semantics
    return;
  }
  detail::grad_groups groups;
  for (const auto& p : parameters) {
    const auto& g = p.grad();
    if (!g.defined()) continue;
    if (detail::supported_grad(g)) {
      groups.add(g);
    } else {
      g.data().clamp_(-clip_value, clip_value);
    }
  }
  groups.clip_value(clip_value);
}

inline void clip_grad_value_(const std::vector<at::Tensor>& parameters, double clip_value) {
  clip_grad_value_(at::TensorList(parameters), clip_value);
}

inline void clip_grad_value_(std::initializer_list<at::Tensor> parameters, double clip_value) {
  clip_grad_value_(at::TensorList(parameters), clip_value);
}

inline void clip_grad_value_(const at::Tensor& parameter, double clip_value) {
  clip_grad_value_(at::TensorList(parameter), clip_value);
}

inline void clip_grad_value_(const ::torch::OrderedDict<std::string, at::Tensor>& named_parameters, double clip_value) {
  clip_grad_value_(at::TensorList(named_parameters.values()), clip_value);
}

// ---- gradient_arena: every parameter's gradient a slice of one buffer per dtype ----
//
//   gradclip::torch::gradient_arena arena(model->parameters());   // once, after the model is built
//   for (...) {
//     optimizer.zero_grad();                 // set_to_none = false: nothing else to do
//     loss.backward();                       // accumulates into the arena's memory
//     gradclip::torch::clip_grad_norm_(arena, 1.0);   // one run per dtype
//     optimizer.step();
//   }
//   // with zero_grad(/*set_to_none=*/true): call arena.bind() after it, before backward
//
// The arena allocates one contiguous CPU tensor per dtype (float, double, half,
// bfloat16: flat()), holding every gradient end to end in parameter order, and
// makes each parameter's .grad() a tensor of the parameter's shape (contiguous)
// over its slice. Each grad is a storage alias (Tensor::set_ onto the arena's
// storage), not an autograd view, so zero_grad's detach_() works on it (it throws
// "Can't detach views in-place" on a view) and zero_() clears the slice in place.
// backward writes into a defined gradient in place (AccumulateGrad: grad +=
// new_grad, outside create_graph), so the gradients stay in the arena from step
// to step as long as they stay defined, as with DDP's gradient_as_bucket_view.
//
// Which parameters get a slice: CPU, strided, float/double/half/bfloat16 ones that
// require grad, each once (a tensor listed twice shares its first slice). Others
// are kept in parameters() and handled by the ordinary path.
//
// bind(): makes every sliced parameter's gradient its slice again: an undefined
// one (zero_grad(set_to_none = true); a parameter not reached by backward since
// it was set to none) becomes the slice, zeroed; one elsewhere (a backward after
// set_to_none allocates fresh gradients; create_graph = true or an assignment
// replaces them) is copied into the slice and replaced by it, values kept. A
// parameter whose element count changed since the arena was built is left as it
// is (its slice no longer fits; the calls then take the ordinary path).
// The constructor binds. Call bind() after zero_grad(set_to_none = true), before
// backward; it costs nothing for gradients already bound (a check each). Note
// that a bound gradient is always defined: a parameter that backward does not
// reach keeps zeros (as after zero_grad(set_to_none = false)) instead of having
// no gradient, which optimizers such as Adam treat differently (they step it).
//
// clip_grad_norm_(arena, ...) and clip_grad_value_(arena, ...) are the calls on
// arena.parameters(), same results within gradclip's accuracy bound: when the
// gradients are bound (every sliced parameter's gradient is its slice, unchanged
// in place, and the others have none) they run on the flat tensors, one run per
// dtype; otherwise on the parameters' gradients as they are (one view per
// gradient). How a call knows, the binding_check given to the constructor:
//   - binding_check::per_clip (the default): every call checks every parameter's
//     gradient (bound()), so nothing is ever clipped stale and a missing bind()
//     costs speed, never correctness. The check reads three separately allocated
//     libtorch objects per parameter: with 10,000 small parameters it costs about
//     as much as the data pass itself.
//   - binding_check::on_change: the arena puts a hook on each sliced parameter's
//     gradient accumulator (the autograd node backward accumulates with, as DDP's
//     reducer does). After backward accumulates a gradient, the hook checks it
//     while it is in cache; one off its slice (a fresh gradient after
//     set_to_none, create_graph) is put back, as bind() would, and the next call
//     checks every parameter once. Calls otherwise check only the flat tensors and
//     the parameters without a hook (no slice, or not a leaf), and run on the
//     flat tensors. What you promise in exchange: a gradient changed outside
//     backward (an assignment to mutable_grad(), set_, zero_grad(set_to_none =
//     true) not followed by a backward that reaches the parameter) is followed by
//     bind() before the next call; otherwise the call clips its stale slice.
//     Gradients are then in the arena right after backward, so all-reducing
//     flat() in place all-reduces them.
// The flat tensors are the gradients' memory: all-reduce them in place to
// all-reduce every gradient (when bound; a slice that is not bound is stale).
// Keep the arena alive while the gradients are used: they share its storage (they
// keep it alive, the arena keeps the bookkeeping). Copies of an arena are handles
// to the same one; when the last is destroyed, its hooks are removed. Give each
// parameter to one arena at a time: two would move its gradient back and forth.

// How clip_grad_norm_(arena) and clip_grad_value_(arena) learn that the gradients
// are bound (see gradient_arena).
enum class binding_check {
  per_clip,   // each call checks every parameter's gradient
  on_change,  // hooks on backward's gradient accumulators watch; calls trust what they saw
};

namespace detail {

// A gradient_arena's bookkeeping, shared by its copies and, weakly, by the hooks
// on its parameters' gradient accumulators (a hook outliving its arena does nothing).
class arena_state {
 public:
  static constexpr int kinds = 4;

  arena_state() = default;
  arena_state(const arena_state&) = delete;
  arena_state& operator=(const arena_state&) = delete;

  ~arena_state() {
    for (auto& h : hooks_) h.node->del_post_hook(h.key);
  }

  // Slices the parameters and binds them; with on_change, hooks them (watch()).
  void build(at::TensorList parameters, binding_check check) {
    params_ = parameters.vec();
    check_ = check;
    std::int64_t totals[kinds] = {0, 0, 0, 0};
    entries_.resize(params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      auto& e = entries_[i];
      if (!p.defined() || !p.requires_grad() || !p.device().is_cpu() || p.layout() != at::kStrided) continue;
      const int k = kind_of(p.scalar_type());
      if (k < 0) continue;
      bool seen = false;
      for (std::size_t j = 0; j < i && !seen; ++j) seen = params_[j].unsafeGetTensorImpl() == p.unsafeGetTensorImpl();
      if (seen) {
        duplicates_ = true;
        continue;
      }
      e.kind = k;
      e.offset = totals[k];
      e.numel = p.numel();
      totals[k] += p.numel();
    }
    for (int k = 0; k < kinds; ++k) total_[k] = totals[k];
    bind();
  }

  // Registers the hooks; the parameters that get none are checked on every call.
  void watch(const std::shared_ptr<arena_state>& self) {
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      std::shared_ptr<::torch::autograd::Node> node;
      if (entries_[i].kind >= 0 && p.is_leaf()) node = ::torch::autograd::impl::grad_accumulator(p);
      if (!node) {
        unwatched_.push_back(i);
        continue;
      }
      // The node is kept alive here: the parameter holds it weakly, and a node
      // made again for the next backward would have no hook.
      const std::uintptr_t key = node->add_post_hook(std::make_unique<accumulate_hook>(self, i));
      hooks_.push_back({std::move(node), key});
    }
  }

  std::size_t bind() {
    // A flat tensor changed by its user (resized, strided, set_ elsewhere) is
    // replaced: every slice of its dtype is then bound again, onto the new one.
    for (int k = 0; k < kinds; ++k) {
      if (!has_kind(k)) continue;
      if (!flat_intact(k)) flat_[k] = at::zeros({total_[k]}, at::TensorOptions().dtype(scalar_type_of(k)));
      base_[k] = flat_[k].data_ptr();
      storage_[k] = flat_[k].storage().unsafeGetStorageImpl();
      offset_[k] = flat_[k].storage_offset();
    }
    std::size_t rebound = 0;
    bool all = true;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      if (entries_[i].kind < 0 || entry_bound(i)) continue;
      if (bind_entry(i)) {
        ++rebound;
      } else {
        all = false;
      }
    }
    // on_change: settled when every slice is bound; else the calls check in full.
    changed_.store(!all, std::memory_order_relaxed);
    return rebound;
  }

  // Every parameter checked (see gradient_arena). A pass also tells on_change that
  // what its hooks reported is settled.
  bool bound() const {
    if (duplicates_ || !flats_unchanged()) return false;
    // A parameter's gradient is three allocations away (the parameter's TensorImpl,
    // its autograd metadata, the gradient's TensorImpl), each a likely cache miss
    // with thousands of parameters: blocks of 64 fetch the gradients' TensorImpls
    // with the next lines prefetched, then check them, so the misses overlap.
    constexpr std::size_t block = 64, ahead = 16;
    const c10::TensorImpl* grads[block];
    const std::size_t n = params_.size();
    for (std::size_t first = 0; first < n; first += block) {
      const std::size_t count = n - first < block ? n - first : block;
      for (std::size_t j = 0; j < count; ++j) {
        const std::size_t i = first + j;
        if (i + 2 * ahead < n) prefetch(params_[i + 2 * ahead].unsafeGetTensorImpl());
        if (i + ahead < n) prefetch(params_[i + ahead].unsafeGetTensorImpl()->autograd_meta());
        grads[j] = params_[i].unsafeGetTensorImpl()->grad().unsafeGetTensorImpl();
      }
      for (std::size_t j = 0; j < count; ++j) {
        if (j + ahead < count) prefetch(grads[j + ahead]);
        if (!entry_bound(entries_[first + j], grads[j])) return false;
      }
    }
    changed_.store(false, std::memory_order_relaxed);
    return true;
  }

  // What the calls ask: whether to run on the flat tensors.
  bool runs_flat() const {
    if (check_ == binding_check::per_clip || changed_.load(std::memory_order_acquire)) return bound();
    if (duplicates_ || !flats_unchanged()) return false;
    for (const std::size_t i : unwatched_) {
      if (!entry_bound(entries_[i], params_[i].unsafeGetTensorImpl()->grad().unsafeGetTensorImpl())) return false;
    }
    return true;
  }

  // The hook's work, after backward accumulated parameter i's gradient.
  void after_accumulation(std::size_t i) noexcept {
    if (entry_bound(i)) return;
    changed_.store(true, std::memory_order_release);
    if (!flat_intact(entries_[i].kind)) return;  // bind() replaces the flat tensor first
    try {
      bind_entry(i);
    } catch (...) {
      // A gradient the slice cannot take (copy_ refused it) stays as it is: the
      // full check the flag asks for sees it, and the call takes the ordinary path.
    }
  }

  const std::vector<at::Tensor>& parameters() const noexcept { return params_; }
  binding_check check() const noexcept { return check_; }

  at::Tensor flat(at::ScalarType dtype) const {
    const int k = kind_of(dtype);
    return k < 0 ? at::Tensor() : flat_[k];
  }

  std::vector<at::Tensor> flat() const {
    std::vector<at::Tensor> out;
    for (const auto& f : flat_)
      if (f.defined()) out.push_back(f);
    return out;
  }

  bool contains(const at::Tensor& parameter) const {
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (entries_[i].kind >= 0 && params_[i].unsafeGetTensorImpl() == parameter.unsafeGetTensorImpl()) return true;
    return false;
  }

  void flat_groups(grad_groups& out) const {
    for (const auto& f : flat_)
      if (f.defined() && f.numel() > 0) out.add(f);
  }

 private:
  struct entry {
    int kind = -1;  // index into flat_, -1: no slice
    std::int64_t offset = 0;
    std::int64_t numel = 0;
  };

  // The post hook on a parameter's gradient accumulator (autograd runs it after
  // AccumulateGrad, on the thread that ran the node).
  class accumulate_hook final : public ::torch::autograd::FunctionPostHook {
   public:
    accumulate_hook(const std::shared_ptr<arena_state>& state, std::size_t index) : state_(state), index_(index) {}
    ::torch::autograd::variable_list operator()(const ::torch::autograd::variable_list& outputs,
                                                const ::torch::autograd::variable_list&) override {
      if (const auto s = state_.lock()) s->after_accumulation(index_);
      return outputs;
    }

   private:
    std::weak_ptr<arena_state> state_;
    std::size_t index_;
  };

  struct hook_entry {
    std::shared_ptr<::torch::autograd::Node> node;
    std::uintptr_t key;
  };

  static int kind_of(at::ScalarType t) noexcept {
    switch (t) {
      case at::kFloat:
        return 0;
      case at::kDouble:
        return 1;
      case at::kHalf:
        return 2;
      case at::kBFloat16:
        return 3;
      default:
        return -1;
    }
  }

  static at::ScalarType scalar_type_of(int k) noexcept {
    constexpr at::ScalarType types[kinds] = {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16};
    return types[k];
  }

  bool has_kind(int k) const noexcept {
    for (const auto& e : entries_)
      if (e.kind == k) return true;
    return false;
  }

  // Whether flat tensor k is still what its slices were made in: defined, 1-d
  // contiguous CPU of its dtype and size.
  bool flat_intact(int k) const {
    const auto& f = flat_[k];
    return f.defined() && f.is_contiguous() && f.numel() == total_[k] && f.scalar_type() == scalar_type_of(k) &&
           f.device().is_cpu();
  }

  // Whether every flat tensor is still the one the slices were bound into.
  bool flats_unchanged() const {
    for (int k = 0; k < kinds; ++k) {
      if (flat_[k].defined() && (!flat_[k].is_contiguous() || flat_[k].numel() != total_[k] ||
                                 flat_[k].data_ptr() != base_[k] ||
                                 flat_[k].storage().unsafeGetStorageImpl() != storage_[k] ||
                                 flat_[k].storage_offset() != offset_[k])) {
        return false;
      }
    }
    return true;
  }

  // Makes parameter i's gradient its slice: the parameter's shape, contiguous
  // strides, over [offset, offset + numel) of the arena's storage (an alias of the
  // storage, no autograd view), holding the gradient's values (zeros for none).
  // False, and nothing changed, when the parameter's element count is no longer
  // its slice's.
  bool bind_entry(std::size_t i) {
    const auto& e = entries_[i];
    auto& p = params_[i];
    if (p.numel() != e.numel) return false;
    const auto& flat = flat_[e.kind];
    auto slice = at::empty({0}, flat.options());
    slice.set_(flat.storage(), flat.storage_offset() + e.offset, p.sizes(), c10::contiguous_strides(p.sizes()));
    const auto& g = p.grad();
    if (g.defined()) {
      ::torch::NoGradGuard no_grad;
      // A gradient moved onto the arena's own memory (set_ onto another offset) may
      // overlap its slice, which copy_ refuses: copied out first.
      const bool shares = !g.is_sparse() && g.has_storage() &&
                          g.storage().unsafeGetStorageImpl() == flat.storage().unsafeGetStorageImpl();
      slice.copy_(g.is_sparse() ? g.to_dense() : shares ? g.clone() : g);
    } else {
      slice.zero_();
    }
    p.mutable_grad() = std::move(slice);
    return true;
  }

  bool entry_bound(std::size_t i) const {
    return entry_bound(entries_[i], params_[i].unsafeGetTensorImpl()->grad().unsafeGetTensorImpl());
  }

  // Whether a gradient g is what entry e needs: for a slice, g covers exactly it
  // (defined, of the slice's dtype, contiguous, not a negative view, numel()
  // elements from the slice's first one in the current flat tensor's storage).
  // Not its identity: Module::zero_grad replaces a gradient by grad.detach() (a new
  // tensor over the same memory), which stays bound. Read from the gradient's
  // TensorImpl alone (its storage's identity and offset, not the storage's data).
  // For a parameter without a slice: no gradient.
  bool entry_bound(const entry& e, const c10::TensorImpl* g) const {
    if (e.kind < 0) return g == c10::UndefinedTensorImpl::singleton();
    // An undefined gradient (UndefinedTensorImpl) has no storage: a null StorageImpl.
    if (g->unsafe_storage().unsafeGetStorageImpl() != storage_[e.kind] ||
        g->storage_offset() != offset_[e.kind] + e.offset || g->numel() != e.numel ||
        g->dtype() != flat_[e.kind].dtype() || !g->is_contiguous() || g->is_neg()) {
      return e.numel == 0 && g != c10::UndefinedTensorImpl::singleton() && g->has_storage() && g->numel() == 0 &&
             g->dtype() == flat_[e.kind].dtype();
    }
    return true;
  }

  std::vector<at::Tensor> params_;
  std::vector<entry> entries_;
  at::Tensor flat_[kinds];
  std::int64_t total_[kinds] = {0, 0, 0, 0};
  const void* base_[kinds] = {nullptr, nullptr, nullptr, nullptr};  // flat_[k]'s first element when bound
  const c10::StorageImpl* storage_[kinds] = {nullptr, nullptr, nullptr, nullptr};  // and its storage
  std::int64_t offset_[kinds] = {0, 0, 0, 0};                                     // and its storage offset
  bool duplicates_ = false;
  binding_check check_ = binding_check::per_clip;
  std::vector<std::size_t> unwatched_;  // on_change: parameters without a hook, checked on every call
  std::vector<hook_entry> hooks_;
  // on_change: a hook saw a gradient off its slice since the last full check.
  mutable std::atomic<bool> changed_{false};
};

}  // namespace detail

class gradient_arena {
 public:
  gradient_arena() : s_(std::make_shared<detail::arena_state>()) {}

  explicit gradient_arena(at::TensorList parameters, binding_check check = binding_check::per_clip)
      : gradient_arena() {
    s_->build(parameters, check);
    if (check == binding_check::on_change) s_->watch(s_);
  }

  explicit gradient_arena(const std::vector<at::Tensor>& parameters, binding_check check = binding_check::per_clip)
      : gradient_arena(at::TensorList(parameters), check) {}
  explicit gradient_arena(const ::torch::OrderedDict<std::string, at::Tensor>& named_parameters,
                          binding_check check = binding_check::per_clip)
      : gradient_arena(at::TensorList(named_parameters.values()), check) {}

  // Makes every sliced parameter's gradient its slice (see above); returns how many
  // gradients it bound (0: all were bound).
  std::size_t bind() { return s_->bind(); }

  // Whether every sliced parameter's gradient is its slice and the others have
  // none, checked parameter by parameter (what binding_check::per_clip does on
  // every call).
  bool bound() const { return s_->bound(); }

  binding_check check() const noexcept { return s_->check(); }

  // The parameters, as given (clip_grad_norm_(arena) is the call on these).
  const std::vector<at::Tensor>& parameters() const noexcept { return s_->parameters(); }

  // The flat tensor of a dtype (1-d, contiguous, CPU; the slices of that dtype's
  // parameters end to end, in parameter order), or an undefined tensor when no
  // sliced parameter has that dtype.
  at::Tensor flat(at::ScalarType dtype) const { return s_->flat(dtype); }

  // The defined flat tensors, in the order float, double, half, bfloat16.
  std::vector<at::Tensor> flat() const { return s_->flat(); }

  // Whether a parameter (by identity) has a slice.
  bool contains(const at::Tensor& parameter) const { return s_->contains(parameter); }

  // For clip_grad_norm_ and clip_grad_value_: whether to run on the flat tensors
  // (the binding_check's answer), and those as one view per dtype.
  bool runs_flat() const { return s_->runs_flat(); }
  void flat_groups(detail::grad_groups& out) const { s_->flat_groups(out); }

 private:
  std::shared_ptr<detail::arena_state> s_;
};

// clip_grad_norm_ on the arena's parameters: one run per dtype over flat() when
// the gradients are bound, else the call on arena.parameters() (see gradient_arena).
inline double clip_grad_norm_(const gradient_arena& arena, double max_norm, double norm_type = 2.0,
                              bool error_if_nonfinite = false) {
  if (!detail::valid_norm_args(max_norm, norm_type) || !arena.runs_flat()) {
    return clip_grad_norm_(at::TensorList(arena.parameters()), max_norm, norm_type, error_if_nonfinite);
  }
  detail::grad_groups groups;
  arena.flat_groups(groups);
  return groups.clip_norm(max_norm, norm_type, error_if_nonfinite);
}

// clip_grad_value_ on the arena's parameters (over flat() when the gradients are bound).
inline void clip_grad_value_(const gradient_arena& arena, double clip_value) {
  if (gradclip::detail::is_nan(clip_value) || clip_value < 0.0 || !arena.runs_flat()) {
    clip_grad_value_(at::TensorList(arena.parameters()), clip_value);
    return;
  }
  detail::grad_groups groups;
  arena.flat_groups(groups);
  groups.clip_value(clip_value);
}

inline bool uses_gradclip(const gradient_arena& arena) { return uses_gradclip(at::TensorList(arena.parameters())); }

}  // namespace gradclip::torch

#endif  // GRADCLIP_TORCH_HPP
