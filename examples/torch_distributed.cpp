// Data-parallel training of a small libtorch model with gradient clipping over a c10d process
// group (gradclip/torch_distributed.hpp), sharded clip: each rank trains on its own batches, the
// gradients are averaged with an all-reduce (what DDP does), and the norm is counted ZeRO-style:
// every parameter on exactly one rank (its owner), so each rank measures only its shard of the
// now-identical gradients, one all-reduce gives every rank the norm of the whole model, and every
// rank scales its full copy by the same coefficient: the replicas stay identical.
//
// Run one process per rank (tests/torch/run_ranks.sh does, over a FileStore in a temporary folder):
//   gradclip_example_torch_distributed <world> <rank> <file-store-path>
#include <gradclip/torch_distributed.hpp>

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s <world> <rank> <file-store-path>\n", argv[0]);
    return 2;
  }
  const int world = std::atoi(argv[1]);
  const int rank = std::atoi(argv[2]);
  try {
    auto store = c10::make_intrusive<c10d::FileStore>(argv[3], world);
    auto options = c10d::ProcessGroupGloo::Options::create();
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);

    ::torch::manual_seed(0);  // the same initial model on every rank
    ::torch::nn::Sequential model(::torch::nn::Linear(8, 32), ::torch::nn::Tanh(), ::torch::nn::Linear(32, 32),
                                  ::torch::nn::Tanh(), ::torch::nn::Linear(32, 1));
    std::vector<at::Tensor> params = model->parameters();
    ::torch::optim::SGD optimizer(params, ::torch::optim::SGDOptions(0.05));

    // The shard this rank counts: parameter i belongs to rank i % world.
    std::vector<bool> counted(params.size());
    for (std::size_t i = 0; i < params.size(); ++i) counted[i] = static_cast<int>(i % world) == rank;

    ::torch::manual_seed(1 + rank);  // each rank its own data
    const int steps = 60;
    double first_loss = 0.0, last_loss = 0.0;
    int clipped_steps = 0;
    for (int step = 0; step < steps; ++step) {
      auto x = ::torch::randn({32, 8});
      auto y = x.sin().sum(1, true);
      optimizer.zero_grad();
      auto loss = ::torch::nn::functional::mse_loss(model->forward(x), y);
      loss.backward();

      // Data parallel: average the gradients over the ranks (one all-reduce, as DDP's bucket).
      std::vector<at::Tensor> grads;
      for (auto& p : params) grads.push_back(p.grad());
      pg->allreduce_coalesced(grads)->wait();
      for (auto& g : grads) g.div_(world);

      // Every rank: the whole model's norm from its shard's share; its copy scaled.
      const double norm = gradclip::torch::clip_grad_norm_(params, 1.0, 2.0, true, *pg, counted);
      if (norm > 1.0) ++clipped_steps;
      optimizer.step();

      // The loss averaged over ranks, for the log.
      std::vector<at::Tensor> l{loss.detach().reshape({1}).clone()};
      pg->allreduce(l)->wait();
      const double mean_loss = l[0].item<double>() / world;
      if (step == 0) first_loss = mean_loss;
      last_loss = mean_loss;
      if (rank == 0 && (step % 10 == 0 || step == steps - 1)) {
        std::printf("step %2d  loss %.5f  grad norm %.5f%s\n", step, mean_loss, norm, norm > 1.0 ? "  (clipped)" : "");
      }
    }

    // The replicas must still be identical: compare every rank's parameters with rank 0's.
    std::vector<at::Tensor> flat{::torch::cat([&] {
      std::vector<at::Tensor> v;
      for (auto& p : params) v.push_back(p.detach().reshape({-1}));
      return v;
    }())};
    auto mine = flat[0].clone();
    std::vector<at::Tensor> b{flat[0]};
    pg->broadcast(b)->wait();
    const bool same = ::torch::equal(mine, b[0]);
    std::vector<at::Tensor> ok{::torch::full({1}, same ? 0.0 : 1.0, at::kDouble)};
    pg->allreduce(ok)->wait();
    if (ok[0].item<double>() != 0.0) {
      std::fprintf(stderr, "rank %d: the replicas diverged\n", rank);
      return 1;
    }
    if (!(last_loss < first_loss)) {
      std::fprintf(stderr, "rank %d: the loss did not fall (%g -> %g)\n", rank, first_loss, last_loss);
      return 1;
    }
    if (rank == 0) {
      std::printf("%d ranks, %d of %d steps clipped; replicas identical\n", world, clipped_steps, steps);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    return 1;
  }
  return 0;
}
