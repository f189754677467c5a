// param_group: the gradclip API on a parameter group whose buffers are views into one gradient arena.
//
// Training code often keeps every gradient in one contiguous allocation (an "arena") and gives
// each layer a view of its slice. gradclip works on such views in place: a group is just a list
// of buffers, here a std::vector<Eigen::Map<Eigen::VectorXf>>, and clipping writes through the
// maps into the arena. Nothing is copied.

#include <gradclip/gradclip.hpp>

#include <Eigen/Dense>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <vector>

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();  // norm_type for max |x|

void print_norms(const char* when, const std::vector<Eigen::Map<Eigen::VectorXf>>& g) {
  std::printf("%-24s L1 %8.4f   L2 %8.4f   Linf %7.4f\n", when, gradclip::global_norm(g, 1.0),
              gradclip::global_norm(g), gradclip::global_norm(g, inf));
}

void print_result(const char* what, const gradclip::clip_result& r) {
  std::printf("%-24s total_norm %.4f  scale %.4f  clipped %s\n", what, r.total_norm, r.scale,
              r.clipped ? "yes" : "no");
}

}  // namespace

int main() {
  // A two-layer model's gradients: dW1 (4x3), db1 (4), dW2 (2x4), db2 (2), 26 floats in one arena.
  const std::vector<Eigen::Index> sizes = {12, 4, 8, 2};
  std::vector<float> arena;
  for (int i = 0; i < 26; ++i) arena.push_back(0.5f * static_cast<float>(i % 7 - 3));  // -1.5 .. 1.5

  // The group: one Map per parameter over its slice of the arena.
  std::vector<Eigen::Map<Eigen::VectorXf>> grads;
  float* next = arena.data();
  for (const Eigen::Index n : sizes) {
    grads.emplace_back(next, n);
    next += n;
  }

  // Norms of the whole group taken as one vector, for p = 1, 2 and infinity; the norm of one
  // buffer; and the arena itself read as a single buffer, which gives the same global L2 norm.
  print_norms("before clipping:", grads);
  std::printf("%-24s L2 of dW1 alone %.4f, of the whole arena %.4f\n", "", gradclip::norm(grads[0]),
              gradclip::norm(arena));

  // Clip the global L2 norm to 1 (PyTorch's clip_grad_norm_): every buffer is scaled by the same
  // factor, so the direction of the update is kept. The result reports the norm before clipping.
  print_result("clip_by_global_norm(1):", gradclip::clip_by_global_norm(grads, 1.0));
  print_norms("after:", grads);
  std::printf("%-24s arena[0] is now %.4f (was -1.5): the maps wrote into the arena\n", "", arena[0]);

  // Below the threshold nothing is written: scale 1, clipped no.
  print_result("clip_by_global_norm(10):", gradclip::clip_by_global_norm(grads, 10.0));

  // Other norms through clip_options, here the max norm.
  gradclip::clip_options max_abs;
  max_abs.norm_type = inf;
  print_result("same, Linf <= 0.2:", gradclip::clip_by_global_norm(grads, 0.2, max_abs));
  print_norms("after:", grads);

  // Clipping by value clamps each element on its own, which changes the direction.
  gradclip::clip_by_value(grads, 0.1);             // into [-0.1, 0.1]
  print_norms("clip_by_value(0.1):", grads);
  gradclip::clip_by_value(grads, -0.05, 0.08);     // asymmetric bounds [lo, hi]
  print_norms("clip_by_value(-.05,.08):", grads);

  // One buffer on its own: only dW2 is rescaled.
  print_result("clip_by_norm(dW2, 0.05):", gradclip::clip_by_norm(grads[2], 0.05));

  // The functor forms hold a configuration for a training loop; they check it once, up front.
  const gradclip::norm_clipper clip_norm(0.1);
  const gradclip::value_clipper clip_value(0.02);
  print_result("norm_clipper(0.1):", clip_norm(grads));
  clip_value(grads);
  print_norms("value_clipper(0.02):", grads);

  // A NaN gradient: with nonfinite::skip nothing is modified and the NaN norm comes back, so the
  // caller can skip the optimizer step (the default, propagate, would spread NaN like PyTorch).
  arena[5] = std::nanf("");
  gradclip::clip_options skip;
  skip.on_nonfinite = gradclip::nonfinite::skip;
  print_result("NaN, nonfinite::skip:", gradclip::clip_by_global_norm(grads, 1.0, skip));
  return 0;
}
