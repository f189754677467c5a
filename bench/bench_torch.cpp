// gradclip against libtorch's torch::nn::utils::clip_grad_norm_, on the same gradient memory, one
// thread each (at::set_num_threads(1); omp_set_num_threads(1) for gradclip in OpenMP builds).
//
//   BM_torch_clip_grad_norm/n:10000000                    one tensor of 1e7 floats
//   BM_gradclip_on_torch/n:10000000                       gradclip on that tensor's grad
//   BM_torch_clip_grad_norm_group/tensors:10000/size:100  10,000 tensors of 100 floats
//   BM_gradclip_on_torch_group/tensors:10000/size:100     gradclip on their grads, building the
//                                                         list of views from the tensors every call
//                                                         (what a training step does)
//   BM_gradclip_on_torch_group_views/...                  the same with the views built once
//   BM_gradclip_torch_adapter/tensors:T/size:S            gradclip::torch::clip_grad_norm_ on T
//                                                         tensors of S (the adapter: its checks,
//                                                         views, dtype groups), 10,000 x 100 and
//                                                         1 x 1e6
//   BM_gradclip_torch_arena/tensors:10000/size:100        the same call on a gradient_arena over
//                                                         those parameters (one run per dtype),
//                                                         binding_check::per_clip (every call
//                                                         checks every parameter's gradient)
//   BM_gradclip_torch_arena_on_change/...                 the same with binding_check::on_change
//                                                         (hooks in backward watch the gradients;
//                                                         a call checks only the flat tensors)
//
// Both sides clip on every call (max_norm tracks just below the norm, see clip_tracker in
// bench_common.hpp); libtorch multiplies every gradient even when it does not clip, so its time
// does not depend on that. Gradients are set with p.mutable_grad() and hold uniform [-1, 1) values.
#include "bench_common.hpp"

#include <gradclip/torch.hpp>
#include <torch/torch.h>

#include <limits>

namespace {

using namespace gcbench;

std::vector<torch::Tensor> make_params(std::int64_t count, std::int64_t size) {
  std::vector<torch::Tensor> params;
  params.reserve(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) {
    auto p = torch::zeros({size}, torch::requires_grad());
    auto g = torch::empty({size}, torch::kFloat32);
    fill_uniform(g.data_ptr<float>(), static_cast<std::size_t>(size), static_cast<std::uint64_t>(i + 1));
    p.mutable_grad() = g;
    params.push_back(p);
  }
  return params;
}

std::vector<gradclip::buffer_view<float>> grad_views(const std::vector<torch::Tensor>& params) {
  std::vector<gradclip::buffer_view<float>> views;
  views.reserve(params.size());
  for (const auto& p : params) {
    const auto& g = p.grad();
    views.emplace_back(g.data_ptr<float>(), static_cast<std::size_t>(g.numel()));
  }
  return views;
}

void set_bytes(benchmark::State& state, std::int64_t elements) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * elements * 4);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * elements);
}

// libtorch's own coefficient: max_norm / (total + 1e-6), clamped to 1.
void track_torch(clip_tracker& t, double total) {
  const double c = t.max_norm / (total + 1e-6);
  t.after(total, c < 1.0 ? c : 1.0);
}

void torch_rows(benchmark::State& state, std::int64_t count, std::int64_t size) {
  auto params = make_params(count, size);
  // libtorch sums float gradients in float: a margin like Eigen's (see shrink_for_float_sums).
  clip_tracker t(gradclip::global_norm(grad_views(params)), shrink_for_float_sums<float>(static_cast<std::size_t>(size)));
  for (auto _ : state) {
    const double total = torch::nn::utils::clip_grad_norm_(params, t.max_norm);
    track_torch(t, total);
  }
  t.report(state);
  set_bytes(state, count * size);
}

void gradclip_rows(benchmark::State& state, std::int64_t count, std::int64_t size, bool views_once) {
  auto params = make_params(count, size);
  const auto once = grad_views(params);
  const auto opts = clip_opts();
  clip_tracker t(gradclip::global_norm(once));
  for (auto _ : state) {
    const auto r = views_once ? gradclip::clip_by_global_norm(once, t.max_norm, opts)
                              : gradclip::clip_by_global_norm(grad_views(params), t.max_norm, opts);
    t.after(r);
  }
  t.report(state);
  set_bytes(state, count * size);
}

// gradclip::torch::clip_grad_norm_, on the parameters or on a gradient_arena over them.
void adapter_rows(benchmark::State& state, std::int64_t count, std::int64_t size, bool arena,
                  gradclip::torch::binding_check check = gradclip::torch::binding_check::per_clip) {
  auto params = make_params(count, size);
  clip_tracker t(gradclip::global_norm(grad_views(params)));
  gradclip::torch::gradient_arena a;
  if (arena) {
    a = gradclip::torch::gradient_arena(params, check);
    if (!a.bound()) {
      state.SkipWithError("gradient_arena not bound");
      return;
    }
  }
  for (auto _ : state) {
    const double total =
        arena ? gradclip::torch::clip_grad_norm_(a, t.max_norm) : gradclip::torch::clip_grad_norm_(params, t.max_norm);
    track_torch(t, total);
  }
  t.report(state);
  set_bytes(state, count * size);
}

void BM_torch_clip_grad_norm(benchmark::State& state) { torch_rows(state, 1, state.range(0)); }
void BM_gradclip_on_torch(benchmark::State& state) { gradclip_rows(state, 1, state.range(0), false); }
void BM_torch_clip_grad_norm_group(benchmark::State& state) { torch_rows(state, state.range(0), state.range(1)); }
void BM_gradclip_on_torch_group(benchmark::State& state) {
  gradclip_rows(state, state.range(0), state.range(1), false);
}
void BM_gradclip_on_torch_group_views(benchmark::State& state) {
  gradclip_rows(state, state.range(0), state.range(1), true);
}

void BM_gradclip_torch_adapter(benchmark::State& state) {
  adapter_rows(state, state.range(0), state.range(1), false);
}
void BM_gradclip_torch_arena(benchmark::State& state) { adapter_rows(state, state.range(0), state.range(1), true); }
void BM_gradclip_torch_arena_on_change(benchmark::State& state) {
  adapter_rows(state, state.range(0), state.range(1), true, gradclip::torch::binding_check::on_change);
}

BENCHMARK(BM_torch_clip_grad_norm)->ArgNames({"n"})->Arg(10000000)->UseRealTime();
BENCHMARK(BM_gradclip_on_torch)->ArgNames({"n"})->Arg(10000000)->UseRealTime();
BENCHMARK(BM_torch_clip_grad_norm_group)->ArgNames({"tensors", "size"})->Args({10000, 100})->UseRealTime();
BENCHMARK(BM_gradclip_on_torch_group)->ArgNames({"tensors", "size"})->Args({10000, 100})->UseRealTime();
BENCHMARK(BM_gradclip_on_torch_group_views)->ArgNames({"tensors", "size"})->Args({10000, 100})->UseRealTime();
BENCHMARK(BM_gradclip_torch_adapter)
    ->ArgNames({"tensors", "size"})
    ->Args({10000, 100})
    ->Args({1, 1000000})
    ->UseRealTime();
BENCHMARK(BM_gradclip_torch_arena)->ArgNames({"tensors", "size"})->Args({10000, 100})->UseRealTime();
BENCHMARK(BM_gradclip_torch_arena_on_change)->ArgNames({"tensors", "size"})->Args({10000, 100})->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(1);
#if defined(_OPENMP)
  omp_set_num_threads(1);
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
