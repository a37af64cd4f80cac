"""Runs every op family's CUDA backend, fwd and bwd, in all dtypes, on the small benchmark shapes,
for compute-sanitizer (benchmarks/gpu_check.py runs it under memcheck and racecheck, and with
--profile sanitizers under synccheck and initcheck too):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --kernel-name kns=dlk \
        python benchmarks/sanitize.py [--budget-s S] [--list] [family ...]

Without the caching allocator every tensor is its own allocation, so an out-of-bounds access is
reported instead of landing silently in a neighbouring cached block. Exits 1 if a result differs
from PyTorch (a crash or sanitizer error is reported by compute-sanitizer itself).

The runs are ordered so that a time budget cut short still covers every kernel: first each op of
each family once (its first workload) in every dtype and direction, then the other workloads.
`--budget-s` stops starting runs after that many seconds and says how many it covered; `--list`
prints the runs without a GPU.
"""
import argparse
import sys
import time

import torch

from dlkernels.bench import OP_MODULES, REFERENCE, directions_of, load

DTYPES = ("float16", "bfloat16", "float32", "float64")
TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2, "float32": 1e-5, "float64": 1e-12}
# Whole models run the families' own kernels again, at many times the cost under a sanitizer.
KERNEL_FAMILIES = [family for family in OP_MODULES if family != "models"]


def planned_runs(families):
    """[(module, case, direction, backend)], every op's first workload before any op's second."""
    first, rest = [], []
    for family in families:
        module = load(family)
        # SMALL_CASES repeat each workload per dtype; run each workload once in every dtype.
        workloads = {case.with_(dtype="float32"): None for case in module.SMALL_CASES}
        # Variants: CUDA kernel paths that must be switched on (the Hopper attention forward).
        variants = ["cuda", *(module.gpu_variants() if hasattr(module, "gpu_variants") else ())]
        seen_ops = set()
        for case in workloads:
            runs = [(module, case.with_(dtype=dtype), direction, backend)
                    for dtype in getattr(module, "DTYPES", DTYPES)
                    for direction in directions_of(module, case.with_(dtype=dtype)) for backend in variants]
            (rest if (case.op, case.layout) in seen_ops else first).extend(runs)
            seen_ops.add((case.op, case.layout))
    return first + rest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("families", nargs="*", default=KERNEL_FAMILIES)
    parser.add_argument("--budget-s", type=float, default=None, help="start no run after this many seconds")
    parser.add_argument("--list", action="store_true", help="print the runs, run nothing")
    args = parser.parse_args(argv)
    runs = planned_runs(args.families)
    if args.list:
        for module, case, direction, backend in runs:
            print(f"{module.FAMILY} {backend} {direction} {case.describe()}")
        print(f"{len(runs)} runs in {len(args.families)} families: {', '.join(args.families)}")
        return 0
    started, failures, done = time.monotonic(), 0, 0
    for module, case, direction, backend in runs:
        if args.budget_s is not None and time.monotonic() - started > args.budget_s:
            print(f"budget of {args.budget_s:.0f} s spent: stopped after {done} of {len(runs)} runs")
            break
        # An algorithm known to lose accuracy (Winograd) gets its module's allowance.
        allowance = module.error_factor(case) / 2 if hasattr(module, "error_factor") else 1.0
        ours = module.build(case, backend, direction, "cuda")()
        expected = module.build(case, REFERENCE, direction, "cuda")()
        torch.cuda.synchronize()
        diff = (ours.double() - expected.double()).abs().max().item()
        ok = diff <= TOLERANCE[case.dtype] * allowance
        failures += not ok
        done += 1
        print(f"{'ok  ' if ok else 'FAIL'} {backend} {direction} {case.describe()} max diff {diff:.2e}", flush=True)
    print(f"{failures} failures in {done} of {len(runs)} runs")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
