#!/usr/bin/python3
"""Record PyTorch GradScaler's dynamic loss scale over long sequences of steps.

What it records
---------------
For several scaler configurations (the defaults, and short growth intervals,
non-power-of-two factors, growth up to float's limit, back-off down to 0), a
sequence of training steps in which some gradients hold NaN, +inf or -inf. For
every step: which non-finite value was injected (if any), whether
GradScaler.step() skipped the optimizer step, and the scale and growth tracker
after GradScaler.update(). tests/test_loss_scale.cpp replays the sequences with
gradclip::grad_scaler and compares step by step, bit for bit.

How it drives torch 1.13
------------------------
torch.cuda.amp.GradScaler is used as it is: __init__, step() (and the
unscale_() it calls), _maybe_opt_step, update(), get_scale(),
_get_growth_tracker(). Only what torch 1.13 implements for CUDA alone is
replaced, so that the scaler runs on CPU:

  * torch._amp_update_scale_ has no CPU kernel in torch 1.13 ("Could not run
    'aten::_amp_update_scale_' with arguments from the 'CPU' backend"). It is
    reimplemented below from ATen's amp_update_scale_cuda_kernel
    (aten/src/ATen/native/cuda/AmpKernels.cu; torch 2.x's CPU kernel
    _amp_update_scale_cpu_kernel is the same code): the float32 scale times the
    double factor, rounded to float32, and growth skipped when it would
    overflow float32 to inf.
  * torch._amp_foreach_non_finite_check_and_unscale_ likewise: found_inf = 1
    if any gradient element is not finite; every element times inv_scale.
  * GradScaler disables itself without CUDA (amp_definitely_not_available) and
    _MultiDeviceReplicator asserts CUDA tensors; both checks are bypassed.
GradScaler.scale() asserts CUDA outputs, so the scaled gradients are set
directly: p.grad = g * scale, with the injected value in place of one element.

Output format (tests/reference/gradscaler_reference.txt)
--------------------------------------------------------
Line based, tokens separated by single spaces. Every number is a Python float
written with repr() (the shortest decimal that reads back exactly; strtod
parses it exactly), or an integer.

    # comment lines (only at the top)
    config <name> <init_scale> <growth_factor> <backoff_factor> <growth_interval> <steps>
    <bad> <skipped> <scale_used> <scale_after> <growth_tracker_after>     (one line per step)
    end

<bad> is 0 (finite gradients) or the injected value: nan, inf or -inf.
<skipped> is 1 when GradScaler.step() did not call optimizer.step().
<scale_used> is GradScaler.get_scale() during the step (what the loss was scaled
by and the gradients are unscaled by); <scale_after> and
<growth_tracker_after> are get_scale() and _get_growth_tracker() after update().

Regenerate (from the repository root; /usr/bin/python3 has torch 1.13):
    /usr/bin/python3 tests/reference/gen_gradscaler_reference.py > tests/reference/gradscaler_reference.txt
It is deterministic (fixed seeds) and takes about a second.
"""

import random
import sys

import numpy as np
import torch
import torch.cuda.amp.grad_scaler as grad_scaler


# ---- the CUDA-only pieces of torch 1.13, on CPU ----------------------------------

def amp_update_scale_(current_scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval):
    """ATen's amp_update_scale_cuda_kernel, on one-element CPU tensors."""
    scale = float(current_scale.item())  # the float32 value, exactly
    if found_inf.item():
        # float * double is computed in double, then stored into the float tensor.
        with np.errstate(over="ignore", under="ignore"):
            current_scale.fill_(float(np.float32(scale * backoff_factor)))
        growth_tracker.fill_(0)
    else:
        successful = int(growth_tracker.item()) + 1
        if successful == growth_interval:
            with np.errstate(over="ignore"):
                new_scale = np.float32(scale * growth_factor)
            if np.isfinite(new_scale):  # do not grow the scale past fp32 bounds to inf
                current_scale.fill_(float(new_scale))
            growth_tracker.fill_(0)
        else:
            growth_tracker.fill_(successful)
    return current_scale


def amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale):
    with torch.no_grad():
        for g in grads:
            if not torch.isfinite(g).all():
                found_inf.fill_(1.0)
            if inv_scale.item() != 1.0:
                g.mul_(inv_scale)


class CpuReplicator(grad_scaler._MultiDeviceReplicator):
    def __init__(self, master_tensor):  # no CUDA assertion
        self.master = master_tensor
        self._per_device_tensors = {}


torch._amp_update_scale_ = amp_update_scale_
torch._amp_foreach_non_finite_check_and_unscale_ = amp_foreach_non_finite_check_and_unscale_
grad_scaler._MultiDeviceReplicator = CpuReplicator
grad_scaler.amp_definitely_not_available = lambda: False


class CountingSGD(torch.optim.SGD):
    """SGD that remembers whether step() ran."""

    def step(self, *args, **kwargs):
        self.stepped = True
        return super().step(*args, **kwargs)


# ---- the recorded sequences -----------------------------------------------------

def run(name, init_scale, growth_factor, backoff_factor, growth_interval, bad_steps, out):
    """bad_steps: list (one entry per step) of None or the value to inject."""
    torch.manual_seed(0)
    param = torch.zeros(8, dtype=torch.float32, requires_grad=True)
    opt = CountingSGD([param], lr=1e-3)
    scaler = grad_scaler.GradScaler(init_scale=init_scale, growth_factor=growth_factor,
                                    backoff_factor=backoff_factor, growth_interval=growth_interval)
    assert scaler.is_enabled()
    scaler._lazy_init_scale_growth_tracker(torch.device("cpu"))
    steps = len(bad_steps)
    out.write("config %s %r %r %r %d %d\n" % (name, init_scale, growth_factor, backoff_factor, growth_interval, steps))
    rng = random.Random(name)
    for bad in bad_steps:
        scale_used = scaler.get_scale()
        # Small values: finite after scaling by any float scale.
        g = torch.tensor([rng.uniform(-1.0, 1.0) for _ in range(8)], dtype=torch.float32)
        grad = g * scaler._scale
        if bad is not None:
            grad[rng.randrange(8)] = bad
        param.grad = grad
        opt.stepped = False
        scaler.step(opt)
        scaler.update()
        out.write("%s %d %r %r %d\n" % ("0" if bad is None else repr(bad), 0 if opt.stepped else 1, scale_used,
                                        scaler.get_scale(), scaler._get_growth_tracker()))
    out.write("end\n")


def random_bad(steps, probability, seed, clean_prefix=0):
    rng = random.Random(seed)
    values = [float("nan"), float("inf"), float("-inf")]
    return [None if i < clean_prefix or rng.random() >= probability else rng.choice(values) for i in range(steps)]


def main(out):
    out.write("# gradclip GradScaler reference; torch %s; generated by tests/reference/gen_gradscaler_reference.py\n"
              % torch.__version__)
    out.write("# config <name> <init_scale> <growth_factor> <backoff_factor> <growth_interval> <steps>\n")
    out.write("# <bad: 0|nan|inf|-inf> <skipped> <scale_used> <scale_after> <growth_tracker_after>\n")

    # The defaults: early back-offs, growth after 2000 clean steps, back-offs later.
    steps = [None] * 2150
    for i, v in [(0, float("inf")), (1, float("nan")), (2, float("-inf")), (5, float("nan")),
                 (2100, float("nan")), (2101, float("inf"))]:
        steps[i] = v
    run("defaults", 2.0 ** 16, 2.0, 0.5, 2000, steps, out)

    # Growth up to float's limit: 2^127 * 2 would overflow, so the scale stays and the tracker resets.
    run("float_limit", 2.0 ** 120, 2.0, 0.5, 3, random_bad(300, 0.2, 1, clean_prefix=40), out)

    # Factors that are not powers of two: every update rounds to float.
    run("rounding", 1000.1, 1.1, 0.7, 2, random_bad(400, 0.35, 2), out)
    run("growth_every_step", 1.0, 1.0009765625, 0.25, 1, random_bad(300, 0.3, 3), out)
    run("short_interval", 3.0, 2.0, 0.5, 7, random_bad(600, 0.08, 4), out)

    # Back-off into float's subnormals and down to 0, where growth keeps it at 0.
    run("underflow", 2.0 ** -140, 2.0, 0.5, 5, [float("inf")] * 20 + [None] * 12 + [float("nan")] + [None] * 6, out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            main(f)
    else:
        main(sys.stdout)
