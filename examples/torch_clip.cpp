// A libtorch training loop clipped by gradclip: gradclip::torch::clip_grad_norm_ where
// torch::nn::utils::clip_grad_norm_ would be, then the same loop with dynamic loss scaling
// (gradclip::grad_scaler: PyTorch GradScaler's rules; unscale and clip fused in one pass).
//
//   gradclip_example_torch_clip [--steps N]
#include <gradclip/torch.hpp>
#include <gradclip/loss_scale.hpp>

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

struct regression {
  torch::Tensor x, y;
};

regression make_data() {
  torch::manual_seed(0);
  auto x = torch::randn({256, 16});
  auto y = torch::sin(x.sum(1, true)) + 0.1 * torch::randn({256, 1});
  return {x, y};
}

torch::nn::Sequential make_model() {
  torch::manual_seed(1);
  return torch::nn::Sequential(torch::nn::Linear(16, 64), torch::nn::Tanh(), torch::nn::Linear(64, 1));
}

// The gradients as a gradclip group (this model's are contiguous float tensors on the CPU).
std::vector<gradclip::buffer_view<float>> grad_views(const std::vector<torch::Tensor>& params) {
  std::vector<gradclip::buffer_view<float>> views;
  for (const auto& p : params) {
    if (p.grad().defined()) views.emplace_back(p.grad().data_ptr<float>(), static_cast<std::size_t>(p.grad().numel()));
  }
  return views;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 200;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::atoi(argv[i + 1]);
  }
  torch::set_num_threads(1);
  const auto data = make_data();
  const double max_norm = 1.0;

  std::puts("plain fp32 training, gradclip::torch::clip_grad_norm_ (a drop-in for libtorch's):");
  {
    auto model = make_model();
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.5));
    int clipped = 0;
    for (int step = 0; step < steps; ++step) {
      opt.zero_grad();
      auto loss = torch::mse_loss(model->forward(data.x), data.y);
      loss.backward();
      const double total = gradclip::torch::clip_grad_norm_(model->parameters(), max_norm);
      clipped += total > max_norm;
      opt.step();
      if (step % 50 == 0 || step == steps - 1) {
        std::printf("  step %4d  loss %.5f  grad norm %8.4f%s\n", step, loss.item<double>(), total,
                    total > max_norm ? "  (clipped)" : "");
      }
    }
    std::printf("  %d of %d steps clipped\n", clipped, steps);
  }

  std::puts("with dynamic loss scaling (gradclip::grad_scaler), an overflowing step every 40:");
  {
    auto model = make_model();
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.5));
    gradclip::grad_scaler scaler({65536.0, 2.0, 0.5, 25});  // GradScaler's rules, a short growth interval
    int skipped = 0;
    for (int step = 0; step < steps; ++step) {
      opt.zero_grad();
      auto loss = torch::mse_loss(model->forward(data.x), data.y);
      // As if fp16 activations had overflowed: the scaled loss is inf on these steps.
      const double overflow = step % 40 == 39 ? 1e38 : 1.0;
      (loss * scaler.scale() * overflow).backward();
      const auto params = model->parameters();
      const auto r = scaler.unscale_and_clip(grad_views(params), max_norm);  // one read, one write
      if (r.found_inf) {
        ++skipped;  // nothing was written; skip the step
      } else {
        opt.step();
      }
      if (r.found_inf || step % 50 == 0 || step == steps - 1) {
        std::printf("  step %4d  loss %.5f  scale %8.0f  %s\n", step, loss.item<double>(), scaler.scale(),
                    r.found_inf ? "inf/NaN gradients: step skipped" : "");
      }
      scaler.update(r.found_inf);
    }
    std::printf("  %d of %d steps skipped; final scale %.0f\n", skipped, steps, scaler.scale());
  }
  return 0;
}
