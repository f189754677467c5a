// gradclip: gradient clipping for C++ training code. The one header to include.
#ifndef GRADCLIP_GRADCLIP_HPP
#define GRADCLIP_GRADCLIP_HPP

#include "config.hpp"
#include "errors.hpp"
#include "buffer.hpp"
#include "norm.hpp"
#include "clip_norm.hpp"
#include "clip_value.hpp"
#include "loss_scale.hpp"

#endif  // GRADCLIP_GRADCLIP_HPP
