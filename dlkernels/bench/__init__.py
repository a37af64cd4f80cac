"""Benchmarks: `python -m dlkernels.bench` (speed tables on a GPU, correctness matrix without one).

Each op family has one module here (pool2d.py, batch_norm.py, conv2d.py, attention.py, ...) registered in
OP_MODULES. A module exposes:
    FAMILY          the name used in result files ("pool2d")
    CASES           list[Case]: the workloads timed on a GPU (one table, every dtype and layout)
    SMALL_CASES     list[Case]: the same workloads on small shapes for the CPU correctness matrix
    BYTES_COUNTED   one sentence saying how ideal_bytes counts memory traffic
    build(case, backend, direction, device, compute_dtype=None) -> callable
        a zero-argument function running one forward ("fwd") or one autograd backward ("bwd") of the
        case on `backend` ("cuda", "triton", "reference", or "torch" for the PyTorch/cuDNN reference); it
        returns the output (fwd) or the input gradient (bwd). Inputs are made once, in build.
        compute_dtype="float64" (the correctness matrix's reference): the case's own inputs, parameters
        and output gradient, made in case.dtype exactly as for any backend, then cast (a module: copied).
    ideal_bytes(case, direction) -> int
        bytes an ideal kernel reads plus writes for that call.
    EXTRA_BASELINES (optional) further reference implementations build() knows, e.g. "torch_compile";
        timed beside "torch" on a GPU, each with its speedup against "torch".
    gpu_variants() (optional) further rows of ours that exist on this GPU, e.g. "cuda_wgmma" (the CUDA backend
        with a kernel path that must be switched on); build() knows them.
    DIRECTIONS / directions_for(case) (optional) the directions timed, default ("fwd", "bwd"); e.g.
        conv2d times "fwd", "dgrad" and "wgrad".
    flops(case, direction) (optional) floating-point operations of one call: the table then reports
        TFLOP/s and % of the device's dense peak instead of GB/s.
    summary_group(case, direction) (optional) a label; the table ends with the geometric-mean speedup
        of each label's rows per backend.
    error_factor(case) (optional) the CPU correctness matrix's bar as a multiple of torch's error (default 2).
    PRECISION_FLAGS (optional) the torch precision settings build() pins, stated in the report.
    DTYPES (optional) the dtypes benchmarks/sanitize.py runs the CUDA backend in (default: all four).
STANDALONE_MODULES holds benchmarks that are not op families, such as overhead.py (host time per call of every
public op against the torch op); they expose run(args) -> bool instead.
Inputs are drawn in float16 and then cast, so a case's dtypes see nearly the same values (bfloat16 rounds
them); the correctness matrix's float64 reference is build(..., compute_dtype="float64"), the run's very
inputs and parameters cast up, so it judges the same function.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

OP_MODULES = {"pool2d": "dlkernels.bench.pool2d", "batch_norm": "dlkernels.bench.batch_norm",
              "conv2d": "dlkernels.bench.conv2d", "attention": "dlkernels.bench.attention",
              "rnn": "dlkernels.bench.rnn", "models": "dlkernels.bench.models"}
# Benchmarks that are not op families (no CASES, no correctness matrix): each module has run(args) -> bool and
# runs, on CPU as on GPU, only when named in --ops.
STANDALONE_MODULES = {"overhead": "dlkernels.bench.overhead"}
DIRECTIONS = ("fwd", "bwd")
REFERENCE = "torch"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Case:
    op: str              # public function name, e.g. "max_pool2d"
    workload: str        # where the shape comes from, e.g. "ResNet stem"
    shape: tuple         # input (N, C, H, W)
    params: tuple        # keyword arguments as sorted (name, value) pairs, hashable
    dtype: str = "float32"
    layout: str = "nchw"  # or "channels_last"

    @property
    def kwargs(self) -> dict:
        return dict(self.params)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.op}({args}) {'x'.join(map(str, self.shape))} {self.dtype} {self.layout}"

    def with_(self, **changes) -> Case:
        return dataclasses.replace(self, **changes)


def load(op_family: str):
    modules = {**OP_MODULES, **STANDALONE_MODULES}
    if op_family not in modules:
        raise SystemExit(f"unknown op family {op_family!r}; known: {', '.join(modules)}")
    return importlib.import_module(modules[op_family])


def directions_of(module, case: Case) -> tuple[str, ...]:
    """The directions a case is run in: the module's own rule, else its DIRECTIONS, else fwd and bwd."""
    if hasattr(module, "directions_for"):
        return module.directions_for(case)
    return getattr(module, "DIRECTIONS", DIRECTIONS)


def selected(cases: list[Case], match: str | None) -> list[Case]:
    """The cases whose description contains every comma-separated term of `match` (all when None)."""
    terms = [term for term in (match or "").split(",") if term]
    return [case for case in cases if all(term in case.describe() for term in terms)]
