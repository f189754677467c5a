// Folding the clipping coefficient into the optimizer step.
//
// clip_by_global_norm reads the gradients once (norm) and writes them once (scale);
// the optimizer then reads them again. With gradclip::clip_coefficient the scale
// pass disappears: the optimizer multiplies each gradient by r.scale as it reads
// it. This example runs Adam both ways on the same data and checks they agree.
#include <cmath>
#include <cstdio>
#include <vector>

#include <Eigen/Core>
#include <gradclip/gradclip.hpp>

namespace {

struct adam {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::vector<Eigen::VectorXf> m, v;
  int t = 0;

  explicit adam(const std::vector<Eigen::VectorXf>& params) {
    for (const auto& p : params) {
      m.push_back(Eigen::VectorXf::Zero(p.size()));
      v.push_back(Eigen::VectorXf::Zero(p.size()));
    }
  }

  // One step; every gradient is multiplied by grad_scale as it is read.
  void step(std::vector<Eigen::VectorXf>& params, const std::vector<Eigen::VectorXf>& grads, float grad_scale) {
    ++t;
    const float c1 = static_cast<float>(1 - std::pow(beta1, t));
    const float c2 = static_cast<float>(1 - std::pow(beta2, t));
    const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto g = grads[i].array() * grad_scale;
      m[i].array() = b1 * m[i].array() + (1 - b1) * g;
      v[i].array() = b2 * v[i].array() + (1 - b2) * g.square();
      params[i].array() -= static_cast<float>(lr) * (m[i].array() / c1) /
                           ((v[i].array() / c2).sqrt() + static_cast<float>(eps));
    }
  }
};

std::vector<Eigen::VectorXf> make_grads(int step) {
  // Deterministic gradients with a spike every 7th step.
  std::vector<Eigen::VectorXf> g;
  for (int size : {1000, 64, 10}) {
    Eigen::VectorXf v(size);
    for (int k = 0; k < size; ++k) v(k) = std::sin(0.37f * static_cast<float>(k + 13 * step)) * (step % 7 == 0 ? 50.0f : 1.0f);
    g.push_back(v);
  }
  return g;
}

}  // namespace

int main() {
  std::vector<Eigen::VectorXf> init{Eigen::VectorXf::Ones(1000), Eigen::VectorXf::Zero(64), Eigen::VectorXf::Ones(10)};
  auto params_two_pass = init, params_fused = init;
  adam opt_two_pass(init), opt_fused(init);
  const double max_norm = 30.0;  // ordinary steps have norm ~22; the spikes ~1100

  int clipped_steps = 0;
  for (int step = 0; step < 50; ++step) {
    // Two passes over the gradients, then the optimizer's read.
    auto g1 = make_grads(step);
    gradclip::clip_by_global_norm(g1, max_norm);
    opt_two_pass.step(params_two_pass, g1, 1.0f);

    // One read pass; the coefficient rides along into the optimizer's read.
    const auto g2 = make_grads(step);
    const gradclip::clip_result r = gradclip::clip_coefficient(g2, max_norm);
    clipped_steps += r.clipped;
    opt_fused.step(params_fused, g2, static_cast<float>(r.scale));
  }

  double max_diff = 0;
  for (std::size_t i = 0; i < init.size(); ++i) {
    max_diff = std::max(max_diff, static_cast<double>((params_two_pass[i] - params_fused[i]).cwiseAbs().maxCoeff()));
  }
  std::printf("steps clipped: %d of 50\nlargest parameter difference, two-pass vs fused: %.3g\n", clipped_steps,
              max_diff);
  // The fused step differs only by float rounding of g*scale inside the update.
  return max_diff < 1e-5 ? 0 : 1;
}
