"""GPU timing shared by every benchmark: CUDA events around one call, cold L2 each trial."""
from __future__ import annotations

import statistics

import torch

# Larger than the L2 of any current GPU (H100/H200: 50 MB), so overwriting it before a trial evicts
# the previous trial's data: each call then reads its inputs from HBM, as it would inside a network.
L2_FLUSH_BYTES = 256 * 1024**2


def time_gpu(fn, trials: int = 100, warmup: int = 10) -> dict:
    """Median, 20th and 80th percentile of `fn()` in milliseconds, measured with CUDA events.

    The flush kernel is queued before each start event; while it runs, the CPU enqueues `fn`, so
    Python launch overhead is hidden unless it exceeds the flush time (about 0.1 ms)."""
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    for _ in range(warmup):  # also compiles and autotunes Triton kernels on the first call
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(trials)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(trials)]
    for start, end in zip(starts, ends):
        flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    times = [start.elapsed_time(end) for start, end in zip(starts, ends)]
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return {"time_ms": statistics.median(times), "p20_ms": deciles[1], "p80_ms": deciles[7]}


def copy_bandwidth_gbs(nbytes: int = 1024**3, trials: int = 20) -> float:
    """Device-to-device copy bandwidth (read + write = 2 x nbytes per copy), the practical peak."""
    src = torch.empty(nbytes, dtype=torch.int8, device="cuda")
    dst = torch.empty_like(src)
    timing = time_gpu(lambda: dst.copy_(src), trials=trials, warmup=3)
    return 2 * nbytes / (timing["time_ms"] * 1e-3) / 1e9


# Dense (no sparsity) tensor-core peaks in TFLOP/s from NVIDIA's datasheets; "float32" is the exact
# (non-tensor-core) fp32 rate, "tf32" the TF32 tensor-core rate. Matched by substring of the device name.
DENSE_PEAK_TFLOPS = {
    "H100 PCIe": {"float16": 756.0, "bfloat16": 756.0, "tf32": 378.0, "float32": 51.2, "float64": 51.2},
    "H100": {"float16": 989.4, "bfloat16": 989.4, "tf32": 494.7, "float32": 66.9, "float64": 66.9},
    "H200": {"float16": 989.4, "bfloat16": 989.4, "tf32": 494.7, "float32": 66.9, "float64": 66.9},
    "A100": {"float16": 312.0, "bfloat16": 312.0, "tf32": 156.0, "float32": 19.5, "float64": 19.5},
}


def dense_peak_tflops(device: str, precision: str) -> float | None:
    for name, peaks in DENSE_PEAK_TFLOPS.items():  # "H100 PCIe" is listed before "H100"
        if name in device:
            return peaks.get(precision)
    return None
