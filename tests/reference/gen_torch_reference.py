#!/usr/bin/python3
"""Generate PyTorch reference cases for the gradclip C++ tests.

What it generates
-----------------
A line-based text file (see tests/reference/README.md for the format) holding
input gradients and the results of three PyTorch operations:

  * torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type,
                                   error_if_nonfinite=False)
    -> the returned total norm and the gradients after in-place scaling;
  * torch.nn.utils.clip_grad_value_(params, clip_value)
    -> the gradients after in-place clamping to [-clip_value, clip_value];
  * torch.clamp(t, min=lo, max=hi) for asymmetric [lo, hi].

for dtypes float32, float64 and bfloat16 (float16 is attempted too; torch
1.13 on CPU raises "clamp_scalar_cpu"/"clamp_max_scalar_cpu not implemented
for 'Half'" for all three operations, so those cases are skipped and listed in
the output's header comments).  Norm types 1, 2, 3, 0.5, 3.5 and inf; groups of
1 to 5 tensors of 0..4097 elements (1-D and 2-D); clipping and non-clipping
max_norm, max_norm = 0, max_norm equal to torch's own norm, value scales from
1e-30 to 1e30 (1e-300..1e300 for float64) and NaN / +inf / -inf elements.

Every value is written as float(x).hex() of the tensor element (exact), or
'inf', '-inf', 'nan'.  Any case for which torch raises is dropped (and listed
in the header).  Case ids are contiguous from 0 in file order.

Written against torch 1.13 (the version actually used is recorded in the
output's first line).  It is deterministic: inputs come from
numpy.random.RandomState with fixed seeds, torch.manual_seed(0) is set and
torch runs single-threaded so reduction order does not depend on the machine's
core count.

How to regenerate (from the repository root)
--------------------------------------------
    /usr/bin/python3 tests/reference/gen_torch_reference.py > tests/reference/torch_reference.txt
or
    /usr/bin/python3 tests/reference/gen_torch_reference.py tests/reference/torch_reference.txt
"""

import math
import sys

import numpy as np
import torch

INF = float("inf")
NAN = float("nan")

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
NORM_TYPES = [1.0, 2.0, 3.0, 0.5, 3.5, INF]


def hexf(x):
    """Exact text form of a Python float: float.hex(), or inf/-inf/nan."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x.hex()


# --------------------------------------------------------------------------
# case description helpers
# --------------------------------------------------------------------------

class Case:
    """op: 'clip_grad_norm' | 'clip_grad_value' | 'clamp'.
    tensors: list of float64 numpy arrays (shapes kept; converted to dtype).
    For clip_grad_norm, max_norm is either a float or a tuple
    ('rel', factor) -> factor * float64 norm of the dtype-rounded inputs,
    ('torch', mult, add) -> float(torch's total norm) * mult + add."""

    def __init__(self, op, dtype, tensors, p1=0.0, p2=0.0):
        self.op = op
        self.dtype = dtype
        self.tensors = tensors
        self.p1 = p1
        self.p2 = p2


def normal(rs, shape, scale=1.0):
    return rs.standard_normal(shape) * scale


def mixed(rs, shape, scale=1.0):
    """Normal values with some exact small integers, zeros and -0.0 mixed in."""
    a = rs.standard_normal(shape) * scale
    flat = a.reshape(-1)
    n = flat.size
    if n >= 4:
        idx = rs.choice(n, size=max(1, n // 8), replace=False)
        flat[idx] = rs.randint(-4, 5, size=idx.size) * scale
    if n >= 7:
        flat[n // 2] = -0.0
        flat[n // 3] = 0.0
    return a


def shape_list(spec):
    return [s if isinstance(s, tuple) else (s,) for s in spec]


def np_norm(arrs, p):
    flat = np.concatenate([a.reshape(-1) for a in arrs]) if arrs else np.zeros(0)
    if flat.size == 0:
        return 0.0
    a = np.abs(flat.astype(np.float64))
    m = float(a.max())
    if p == INF or m == 0.0 or not math.isfinite(m):
        return m
    a = a / m  # scaled so that 1e300-sized values do not overflow
    if p == 1.0:
        return m * float(a.sum())
    if p == 2.0:
        return m * float(np.sqrt((a * a).sum()))
    return m * float((a ** p).sum() ** (1.0 / p))


def to_dtype_values(arr, tdt):
    """float64 numpy array -> values after conversion to the torch dtype."""
    return torch.from_numpy(np.array(arr, dtype=np.float64)).to(tdt)


# --------------------------------------------------------------------------
# case lists
# --------------------------------------------------------------------------

def build_cases():
    cases = []
    rs = np.random.RandomState(20240601)
    main_dtypes = ["float32", "float64", "bfloat16", "float16"]

    # ---- clip_grad_norm: basic groups, clipping and non-clipping ---------
    groups = [
        [3],
        [7, 16],
        [1, 2, 3, 17],
        [(2, 8), (3, 7)],
        [16, 17, 7, 3, 2],
        [0, (4, 25), 1],          # contains an empty tensor (not for inf norm)
        [100],
        [(4, 4)],
    ]
    gi = 0
    for dt in main_dtypes:
        for nt in NORM_TYPES:
            for k in range(2):
                g = groups[gi % len(groups)]
                gi += 1
                if nt == INF and any(np.prod(s) == 0 for s in shape_list(g)):
                    g = [5, 9]
                shapes = shape_list(g)
                base = [mixed(rs, s) for s in shapes]
                cases.append(Case("clip_grad_norm", dt, base, nt, ("rel", 0.25)))
                base2 = [mixed(rs, s, 0.5) for s in shapes]
                cases.append(Case("clip_grad_norm", dt, base2, nt, ("rel", 4.0)))
            # max_norm = 0
            shapes = shape_list([7, 3])
            cases.append(Case("clip_grad_norm", dt, [mixed(rs, s) for s in shapes], nt, 0.0))
            # max_norm exactly torch's own total norm
            shapes = shape_list([17, 2])
            cases.append(Case("clip_grad_norm", dt, [normal(rs, s) for s in shapes], nt,
                              ("torch", 1.0, 0.0)))

    # max_norm near the norm: just below/above and norm + 1e-6
    for dt in ["float32", "float64", "bfloat16"]:
        eps = 2.0 ** -6 if dt == "bfloat16" else 2.0 ** -10
        for nt in [2.0, INF, 1.0]:
            for mult, add in [(1.0 - eps, 0.0), (1.0 + eps, 0.0), (1.0, 1e-6)]:
                shapes = shape_list([16, 7])
                cases.append(Case("clip_grad_norm", dt, [normal(rs, s) for s in shapes], nt,
                                  ("torch", mult, add)))

    # ---- value scales ------------------------------------------------------
    for dt in ["float32", "float64"]:
        scales = [1e-30, 1e-20, 1e-10, 1e10, 1e20, 1e30]
        if dt == "float64":
            scales = [1e-300] + scales + [1e300]
        for sc in scales:
            for nt in [1.0, 2.0, INF]:
                shapes = shape_list([7, 3])
                cases.append(Case("clip_grad_norm", dt, [normal(rs, s, sc) for s in shapes], nt, 1.0))
        for sc in [1e-30, 1e30]:
            cases.append(Case("clip_grad_norm", dt, [normal(rs, (5,), sc)], 2.0, ("rel", 0.5)))
            for nt in [3.5, 0.5]:
                shapes = shape_list([4, 3])
                cases.append(Case("clip_grad_norm", dt, [normal(rs, s, sc) for s in shapes], nt, 1.0))
    for sc in [1e-30, 1e-10, 1e10, 1e30]:
        for nt in [2.0, INF]:
            shapes = shape_list([7, 3])
            cases.append(Case("clip_grad_norm", "bfloat16", [normal(rs, s, sc) for s in shapes], nt, 1.0))

    # ---- large tensors -------------------------------------------------------
    large = [
        ("float32", 2.0, [4097], ("rel", 0.25)),
        ("float64", 2.0, [(17, 241)], ("rel", 0.25)),
        ("float32", 1.0, [4097], ("rel", 0.5)),
        ("float32", INF, [1000, 4097], ("rel", 0.5)),
        ("bfloat16", 2.0, [4097], ("rel", 0.25)),
        ("float64", 3.5, [1000], ("rel", 0.25)),
        ("float32", 0.5, [1000], ("rel", 4.0)),
        ("float32", 3.0, [(10, 100)], ("rel", 0.25)),
        ("float64", 1.0, [1000, 17, 0], ("rel", 0.1)),
        ("float64", INF, [1000], ("rel", 0.75)),
        ("bfloat16", 1.0, [1000], 1.0),
        ("bfloat16", 3.0, [(10, 100)], 1.0),
    ]
    for dt, nt, g, mn in large:
        cases.append(Case("clip_grad_norm", dt, [normal(rs, s) for s in shape_list(g)], nt, mn))

    # ---- empty tensors / zeros ---------------------------------------------
    for dt in ["float32", "float64", "bfloat16"]:
        cases.append(Case("clip_grad_norm", dt, [np.zeros(0)], 2.0, 1.0))
        cases.append(Case("clip_grad_norm", dt, [np.zeros(0), np.zeros((0,)), normal(rs, (3,))], 1.0, 0.5))
        cases.append(Case("clip_grad_norm", dt, [np.array([0.0, -0.0, 0.0])], 2.0, 1.0))
        cases.append(Case("clip_grad_norm", dt, [np.array([0.0, -0.0, 0.0])], INF, 0.0))
        # inf norm with an empty tensor: torch 1.13 raises (max() of empty) -> skipped
        cases.append(Case("clip_grad_norm", dt, [np.zeros(0), normal(rs, (3,))], INF, 1.0))

    # ---- non-finite ------------------------------------------------------------
    specials = {
        "nan": [NAN],
        "posinf": [INF],
        "neginf": [-INF],
        "inf_nan": [INF, NAN],
    }
    for dt in ["float32", "float64", "bfloat16"]:
        for nt in [1.0, 2.0, 0.5, 3.5, INF]:
            for kname, vals in specials.items():
                t0 = mixed(rs, (7,))
                t1 = mixed(rs, (16,))
                t2 = mixed(rs, (3,))
                t1[5] = vals[0]
                if len(vals) > 1:
                    t2[1] = vals[1]
                cases.append(Case("clip_grad_norm", dt, [t0, t1, t2], nt, 1.0))

    # ---- clip_grad_value_ --------------------------------------------------
    for dt in main_dtypes:
        for cv in [0.0, 0.1, 1.0, 2.5]:
            a = mixed(rs, (17,), 2.0)
            a[:8] = [cv, -cv, 0.0, -0.0, NAN, INF, -INF, cv * 1.5 + 0.25]
            b = normal(rs, (2, 8), 3.0)
            cases.append(Case("clip_grad_value", dt, [a, b], cv, 0.0))
        # various group shapes
        cases.append(Case("clip_grad_value", dt,
                          [normal(rs, (1,), 2.0), np.zeros(0), normal(rs, (3, 1), 2.0),
                           normal(rs, (100,), 2.0), normal(rs, (2,), 2.0)], 1.0, 0.0))
        cases.append(Case("clip_grad_value", dt, [normal(rs, (1000,), 1.0)], 0.1, 0.0))

    # ---- clamp [lo, hi] ----------------------------------------------------
    for dt in main_dtypes:
        for lo, hi in [(-0.5, 2.0), (0.0, 0.0), (1.0, 3.0), (-3.0, -1.0), (-INF, 0.25), (2.0, 1.0)]:
            a = normal(rs, (23,), 3.0)
            a[:9] = [lo, hi, 0.0, -0.0, NAN, INF, -INF, lo - 1.0 if math.isfinite(lo) else -1e30, hi + 1.0]
            cases.append(Case("clamp", dt, [a], lo, hi))
        cases.append(Case("clamp", dt, [normal(rs, (4, 4), 2.0)], -0.5, 2.0))
        cases.append(Case("clamp", dt, [np.zeros(0)], -0.5, 2.0))

    return cases


# --------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------

def flat_values(t):
    return t.detach().reshape(-1).to(torch.float64).tolist()


def make_params(arrs, tdt):
    params = []
    for a in arrs:
        g = to_dtype_values(a, tdt)
        p = torch.zeros(g.shape, dtype=tdt, requires_grad=True)
        p.grad = g.clone()
        params.append(p)
    return params


def resolve_max_norm(case, tdt):
    mn = case.p2
    if not isinstance(mn, tuple):
        return float(mn)
    rounded = [to_dtype_values(a, tdt).to(torch.float64).numpy() for a in case.tensors]
    if mn[0] == "rel":
        v = float(mn[1] * np_norm(rounded, case.p1))
    elif mn[0] == "torch":
        params = make_params(case.tensors, tdt)
        total = torch.nn.utils.clip_grad_norm_(params, INF, case.p1, error_if_nonfinite=False)
        v = float(total) * mn[1] + mn[2]
    else:
        raise ValueError(mn)
    # Derived max_norm values are rounded to the tensor dtype, so that it does
    # not matter whether an implementation converts max_norm before or after
    # using it (torch itself converts it to the dtype when multiplying).
    return float(torch.tensor(v, dtype=torch.float64).to(tdt).item())


def run_case(case):
    """Returns (param1, param2, ins, total_norm or None, outs); may raise."""
    tdt = DTYPES[case.dtype]
    if case.op == "clip_grad_norm":
        mn = resolve_max_norm(case, tdt)
        params = make_params(case.tensors, tdt)
        ins = [flat_values(p.grad) for p in params]
        total = torch.nn.utils.clip_grad_norm_(params, mn, case.p1, error_if_nonfinite=False)
        outs = [flat_values(p.grad) for p in params]
        return case.p1, mn, ins, float(total), outs
    if case.op == "clip_grad_value":
        params = make_params(case.tensors, tdt)
        ins = [flat_values(p.grad) for p in params]
        torch.nn.utils.clip_grad_value_(params, case.p1)
        outs = [flat_values(p.grad) for p in params]
        return case.p1, 0.0, ins, None, outs
    if case.op == "clamp":
        assert len(case.tensors) == 1
        t = to_dtype_values(case.tensors[0], tdt)
        ins = [flat_values(t)]
        r = torch.clamp(t, min=case.p1, max=case.p2)
        return case.p1, case.p2, ins, None, [flat_values(r)]
    raise ValueError(case.op)


def fmt_vals(tag, vals):
    return " ".join([tag, str(len(vals))] + [hexf(v) for v in vals])


def main(argv):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    lines = []
    skipped = {}
    cid = 0
    for case in build_cases():
        try:
            p1, p2, ins, total, outs = run_case(case)
        except RuntimeError as e:
            msg = str(e).splitlines()[0][:110]
            key = (case.op, case.dtype, msg)
            skipped[key] = skipped.get(key, 0) + 1
            continue
        lines.append("case %d %s %s %s %s" % (cid, case.op, case.dtype, hexf(p1), hexf(p2)))
        for v in ins:
            lines.append(fmt_vals("in", v))
        if total is not None:
            lines.append("total_norm " + hexf(total))
        for v in outs:
            lines.append(fmt_vals("out", v))
        lines.append("end")
        cid += 1

    header = ["# gradclip torch reference; torch %s; generated by "
              "tests/reference/gen_torch_reference.py" % torch.__version__,
              "# cases: %d" % cid]
    for (op, dt, msg), n in sorted(skipped.items()):
        header.append("# skipped %d %s %s cases: torch raised: %s" % (n, op, dt, msg))
    text = "\n".join(header + lines) + "\n"

    if len(argv) > 1:
        with open(argv[1], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    for (op, dt, msg), n in sorted(skipped.items()):
        sys.stderr.write("skipped %d %s %s: %s\n" % (n, op, dt, msg))
    sys.stderr.write("wrote %d cases\n" % cid)


if __name__ == "__main__":
    main(sys.argv)
