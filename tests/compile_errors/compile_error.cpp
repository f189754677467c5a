// Misuse that must not compile, one case per GRADCLIP_CASE_* value, each expected to
// stop at the library's own static_assert with its message (CMakeLists.txt holds the
// case -> message table). GRADCLIP_CASE_none is the control: it compiles.
#include <functional>
#include <vector>

#include <Eigen/Core>
#include <gradclip/gradclip.hpp>

int main() {
  std::vector<float> g(4, 1.0f);
  std::vector<std::vector<float>> group(2, g);
  const std::vector<float> read_only(4, 1.0f);
  std::vector<int> ints(4, 1);
  std::vector<long double> wide(4, 1.0L);
  Eigen::MatrixXf m = Eigen::MatrixXf::Ones(2, 2);
  const Eigen::MatrixXf read_only_matrix = m;
  Eigen::VectorXf a = Eigen::VectorXf::Ones(4), b = a;
  (void)g, (void)group, (void)read_only, (void)ints, (void)wide, (void)m, (void)read_only_matrix, (void)a, (void)b;
#if defined(GRADCLIP_CASE_none)
  gradclip::clip_by_global_norm(group, 1.0);
  gradclip::clip_units_by_norm(m, 1.0);
#elif defined(GRADCLIP_CASE_read_only)
  gradclip::clip_by_norm(read_only, 1.0);
#elif defined(GRADCLIP_CASE_read_only_value)
  gradclip::clip_by_value(read_only, 1.0);
#elif defined(GRADCLIP_CASE_read_only_matrix_units)
  gradclip::clip_units_by_norm(read_only_matrix, 1.0);
#elif defined(GRADCLIP_CASE_no_direct_access)
  gradclip::norm(a + b);
#elif defined(GRADCLIP_CASE_element_type)
  gradclip::global_norm(gradclip::buffer_view<long double>{wide.data(), wide.size()});
#elif defined(GRADCLIP_CASE_group_to_clip_by_norm)
  gradclip::clip_by_norm(group, 1.0);
#elif defined(GRADCLIP_CASE_group_to_norm)
  gradclip::norm(group);
#elif defined(GRADCLIP_CASE_global_norm)
  gradclip::global_norm(ints);
#elif defined(GRADCLIP_CASE_partial_norm)
  gradclip::partial_norm(ints);
#elif defined(GRADCLIP_CASE_clip_by_global_norm)
  gradclip::clip_by_global_norm(ints, 1.0);
#elif defined(GRADCLIP_CASE_clip_with_norm)
  gradclip::clip_with_norm(ints, 1.0, 2.0);
#elif defined(GRADCLIP_CASE_clip_coefficient)
  gradclip::clip_coefficient(ints, 1.0);
#elif defined(GRADCLIP_CASE_clip_each_by_norm)
  gradclip::clip_each_by_norm(ints, 1.0);
#elif defined(GRADCLIP_CASE_clip_by_value)
  gradclip::clip_by_value(ints, 1.0);
#elif defined(GRADCLIP_CASE_clip_by_block_rms)
  gradclip::clip_by_block_rms(ints, 1.0);
#elif defined(GRADCLIP_CASE_unscale_and_clip)
  gradclip::unscale_and_clip(ints, 1.0, 1.0);
#elif defined(GRADCLIP_CASE_units_not_matrix)
  gradclip::clip_units_by_norm(g, 1.0);
#elif defined(GRADCLIP_CASE_sum_not_buffer)
  int sum = 0;
  gradclip::clip_units_and_accumulate(m, 1.0, sum);
#elif defined(GRADCLIP_CASE_agc_params)
  gradclip::adaptive_grad_clip(ints, g, 0.01);
#elif defined(GRADCLIP_CASE_agc_grads)
  gradclip::adaptive_grad_clip(g, ints, 0.01);
#elif defined(GRADCLIP_CASE_auto_clip)
  gradclip::auto_clip clip;
  clip(ints);
#elif defined(GRADCLIP_CASE_zclip)
  gradclip::zclip clip;
  clip(ints);
#elif defined(GRADCLIP_CASE_zclip_with_norm)
  gradclip::zclip clip;
  clip.with_norm(ints, 1.0);
#elif defined(GRADCLIP_CASE_adagc)
  gradclip::adagc clip;
  clip(ints);
#elif defined(GRADCLIP_CASE_guard_void_clipper)
  gradclip::nonfinite_guard guard{3};
  guard(g, [](std::vector<float>&) {});
#endif
  return 0;
}
