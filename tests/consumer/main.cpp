// Shared by every consumer project in tests/consumer: it only has to compile against the installed or
// embedded headers and give the textbook answer.
#include <gradclip/gradclip.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstdio>
#include <vector>

namespace {

bool near(double a, double b) { return std::fabs(a - b) <= 1e-4 * (1.0 + std::fabs(b)); }

}  // namespace

int main() {
#ifdef GRADCLIP_EXPECTED_VERSION
  // The build system's version (CMake package, pkg-config) must match the headers'.
  if (GRADCLIP_VERSION != GRADCLIP_EXPECTED_VERSION) {
    std::printf("version mismatch: headers %d, package %d\n", GRADCLIP_VERSION, GRADCLIP_EXPECTED_VERSION);
    return 1;
  }
#endif

  // Global L2 norm sqrt(3^2 + 4^2) = 5 exceeds max_norm = 1, so both buffers shrink by 5.
  std::vector<Eigen::VectorXf> grads{Eigen::Vector2f(3.0f, 0.0f), Eigen::Vector2f(0.0f, 4.0f)};
  const auto result = gradclip::clip_by_global_norm(grads, 1.0);

  const bool ok = result.clipped && near(result.total_norm, 5.0) && near(grads[0](0), 0.6) &&
                  near(grads[1](1), 0.8) && grads[0](1) == 0.0f && grads[1](0) == 0.0f;
  std::printf("total_norm %g, clipped %d, grads (%g, %g) (%g, %g): %s\n",
              static_cast<double>(result.total_norm), static_cast<int>(result.clipped),
              static_cast<double>(grads[0](0)), static_cast<double>(grads[0](1)),
              static_cast<double>(grads[1](0)), static_cast<double>(grads[1](1)), ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
