// gradclip: clipping each block (buffer) by its root-mean-square.
//
//   auto r = gradclip::clip_by_block_rms(updates, 1.0);    // one result per buffer
//
// Adafactor's update clipping (Shazeer & Stern 2018, "Adafactor: Adaptive Learning
// Rates with Sublinear Memory Cost", section 6, threshold d = 1) and Optax's
// clip_by_block_rms(threshold): every buffer u of n elements becomes
//   u / max(1, rms(u) / threshold),   rms(u) = sqrt(mean(u^2)) = ||u||_2 / sqrt(n),
// i.e. it is scaled by threshold * sqrt(n) / ||u||_2 when its rms exceeds the
// threshold. Because the limit grows with sqrt(n) it suits blocks of very different
// sizes. Adafactor applies it to the update (the preconditioned gradient, before
// the learning rate), but any block of values may be clipped.
//
// The arithmetic is clip_each_by_norm's with max_norm = threshold * sqrt(n) and
// eps = 0 (coefficient max_norm / ||u||, applied when < 1; a block within the
// limit is not written), so the policies and guarantees are those of the core. It
// multiplies by threshold * sqrt(n) / ||u|| where Optax divides by
// rms(u) / threshold: the same coefficient, up to its last bits.
#ifndef GRADCLIP_ADAPTIVE_RMS_HPP
#define GRADCLIP_ADAPTIVE_RMS_HPP

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <utility>
#include <vector>

#include "../buffer.hpp"
#include "../clip_norm.hpp"
#include "../errors.hpp"
#include "../detail/float_bits.hpp"
#include "../detail/validate.hpp"

namespace gradclip {

struct block_rms_options {
  // Per block, as clip_each_by_norm: propagate gives Optax's result (a block whose
  // rms is NaN becomes NaN, one whose rms is inf is scaled by 0); skip leaves such a
  // block as it is; error throws nonfinite_error naming the first such block before
  // any block is written.
  nonfinite on_nonfinite = nonfinite::propagate;
};

struct block_rms_result {
  double rms = 0.0;  // the block's rms before clipping (0 for an empty block)
  // total_norm: the block's L2 norm before clipping; scale: the factor applied,
  // 1 / max(1, rms / threshold); clipped: whether one was.
  clip_result clip;

  operator clip_result() const noexcept { return clip; }
};

namespace detail {

inline void check_rms_threshold(double threshold) {
  if (is_nan(threshold) || !(threshold > 0.0)) {
    throw std::invalid_argument("gradclip: the rms threshold must be > 0, got " + number_text(threshold));
  }
}

}  // namespace detail

// Clips every buffer of a group to an rms of at most threshold; returns one result
// per buffer, in group order. threshold = infinity clips nothing. Throws
// std::invalid_argument (threshold <= 0 or NaN) and, under nonfinite::error,
// nonfinite_error, before modifying anything.
template <class Group>
std::vector<block_rms_result> clip_by_block_rms(Group&& group, double threshold, const block_rms_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::clip_by_block_rms: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_rms_threshold(threshold);
  detail::check_policy(options.on_nonfinite);
  std::vector<double> limits;
  std::vector<double> roots;  // sqrt(n) per block
  detail::for_each_buffer(group, [&](std::size_t, const auto& v) {
    const double root = std::sqrt(static_cast<double>(v.size()));
    roots.push_back(root);
    // An empty block has nothing to clip; 0 also avoids inf * 0 for threshold = inf.
    limits.push_back(v.size() == 0 ? 0.0 : threshold * root);
  });
  const std::vector<clip_result> clips =
      clip_each_by_norm(group, limits, clip_options{2.0, 0.0, options.on_nonfinite});
  std::vector<block_rms_result> results(clips.size());
  for (std::size_t i = 0; i < clips.size(); ++i) {
    results[i].rms = roots[i] == 0.0 ? 0.0 : clips[i].total_norm / roots[i];
    results[i].clip = clips[i];
  }
  return results;
}

// A fixed rms threshold for a training loop:
//   gradclip::block_rms_clipper clip(1.0);   ...   clip(updates);
class block_rms_clipper {
 public:
  explicit block_rms_clipper(double threshold, const block_rms_options& options = {})
      : threshold_(threshold), options_(options) {
    detail::check_rms_threshold(threshold);
    detail::check_policy(options.on_nonfinite);
  }

  template <class Group>
  std::vector<block_rms_result> operator()(Group&& group) const {
    return clip_by_block_rms(std::forward<Group>(group), threshold_, options_);
  }

  double threshold() const noexcept { return threshold_; }
  const block_rms_options& options() const noexcept { return options_; }

 private:
  double threshold_;
  block_rms_options options_;
};

}  // namespace gradclip

#endif  // GRADCLIP_ADAPTIVE_RMS_HPP
