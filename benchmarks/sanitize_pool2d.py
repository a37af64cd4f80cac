"""Runs every pooling op on the CUDA backend, fwd and bwd, in both layouts and all dtypes, on small
odd shapes, for compute-sanitizer (see gpu_routine.sh):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python benchmarks/sanitize_pool2d.py

Without the caching allocator every tensor is its own allocation, so an out-of-bounds access is
reported instead of landing silently in a neighbouring cached block. Exits 1 if a result differs
from PyTorch (a crash or sanitizer error is reported by compute-sanitizer itself).
"""
import sys

import torch

from dlkernels.bench import DIRECTIONS, REFERENCE, pool2d

DTYPES = ("float16", "bfloat16", "float32", "float64")
TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2, "float32": 1e-5, "float64": 1e-12}


def main() -> int:
    failures = 0
    for case in pool2d.SMALL_CASES:
        if case.dtype != pool2d.DTYPES[0]:  # SMALL_CASES repeat each shape per dtype; widen to all dtypes
            continue
        for dtype in DTYPES:
            for direction in DIRECTIONS:
                case_in_dtype = case.with_(dtype=dtype)
                ours = pool2d.build(case_in_dtype, "cuda", direction, "cuda")()
                expected = pool2d.build(case_in_dtype, REFERENCE, direction, "cuda")()
                torch.cuda.synchronize()
                diff = (ours.double() - expected.double()).abs().max().item()
                ok = diff <= TOLERANCE[dtype]
                failures += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {direction} {case_in_dtype.describe()} max diff {diff:.2e}")
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
