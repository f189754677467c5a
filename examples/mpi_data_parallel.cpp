// Data-parallel, ZeRO-style sharded training of a small MLP with gradient clipping
// by the global norm over MPI:
//
//   mpirun -np 4 ./gradclip_example_mpi_data_parallel
//
// Every rank holds the whole model for the forward and backward pass (data
// parallelism: each rank takes its slice of every batch) and all-reduces the
// gradients into their average. Each rank then owns a contiguous shard of the
// weight matrices, as ZeRO partitions a flat parameter buffer (the cut falls
// wherever it falls, mid-matrix included), and keeps the optimizer state for its
// shard only. The biases are small and replicated: every rank updates all of them.
//
// gradclip::mpi::clip_by_global_norm clips the gradient of the whole model while
// every rank touches only its shard (and its copy of the biases, which the mask
// counts once): one all-reduce of a partial norm, no gathering of gradients. The
// updated shards are then all-gathered for the next step.
#include <mpi.h>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include <gradclip/mpi.hpp>

namespace {

constexpr int inputs = 8, hidden = 32;
constexpr int batch = 256, steps = 200;
constexpr double learning_rate = 0.05, momentum = 0.9, max_norm = 1.0;

// The weights, W1 (hidden x inputs) then W2 (1 x hidden), in one flat buffer that
// the ranks shard; the biases b1 (hidden) and b2 (1) in another that they replicate.
constexpr Eigen::Index w1_size = hidden * inputs, w_size = w1_size + hidden, b_size = hidden + 1;

struct model {
  Eigen::VectorXd w = Eigen::VectorXd::Zero(w_size);
  Eigen::VectorXd b = Eigen::VectorXd::Zero(b_size);

  Eigen::Map<Eigen::MatrixXd> w1() { return {w.data(), hidden, inputs}; }
  Eigen::Map<Eigen::RowVectorXd> w2() { return {w.data() + w1_size, hidden}; }
  Eigen::Map<Eigen::VectorXd> b1() { return {b.data(), hidden}; }
  double& b2() { return b(hidden); }
};

// A fixed regression problem, the same on every rank: y = 4 sin(x0) + 3 x1 x2 + noise.
void make_batch(std::uint64_t step, Eigen::MatrixXd& x, Eigen::VectorXd& y) {
  std::mt19937_64 rng(1000 + step);
  std::normal_distribution<double> normal(0.0, 1.0);
  x.resize(batch, inputs);
  y.resize(batch);
  for (int i = 0; i < batch; ++i) {
    for (int j = 0; j < inputs; ++j) x(i, j) = normal(rng);
    y(i) = 4.0 * std::sin(x(i, 0)) + 3.0 * x(i, 1) * x(i, 2) + 0.1 * normal(rng);
  }
}

// Rows [lo, hi) of the batch: loss sum and gradients (of the loss averaged over the
// whole batch) added into grad.
double backward(model& m, const Eigen::MatrixXd& x, const Eigen::VectorXd& y, int lo, int hi, model& grad) {
  const Eigen::MatrixXd xs = x.middleRows(lo, hi - lo);
  const Eigen::MatrixXd h = ((xs * m.w1().transpose()).rowwise() + m.b1().transpose()).array().tanh().matrix();
  const Eigen::VectorXd out = (h * m.w2().transpose()).array() + m.b2();
  const Eigen::VectorXd e = (out - y.segment(lo, hi - lo)) / batch;  // d(loss)/d(out)
  const Eigen::MatrixXd dh = ((e * m.w2()).array() * (1.0 - h.array().square())).matrix();
  grad.w2() += e.transpose() * h;
  grad.b2() += e.sum();
  grad.w1() += dh.transpose() * xs;
  grad.b1() += dh.colwise().sum().transpose();
  return 0.5 * (out - y.segment(lo, hi - lo)).squaredNorm() / batch;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  model m;  // the same initial weights on every rank
  {
    std::mt19937_64 rng(42);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (Eigen::Index i = 0; i < w1_size; ++i) m.w(i) = normal(rng) / std::sqrt(double{inputs});
    for (Eigen::Index i = w1_size; i < w_size; ++i) m.w(i) = normal(rng) / std::sqrt(double{hidden});
  }

  // This rank's shard of the weights, [lo, hi), and the ZeRO-style layout of all shards.
  std::vector<int> counts(static_cast<std::size_t>(size)), offsets(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) {
    offsets[static_cast<std::size_t>(r)] = static_cast<int>(w_size * r / size);
    counts[static_cast<std::size_t>(r)] = static_cast<int>(w_size * (r + 1) / size) - offsets[static_cast<std::size_t>(r)];
  }
  const Eigen::Index lo = offsets[static_cast<std::size_t>(rank)], hi = lo + counts[static_cast<std::size_t>(rank)];

  model grad, velocity;  // velocity: momentum, used for this rank's shard and the biases only

  // The group gradclip clips on this rank: the parts of W1 and W2 in the shard
  // (views into the gradient buffer), then the replicated biases, flagged.
  std::vector<Eigen::Map<Eigen::VectorXd>> group;
  std::vector<bool> replicated;
  for (auto [begin, end] : {std::pair<Eigen::Index, Eigen::Index>{0, w1_size}, {w1_size, w_size}}) {
    const Eigen::Index a = std::max(begin, lo), z = std::min(end, hi);
    if (a < z) {
      group.emplace_back(grad.w.data() + a, z - a);
      replicated.push_back(false);
    }
  }
  group.emplace_back(grad.b.data(), hidden);
  group.emplace_back(grad.b.data() + hidden, 1);
  replicated.insert(replicated.end(), {true, true});

  const gradclip::clip_options options{2.0, 1e-6, gradclip::nonfinite::skip};
  Eigen::MatrixXd x;
  Eigen::VectorXd y;
  double first_loss = 0, loss = 0;
  int clipped_steps = 0;
  for (int step = 0; step < steps; ++step) {
    make_batch(static_cast<std::uint64_t>(step), x, y);
    grad.w.setZero();
    grad.b.setZero();
    double local_loss = backward(m, x, y, batch * rank / size, batch * (rank + 1) / size, grad);

    // Data parallelism: the average gradient and loss over the whole batch, on every rank.
    MPI_Allreduce(MPI_IN_PLACE, grad.w.data(), static_cast<int>(w_size), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, grad.b.data(), static_cast<int>(b_size), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(&local_loss, &loss, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (step == 0) first_loss = loss;

    // Every rank happens to hold the whole averaged gradient here, so the norm
    // gradclip assembles from the shards can be checked against it.
    const double whole = std::sqrt(grad.w.squaredNorm() + grad.b.squaredNorm());

    // Clip the whole model's gradient, each rank scaling only what it owns.
    const gradclip::clip_result r = gradclip::mpi::clip_by_global_norm(group, replicated, max_norm, MPI_COMM_WORLD, options);
    if (std::isfinite(whole)) {
      if (std::fabs(whole - r.total_norm) > 1e-12 * whole) {
        std::printf("rank %d: sharded norm %.17g != whole-gradient norm %.17g\n", rank, r.total_norm, whole);
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
    }
    if (rank == 0 && (step % 20 == 0 || step == steps - 1)) {
      std::printf("step %3d  loss %9.5f  grad norm %9.5f%s\n", step, loss, r.total_norm, r.clipped ? "  (clipped)" : "");
    }
    if (!std::isfinite(r.total_norm)) continue;  // nonfinite::skip: nothing was scaled; skip the step
    clipped_steps += r.clipped;

    // SGD with momentum on this rank's shard of the weights and on the biases.
    velocity.w.segment(lo, hi - lo) = momentum * velocity.w.segment(lo, hi - lo) + grad.w.segment(lo, hi - lo);
    m.w.segment(lo, hi - lo) -= learning_rate * velocity.w.segment(lo, hi - lo);
    velocity.b = momentum * velocity.b + grad.b;
    m.b -= learning_rate * velocity.b;

    // Every rank needs all the weights for the next forward pass.
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, m.w.data(), counts.data(), offsets.data(), MPI_DOUBLE,
                   MPI_COMM_WORLD);
  }

  const bool learned = loss < 0.25 * first_loss;
  if (rank == 0) {
    std::printf("%d ranks: loss %.5f -> %.5f, %d of %d steps clipped%s\n", size, first_loss, loss, clipped_steps, steps,
                learned ? "" : "  -- DID NOT LEARN");
  }
  MPI_Finalize();
  return learned ? 0 : 1;
}
