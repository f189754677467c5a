// gradclip::torch::clip_grad_norm_ over a c10d::ProcessGroup (gradclip/torch_distributed.hpp),
// run as one rank of a Gloo group over a FileStore on loopback:
//
//   gradclip_tests_torch_distributed <world> <rank> <file-store-path>
//
// (tests/torch/run_ranks.sh starts the ranks). Every rank builds the same model (the same seeds),
// a random sharding assigns each parameter to one rank, some parameters are held by every rank
// and counted on one rank only, and each rank's result is checked against the one-process
// gradclip::torch::clip_grad_norm_ over the whole model: the norm within 1e-12 relative (the same
// bits on every rank), each gradient within 1 ulp. p = 1, 2, 3, inf; clipping and not; float,
// double, half and bfloat16; error_if_nonfinite with a NaN or inf on one rank (every rank throws,
// nothing written) and without (NaN / zeros everywhere); gradients gradclip does not read directly
// (libtorch ops); and bad arguments on one rank (every rank throws std::invalid_argument).
#include <gradclip/torch_distributed.hpp>  // first: the header must be self-contained

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using at::Tensor;
constexpr double inf = std::numeric_limits<double>::infinity();
constexpr std::uint64_t ownership_none = gradclip::ownership_report::none;

int failures = 0;
int rank_ = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    if (failures <= 20) std::fprintf(stderr, "rank %d: FAILED: %s\n", rank_, what.c_str());
  }
}

bool same_value(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

// Within one ulp of the dtype (or equal, both NaN), plus `slack` relative.
bool within_ulp(const Tensor& got, const Tensor& want, double slack = 0.0) {
  if (got.sizes() != want.sizes() || got.scalar_type() != want.scalar_type()) return false;
  const auto a = got.to(at::kDouble).contiguous();
  const auto b = want.to(at::kDouble).contiguous();
  const double* x = a.data_ptr<double>();
  const double* y = b.data_ptr<double>();
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    if (same_value(x[i], y[i])) continue;
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) return false;
    // One ulp of the dtype at the larger magnitude.
    const double m = std::max(std::fabs(x[i]), std::fabs(y[i]));
    int e = 0;
    std::frexp(m, &e);
    int digits = 53;
    switch (got.scalar_type()) {
      case at::kFloat: digits = 24; break;
      case at::kHalf: digits = 11; break;
      case at::kBFloat16: digits = 8; break;
      default: break;
    }
    if (std::fabs(x[i] - y[i]) > std::ldexp(1.0, e - digits) + slack * m) return false;
  }
  return true;
}

bool identical(const Tensor& a, const Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(),
                     static_cast<std::size_t>(a.numel()) * a.element_size()) == 0;
}

Tensor random_grad(std::int64_t n, at::ScalarType dtype, std::mt19937_64& rng) {
  auto g = at::empty({n}, at::TensorOptions().dtype(at::kDouble));
  auto* d = g.data_ptr<double>();
  for (std::int64_t i = 0; i < n; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1p-53;
    const double v = std::ldexp(u + 0.5, static_cast<int>(rng() % 9) - 4);
    d[i] = (rng() & 1) ? v : -v;
  }
  return g.to(dtype);
}

// The whole model: each parameter's gradient, generated identically on every rank.
struct model {
  std::vector<Tensor> grads;  // the reference values, never modified
  std::vector<int> owner;     // the rank holding it; -1: every rank holds it (counted on `counter`)
  std::vector<int> counter;
};

model make_model(std::uint64_t seed, int world, at::ScalarType dtype, bool mixed) {
  std::mt19937_64 rng(seed);
  model m;
  const std::size_t count = 1 + rng() % 12;
  const at::ScalarType types[] = {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16};
  for (std::size_t i = 0; i < count; ++i) {
    const auto n = static_cast<std::int64_t>(rng() % 5 == 0 ? rng() % 4 : rng() % 3000);
    const at::ScalarType t = mixed ? types[rng() % 4] : dtype;
    m.grads.push_back(random_grad(n, t, rng));
    const bool replicated = rng() % 4 == 0;
    m.owner.push_back(replicated ? -1 : static_cast<int>(rng() % static_cast<std::uint64_t>(world)));
    m.counter.push_back(static_cast<int>(rng() % static_cast<std::uint64_t>(world)));
  }
  return m;
}

Tensor param_with_grad(const Tensor& g) {
  auto p = at::zeros(g.sizes(), at::TensorOptions().dtype(g.scalar_type())).requires_grad_(true);
  p.mutable_grad() = g.clone();
  return p;
}

// This rank's parameters (with copies of the gradients), the counted mask, and which model
// parameter each one is.
struct shard {
  std::vector<Tensor> params;
  std::vector<bool> counted;
  std::vector<std::size_t> index;
};

shard my_shard(const model& m, int rank) {
  shard s;
  for (std::size_t i = 0; i < m.grads.size(); ++i) {
    if (m.owner[i] != rank && m.owner[i] != -1) continue;
    s.params.push_back(param_with_grad(m.grads[i]));
    s.counted.push_back(m.owner[i] == rank || m.counter[i] == rank);
    s.index.push_back(i);
  }
  return s;
}

// The one-process result over the whole model.
double reference(const model& m, double max_norm, double p, std::vector<Tensor>& clipped) {
  std::vector<Tensor> params;
  for (const auto& g : m.grads) params.push_back(param_with_grad(g));
  const double total = gradclip::torch::clip_grad_norm_(params, max_norm, p, false);
  clipped.clear();
  for (const auto& q : params) clipped.push_back(q.grad());
  return total;
}

bool close(double got, double want, double tol) {
  if (same_value(got, want)) return true;
  return std::isfinite(got) && std::isfinite(want) && std::fabs(got - want) <= tol * std::fabs(want);
}

// Every rank's norm, to check that they hold the same bits.
void check_same_on_all_ranks(c10d::ProcessGroup& pg, double value, const std::string& what) {
  auto t = at::zeros({2}, at::TensorOptions().dtype(at::kDouble));
  t[0] = value;
  t[1] = std::isnan(value) ? 1.0 : 0.0;
  auto mx = t.clone();
  auto mn = -t;
  std::vector<Tensor> a{mx}, b{mn};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::MAX;
  pg.allreduce(a, o)->wait();
  pg.allreduce(b, o)->wait();
  const double hi = a[0][0].item<double>(), lo = -b[0][0].item<double>();
  const double nan_max = a[0][1].item<double>(), nan_min = -b[0][1].item<double>();
  if (std::isnan(value) || nan_max != 0.0) {
    check(nan_max == 1.0 && nan_min == 1.0, what + ": NaN on some ranks only");
  } else {
    check(same_value(hi, value) && same_value(lo, value), what + ": ranks hold different norms");
  }
}

void run_case(c10d::ProcessGroup& pg, int world, std::uint64_t seed, at::ScalarType dtype, bool mixed, double p,
              double max_norm_factor) {
  const int rank = pg.getRank();
  const model m = make_model(seed, world, dtype, mixed);
  std::vector<Tensor> want;
  const double unclipped = reference(m, inf, p, want);
  const double max_norm = unclipped * max_norm_factor;
  const double total_ref = reference(m, max_norm, p, want);
  shard s = my_shard(m, rank);
  const double total = gradclip::torch::clip_grad_norm_(s.params, max_norm, p, false, pg, s.counted);
  const std::string what = "seed " + std::to_string(seed) + " p " + std::to_string(p) + " dtype " +
                           std::string(c10::toString(mixed ? at::kFloat : dtype)) + (mixed ? " (mixed)" : "") +
                           " factor " + std::to_string(max_norm_factor);
  check(close(total, total_ref, 1e-12), what + ": norm " + std::to_string(total) + " vs " + std::to_string(total_ref));
  // The norm's own difference (sums grouped by rank; ~1e-16 relative, which is many ulps of
  // double data) carries into the coefficient: 1 ulp of the dtype plus twice that, relative.
  const double slack = std::isfinite(total) && total_ref != 0.0 ? 2.0 * std::fabs(total - total_ref) / total_ref : 0.0;
  for (std::size_t j = 0; j < s.params.size(); ++j) {
    check(within_ulp(s.params[j].grad(), want[s.index[j]], slack), what + ": gradient " + std::to_string(s.index[j]));
  }
  check_same_on_all_ranks(pg, total, what);
}

// A NaN or inf in one parameter (held by one rank).
void run_nonfinite(c10d::ProcessGroup& pg, int world, std::uint64_t seed, double bad, double p, bool error) {
  const int rank = pg.getRank();
  model m = make_model(seed, world, at::kFloat, false);
  std::size_t k = 0;
  while (k < m.grads.size() && m.grads[k].numel() == 0) ++k;
  if (k == m.grads.size()) {
    std::mt19937_64 rng(seed);
    m.grads.push_back(random_grad(5, at::kFloat, rng));
    m.owner.push_back(0);
    m.counter.push_back(0);
  }
  m.owner[k] = static_cast<int>(seed % static_cast<std::uint64_t>(world));
  m.grads[k] = m.grads[k].clone();
  m.grads[k][m.grads[k].numel() / 2] = bad;
  std::vector<Tensor> want;
  const double total_ref = reference(m, 1.0, p, want);
  shard s = my_shard(m, rank);
  const std::string what = "nonfinite seed " + std::to_string(seed) + " p " + std::to_string(p) +
                           (error ? " error" : " propagate");
  if (error) {
    bool threw = false;
    try {
      gradclip::torch::clip_grad_norm_(s.params, 1.0, p, true, pg, s.counted);
    } catch (const c10::Error&) {
      threw = true;
    }
    check(threw, what + ": no c10::Error");
    for (std::size_t j = 0; j < s.params.size(); ++j) {
      check(identical(s.params[j].grad(), m.grads[s.index[j]]), what + ": gradient written");
    }
  } else {
    const double total = gradclip::torch::clip_grad_norm_(s.params, 1.0, p, false, pg, s.counted);
    check(same_value(total, total_ref), what + ": norm " + std::to_string(total) + " vs " + std::to_string(total_ref));
    for (std::size_t j = 0; j < s.params.size(); ++j) {
      check(within_ulp(s.params[j].grad(), want[s.index[j]]), what + ": gradient " + std::to_string(s.index[j]));
    }
  }
}

// Bad arguments on one rank: every rank throws std::invalid_argument and nothing is written.
void run_bad_arguments(c10d::ProcessGroup& pg, int world) {
  const int rank = pg.getRank();
  const model m = make_model(99, world, at::kFloat, false);
  for (int kind = 0; kind < 4; ++kind) {
    for (int bad_rank = 0; bad_rank < world; ++bad_rank) {
      shard s = my_shard(m, rank);
      double max_norm = 0.5, p = 2.0;
      std::vector<bool> counted = s.counted;
      if (rank == bad_rank) {
        if (kind == 0) counted.push_back(true);  // wrong size
        if (kind == 1) max_norm = -1.0;
        if (kind == 2) p = 0.0;
        if (kind == 3) max_norm = 0.25;  // disagrees with the others (when world > 1)
      }
      bool threw = false;
      try {
        gradclip::torch::clip_grad_norm_(s.params, max_norm, p, false, pg, counted);
      } catch (const std::invalid_argument&) {
        threw = true;
      }
      const bool expect = kind != 3 || world > 1;
      check(threw == expect, "bad arguments kind " + std::to_string(kind) + " on rank " + std::to_string(bad_rank));
      if (expect) {
        for (std::size_t j = 0; j < s.params.size(); ++j) {
          check(identical(s.params[j].grad(), m.grads[s.index[j]]), "bad arguments: gradient written");
        }
      }
    }
  }
}

// Gradients gradclip does not read directly (every other gradient of a rank a strided slice):
// their partials come from libtorch ops (in double), so the norm is the one-process one's within
// 1e-12 but not to the bit, and the double gradients are within 1 ulp plus 1e-12 relative (the
// coefficient's difference).
void run_fallback(c10d::ProcessGroup& pg, int world, std::uint64_t seed, double p) {
  const int rank = pg.getRank();
  const model m = make_model(seed, world, at::kDouble, false);
  shard s = my_shard(m, rank);
  // Make every other gradient of this rank a gapped view (every second element of a buffer).
  for (std::size_t j = 0; j < s.params.size(); j += 2) {
    const auto& g = m.grads[s.index[j]];
    auto big = at::zeros({g.numel() * 2}, g.options());
    auto view = big.slice(0, 0, g.numel() * 2, 2);
    view.copy_(g);
    s.params[j].mutable_grad() = view;
  }
  std::vector<Tensor> want;
  const double total_ref = reference(m, 0.5, p, want);
  const double total = gradclip::torch::clip_grad_norm_(s.params, 0.5, p, false, pg, s.counted);
  const std::string what = "fallback seed " + std::to_string(seed) + " p " + std::to_string(p);
  check(close(total, total_ref, 1e-12), what + ": norm " + std::to_string(total) + " vs " + std::to_string(total_ref));
  for (std::size_t j = 0; j < s.params.size(); ++j) {
    check(within_ulp(s.params[j].grad().contiguous(), want[s.index[j]], 1e-12),
          what + ": gradient " + std::to_string(s.index[j]));
  }
  check_same_on_all_ranks(pg, total, what);
}

// Sparse and complex gradients (libtorch ops) beside dense ones, on one rank each: the norm
// against a long-double sum of |x|^p, the gradients against original * coefficient.
void run_sparse_complex(c10d::ProcessGroup& pg, int world, std::uint64_t seed, double p) {
  const int rank = pg.getRank();
  std::mt19937_64 rng(seed);
  const auto dense = random_grad(300, at::kDouble, rng);
  const auto re = random_grad(200, at::kDouble, rng), im = random_grad(200, at::kDouble, rng);
  const auto complex = at::complex(re, im);
  const auto values = random_grad(50, at::kDouble, rng);
  auto indices = at::randperm(500, at::TensorOptions().dtype(at::kLong)).slice(0, 0, 50).reshape({1, 50});
  const auto sparse = at::sparse_coo_tensor(indices, values, {500});
  const Tensor grads[] = {dense, complex, sparse};
  // Magnitudes, for the reference.
  const Tensor mags[] = {dense.abs(), complex.abs(), values.abs()};
  long double sum = 0.0L, max = 0.0L;
  for (const auto& m : mags) {
    const auto c = m.contiguous();
    for (std::int64_t i = 0; i < c.numel(); ++i) {
      const long double v = c.data_ptr<double>()[i];
      sum += std::isinf(p) ? 0.0L : std::pow(v, static_cast<long double>(p));
      max = std::max(max, v);
    }
  }
  const double want = std::isinf(p) ? static_cast<double>(max) : static_cast<double>(std::pow(sum, 1.0L / p));
  std::vector<Tensor> params;
  std::vector<std::size_t> which;
  for (std::size_t k = 0; k < 3; ++k) {
    if (static_cast<int>((seed + k) % static_cast<std::uint64_t>(world)) != rank) continue;
    auto q = at::zeros({1}, at::TensorOptions().dtype(at::kDouble)).requires_grad_(true);
    q.mutable_grad() = grads[k].clone();
    params.push_back(q);
    which.push_back(k);
  }
  const double max_norm = 0.5;
  const double total = gradclip::torch::clip_grad_norm_(params, max_norm, p, false, pg);
  const std::string what = "sparse/complex seed " + std::to_string(seed) + " p " + std::to_string(p);
  check(close(total, want, 1e-12), what + ": norm " + std::to_string(total) + " vs " + std::to_string(want));
  const double coef = max_norm / (total + 1e-6);
  for (std::size_t j = 0; j < params.size(); ++j) {
    const auto got = params[j].grad().is_sparse() ? params[j].grad().coalesce().values() : params[j].grad();
    const auto orig = grads[which[j]].is_sparse() ? grads[which[j]].coalesce().values() : grads[which[j]];
    const auto expect = orig * coef;
    const double err = (got - expect).abs().max().item<double>();
    check(err <= 1e-15 * expect.abs().max().item<double>() + 1e-300,
          what + ": gradient " + std::to_string(which[j]) + " off by " + std::to_string(err) + " coalesced " +
              std::to_string(params[j].grad().is_sparse() && params[j].grad().is_coalesced()));
  }
  check_same_on_all_ranks(pg, total, what);
}

// The overloads (vector, braced list, at::TensorList, named_parameters()) give the same norm.
void run_overloads(c10d::ProcessGroup& pg) {
  std::mt19937_64 rng(7 + static_cast<std::uint64_t>(pg.getRank()));
  const auto a = param_with_grad(random_grad(40, at::kFloat, rng));
  const auto b = param_with_grad(random_grad(30, at::kDouble, rng));
  const std::vector<Tensor> v{a, b};
  ::torch::OrderedDict<std::string, Tensor> dict;
  dict.insert("a", a);
  dict.insert("b", b);
  const double inf_norm = inf;
  const double n1 = gradclip::torch::clip_grad_norm_(v, inf_norm, 2.0, false, pg);
  const double n2 = gradclip::torch::clip_grad_norm_({a, b}, inf_norm, 2.0, false, pg, {true, true});
  const double n3 = gradclip::torch::clip_grad_norm_(at::TensorList(v), inf_norm, 2.0, false, pg);
  const double n4 = gradclip::torch::clip_grad_norm_(dict, inf_norm, 2.0, false, pg, std::vector<bool>{true, true});
  check(n1 == n2 && n1 == n3 && n1 == n4, "overloads: different norms");
  // Nothing counted anywhere: norm 0, nothing scaled.
  const double n0 = gradclip::torch::clip_grad_norm_(v, 1e-3, 2.0, true, pg, {false, false});
  check(n0 == 0.0, "overloads: nothing counted, norm " + std::to_string(n0));
}

// TP x DP x EP: dense parameters split across a tensor-parallel group of 2 (1 on odd world
// sizes; its own Gloo group over a PrefixStore) and equal on every data-parallel copy; expert
// e on world rank e % world. Dense over the TP group, experts over the world: the norm of one
// copy of everything. Then the audit: dense over the TP group is right, dense over the world
// counts every data-parallel copy, an expert left uncounted is reported.
void run_categories(c10d::ProcessGroup& world_pg, const c10::intrusive_ptr<c10d::Store>& store, int world) {
  const int rank = world_pg.getRank();
  const int tp_size = world % 2 == 0 ? 2 : 1;
  const int tp_rank = rank % tp_size;
  auto options = c10d::ProcessGroupGloo::Options::create();
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  auto tp_store = c10::make_intrusive<c10d::PrefixStore>("tp" + std::to_string(rank / tp_size), store);
  auto tp = c10::make_intrusive<c10d::ProcessGroupGloo>(tp_store, tp_rank, tp_size, options);

  for (double p : {1.0, 2.0, inf}) {
    std::mt19937_64 rng(500);  // the same model on every rank
    std::vector<Tensor> dense, experts;
    for (int i = 0; i < 8; ++i) dense.push_back(random_grad(static_cast<std::int64_t>(1 + rng() % 900), at::kFloat, rng));
    for (int e = 0; e < 5; ++e) experts.push_back(random_grad(static_cast<std::int64_t>(1 + rng() % 900), at::kDouble, rng));
    std::vector<Tensor> all_params;
    for (const auto& g : dense) all_params.push_back(param_with_grad(g));
    for (const auto& g : experts) all_params.push_back(param_with_grad(g));
    const double unclipped = gradclip::torch::clip_grad_norm_(all_params, inf, p, false);
    const double max_norm = unclipped / 3;
    const double total_ref = gradclip::torch::clip_grad_norm_(all_params, max_norm, p, false);

    std::vector<Tensor> mine;
    std::vector<std::size_t> which;  // index into all_params
    std::vector<std::uint64_t> ids;
    std::vector<bool> is_dense;
    for (std::size_t i = 0; i < dense.size(); ++i) {
      if (static_cast<int>(i) % tp_size != tp_rank) continue;
      mine.push_back(param_with_grad(dense[i]));
      which.push_back(i);
      ids.push_back(i);
      is_dense.push_back(true);
    }
    for (std::size_t e = 0; e < experts.size(); ++e) {
      if (static_cast<int>(e) % world != rank) continue;
      mine.push_back(param_with_grad(experts[e]));
      which.push_back(dense.size() + e);
      ids.push_back(1000 + e);
      is_dense.push_back(false);
    }
    std::vector<bool> expert_members(is_dense.size());
    for (std::size_t k = 0; k < is_dense.size(); ++k) expert_members[k] = !is_dense[k];
    const std::vector<gradclip::torch::category> cats{{tp.get(), is_dense}, {&world_pg, expert_members}};
    const std::string what = "categories p " + std::to_string(p);
    const double total = gradclip::torch::clip_grad_norm_(mine, max_norm, p, false, cats);
    check(close(total, total_ref, 1e-12), what + ": norm " + std::to_string(total) + " vs " + std::to_string(total_ref));
    check_same_on_all_ranks(world_pg, total, what);
    const double slack = 2.0 * std::fabs(total - total_ref) / total_ref;
    for (std::size_t k = 0; k < mine.size(); ++k) {
      check(within_ulp(mine[k].grad(), all_params[which[k]].grad(), slack), what + ": gradient " + std::to_string(which[k]));
    }

    // The audit, on fresh copies (the clip above scaled `mine`).
    std::vector<Tensor> d_params;
    std::vector<std::uint64_t> d_ids;
    for (std::size_t k = 0; k < mine.size(); ++k) {
      if (!is_dense[k]) continue;
      d_params.push_back(param_with_grad(dense[which[k]]));
      d_ids.push_back(ids[k]);
    }
    const auto good = gradclip::torch::audit_ownership(d_params, d_ids, {}, *tp, p);
    check(good.ok(), what + ": dense audit over TP: " + good.summary());
    check(good.distinct == dense.size(), what + ": dense pieces");
    std::vector<Tensor> dense_params;
    for (const auto& g : dense) dense_params.push_back(param_with_grad(g));
    const double dense_ref = gradclip::torch::clip_grad_norm_(dense_params, inf, p, false);
    check(close(good.deduplicated_norm, dense_ref, 1e-12), what + ": deduplicated norm");
    check(close(good.counted_norm, dense_ref, 1e-12), what + ": counted norm");
    const auto over_world = gradclip::torch::audit_ownership(d_params, d_ids, {}, world_pg, p);
    if (world / tp_size > 1) {
      check(!over_world.ok() && over_world.counted_twice == 0, what + ": dense over the world: " + over_world.summary());
      check(over_world.counted_twice_ranks[0] == 0 && over_world.counted_twice_ranks[1] == tp_size,
            what + ": double-count ranks");
    } else {
      check(over_world.ok(), what + ": one data-parallel copy: " + over_world.summary());
    }
    std::vector<Tensor> e_params;
    std::vector<std::uint64_t> e_ids;
    std::vector<bool> e_counted;
    for (std::size_t k = 0; k < mine.size(); ++k) {
      if (is_dense[k]) continue;
      e_params.push_back(param_with_grad(experts[which[k] - dense.size()]));
      e_ids.push_back(ids[k]);
      e_counted.push_back(ids[k] != 1003);
    }
    const auto never = gradclip::torch::audit_ownership(e_params, e_ids, e_counted, world_pg, p);
    check(never.never_counted == 1003 && never.never_counted_rank == 3 % world && never.counted_twice == ownership_none,
          what + ": expert 3 uncounted: " + never.summary());
  }

  // A parameter in two categories (on rank 0 only): every rank throws, nothing written.
  std::mt19937_64 rng(77);
  std::vector<Tensor> two{param_with_grad(random_grad(10, at::kFloat, rng)), param_with_grad(random_grad(10, at::kFloat, rng))};
  const Tensor before = two[0].grad().clone();
  std::vector<bool> second{rank == 0, false};
  const std::vector<gradclip::torch::category> overlap{{tp.get(), {true, true}}, {&world_pg, second}};
  bool threw = false;
  try {
    gradclip::torch::clip_grad_norm_(two, 1e-3, 2.0, false, overlap);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  check(threw, "categories: overlap did not throw");
  check(identical(two[0].grad(), before), "categories: overlap wrote");
  threw = false;
  try {  // ids of the wrong size on the last rank
    std::vector<std::uint64_t> short_ids{1, 2};
    if (rank == world - 1) short_ids.pop_back();
    gradclip::torch::audit_ownership(two, short_ids, {}, world_pg);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  check(threw, "audit: short ids did not throw");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s <world> <rank> <file-store-path>\n", argv[0]);
    return 2;
  }
  const int world = std::atoi(argv[1]);
  const int rank = std::atoi(argv[2]);
  rank_ = rank;
  try {
    auto store = c10::make_intrusive<c10d::FileStore>(argv[3], world);
    auto options = c10d::ProcessGroupGloo::Options::create();
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);

    const double norms[] = {1.0, 2.0, 3.0, inf};
    const at::ScalarType types[] = {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16};
    std::uint64_t seed = 1;
    for (double p : norms) {
      for (at::ScalarType t : types) {
        for (int trial = 0; trial < 6; ++trial) {
          run_case(*pg, world, seed++, t, false, p, trial % 2 == 0 ? 0.5 : 2.0);
        }
      }
      for (int trial = 0; trial < 6; ++trial) run_case(*pg, world, seed++, at::kFloat, true, p, 0.3);
      for (double bad : {std::numeric_limits<double>::quiet_NaN(), inf}) {
        for (bool error : {true, false}) run_nonfinite(*pg, world, seed++, bad, p, error);
      }
      for (int trial = 0; trial < 3; ++trial) run_fallback(*pg, world, seed++, p);
      for (int trial = 0; trial < 3; ++trial) run_sparse_complex(*pg, world, seed++, p);
    }
    run_bad_arguments(*pg, world);
    run_overloads(*pg);
    run_categories(*pg, store, world);
    pg->barrier()->wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: exception: %s\n", rank, e.what());
    return 1;
  }
  if (failures != 0) {
    std::fprintf(stderr, "rank %d of %d: %d failures\n", rank, world, failures);
    return 1;
  }
  std::printf("rank %d of %d: all passed\n", rank, world);
  return 0;
}
