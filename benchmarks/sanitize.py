"""Runs every op family's CUDA backend, fwd and bwd, in all dtypes, on the small benchmark shapes,
for compute-sanitizer (see gpu_routine.sh):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python benchmarks/sanitize.py [family ...]

Without the caching allocator every tensor is its own allocation, so an out-of-bounds access is
reported instead of landing silently in a neighbouring cached block. Exits 1 if a result differs
from PyTorch (a crash or sanitizer error is reported by compute-sanitizer itself).
"""
import sys

import torch

from dlkernels.bench import OP_MODULES, REFERENCE, directions_of, load

DTYPES = ("float16", "bfloat16", "float32", "float64")
TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2, "float32": 1e-5, "float64": 1e-12}


def main(families) -> int:
    failures = 0
    for family in families:
        module = load(family)
        # SMALL_CASES repeat each workload per dtype; run each workload once in every dtype.
        workloads = {case.with_(dtype="float32"): None for case in module.SMALL_CASES}
        for case in workloads:
            for dtype in getattr(module, "DTYPES", DTYPES):
                case_in_dtype = case.with_(dtype=dtype)
                # An algorithm known to lose accuracy (Winograd) gets its module's allowance.
                allowance = module.error_factor(case_in_dtype) / 2 if hasattr(module, "error_factor") else 1.0
                # Variants: CUDA kernel paths that must be switched on (the Hopper attention forward).
                variants = ["cuda", *(module.gpu_variants() if hasattr(module, "gpu_variants") else ())]
                for direction in directions_of(module, case_in_dtype):
                    for backend in variants:
                        ours = module.build(case_in_dtype, backend, direction, "cuda")()
                        expected = module.build(case_in_dtype, REFERENCE, direction, "cuda")()
                        torch.cuda.synchronize()
                        diff = (ours.double() - expected.double()).abs().max().item()
                        ok = diff <= TOLERANCE[dtype] * allowance
                        failures += not ok
                        print(f"{'ok  ' if ok else 'FAIL'} {backend} {direction} {case_in_dtype.describe()} "
                              f"max diff {diff:.2e}")
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(OP_MODULES)))
