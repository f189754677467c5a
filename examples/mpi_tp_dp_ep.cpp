// Gradient clipping for a TP x DP x EP layout with gradclip::mpi categories, and the
// ownership audit that catches a double count (run on 4 ranks: mpirun -n 4).
//
// The world of R ranks is a grid of tensor-parallel (TP) groups of 2 (1 when R is odd);
// the TP groups are data-parallel (DP) copies of each other. Each rank holds:
//   - dense layers: its TP slice of each weight (the TP group together holds one copy;
//     every DP copy holds the same values), and a layer norm every TP rank holds whole;
//   - experts: expert e lives on world rank e % R (expert parallelism over the world).
// Their norm is one copy of everything:
//   dense category:  reduced over the TP group; the layer norm counted on TP rank 0 only;
//   expert category: reduced over the world (the expert-parallel group here).
// With pipeline stages, add the stage's ranks to each category's communicator (the dense
// layers of every stage reduce over TP x PP, experts over EP x PP).
#include <gradclip/mpi.hpp>

#include <cstdint>
#include <cstdio>
#include <random>
#include <tuple>
#include <vector>

namespace {

std::vector<float> random_buffer(std::size_t n, std::uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const int tp_size = size % 2 == 0 ? 2 : 1;
  MPI_Comm tp = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, rank / tp_size, rank, &tp);
  int tp_rank = 0;
  MPI_Comm_rank(tp, &tp_rank);
  int failures = 0;

  // This rank's buffers and, per buffer, an id naming the piece of the model it holds.
  std::vector<std::vector<float>> grads;
  std::vector<std::uint64_t> ids;
  std::vector<bool> is_dense, counted;  // a dense layer's buffer; counted on this rank
  constexpr int layers = 3, experts = 6;
  for (int l = 0; l < layers; ++l) {  // a weight of 2 x 512, split by rows across TP
    grads.push_back(random_buffer(1024 / tp_size, 100 + 10 * l + tp_rank, 0.05f));
    ids.push_back(static_cast<std::uint64_t>(100 + 10 * l + tp_rank));
    is_dense.push_back(true);
    counted.push_back(true);
    grads.push_back(random_buffer(64, 500 + l, 0.1f));  // the layer norm: whole on every TP rank
    ids.push_back(static_cast<std::uint64_t>(500 + l));
    is_dense.push_back(true);
    counted.push_back(tp_rank == 0);
  }
  for (int e = rank; e < experts; e += size) {
    grads.push_back(random_buffer(2048, 900 + e, 0.02f * (e + 1)));
    ids.push_back(static_cast<std::uint64_t>(900 + e));
    is_dense.push_back(false);
    counted.push_back(true);
  }
  // Category members: the counted buffers of each kind.
  std::vector<bool> dense(grads.size()), expert(grads.size());
  for (std::size_t k = 0; k < grads.size(); ++k) {
    dense[k] = is_dense[k] && counted[k];
    expert[k] = !is_dense[k] && counted[k];
  }

  // The audit, per category over its communicator: each piece counted once.
  namespace gm = gradclip::mpi;
  auto kind = [&](bool want_dense) {  // one kind's buffers, their ids and counted flags
    std::vector<gradclip::buffer_view<float>> g;
    std::vector<std::uint64_t> i;
    gm::counted_buffers c;
    for (std::size_t k = 0; k < grads.size(); ++k) {
      if (is_dense[k] != want_dense) continue;
      g.emplace_back(grads[k].data(), grads[k].size());
      i.push_back(ids[k]);
      c.flags.push_back(counted[k]);
    }
    return std::make_tuple(g, i, c);
  };
  {
    auto [g, i, c] = kind(true);
    const auto report = gm::audit_ownership(g, i, c, tp);
    if (rank == 0) std::printf("dense (TP group):  %s\n", report.summary().c_str());
    failures += !report.ok();
  }
  {
    auto [g, i, c] = kind(false);
    const auto report = gm::audit_ownership(g, i, c, MPI_COMM_WORLD);
    if (rank == 0) std::printf("experts (world):   %s\n", report.summary().c_str());
    failures += !report.ok();
  }
  {  // The classic bug, planted: the layer norm counted on every TP rank.
    auto [g, i, c] = kind(true);
    for (auto&& f : c.flags) f = true;
    const auto report = gm::audit_ownership(g, i, c, tp);
    if (rank == 0) std::printf("planted bug:       %s\n", report.summary().c_str());
    failures += tp_size > 1 && report.ok();  // must be caught when TP has 2 ranks
  }

  // The clip: dense over TP, experts over the world, combined.
  std::vector<gradclip::buffer_view<float>> group;
  for (auto& b : grads) group.emplace_back(b.data(), b.size());
  const std::vector<gm::category> categories{{tp, dense}, {MPI_COMM_WORLD, expert}};
  const auto r = gm::clip_by_global_norm(group, categories, 1.0);
  if (rank == 0) {
    std::printf("global norm %.6f over %d ranks (TP %d x DP %d, experts over the world): %s, coefficient %.6f\n",
                r.total_norm, size, tp_size, size / tp_size, r.clipped ? "clipped" : "not clipped", r.scale);
  }
  // Every rank agrees on the norm.
  double lo = 0.0, hi = 0.0;
  MPI_Allreduce(&r.total_norm, &lo, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&r.total_norm, &hi, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  failures += lo != hi;

  int any = 0;
  MPI_Allreduce(&failures, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Comm_free(&tp);
  MPI_Finalize();
  return any == 0 ? 0 : 1;
}
