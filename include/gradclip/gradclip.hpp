// gradclip: gradient clipping for C++ training code. The one header to include.
#ifndef GRADCLIP_GRADCLIP_HPP
#define GRADCLIP_GRADCLIP_HPP

#include "config.hpp"
#include "errors.hpp"
#include "buffer.hpp"
#include "norm.hpp"
#include "clip_norm.hpp"
#include "contributors.hpp"
#include "ownership.hpp"
#include "clip_value.hpp"
#include "loss_scale.hpp"
#include "adaptive/norm_stats.hpp"
#include "adaptive/clip_units.hpp"
#include "adaptive/agc.hpp"
#include "adaptive/rms.hpp"
#include "adaptive/auto_clip.hpp"
#include "adaptive/nonfinite_guard.hpp"
#include "adaptive/spike_guard.hpp"
#include "adaptive/zclip.hpp"
#include "adaptive/adagc.hpp"

#endif  // GRADCLIP_GRADCLIP_HPP
