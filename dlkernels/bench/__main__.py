"""python -m dlkernels.bench [readme] [--ops pool2d] [--quick] [--out DIR] [--no-plot]

With a GPU: times every op x backend against the PyTorch/cuDNN reference and writes
<out>/<device>/<family>.{json,md,png}. Without one: the correctness matrix on CPU (Triton through
its interpreter) and the GPU tables already committed. `readme` rewrites README.md's speed tables.
`--ops overhead` times the host overhead per call of every public op against the torch op, on CPU
and (where there is one) GPU, instead of the matrix: <out>/<device>/overhead.{json,md}.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

import torch

HAS_GPU = torch.cuda.is_available()
# Triton's jit reads this when dlkernels.triton_kernels is imported (lazily, at the first Triton call), so
# setting it here, before any benchmark runs, lets the matrix cover the Triton kernels on CPU.
INTERPRET_SET_HERE = not HAS_GPU and "TRITON_INTERPRET" not in os.environ
if INTERPRET_SET_HERE:
    os.environ["TRITON_INTERPRET"] = "1"

import dlkernels  # noqa: E402
from dlkernels.bench import (DEFAULT_RESULTS_DIR, OP_MODULES, REFERENCE, STANDALONE_MODULES, Case,  # noqa: E402
                             directions_of, selected, load, readme, results, timing)

# Correctness: our error against float64 may be at most twice PyTorch's own error in the same dtype
# (FlashAttention's rule) plus a floor of about one unit in the last place, for exact results.
ERROR_FLOOR = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 1e-6, "float64": 1e-12}
# The rule needs a sound reference: if torch's own error against float64, relative to the reference's largest
# magnitude, exceeds this bound, the row fails ("reference disagrees") instead of 2x that error passing anything.
# A reference that computes another function (other weights or inputs) is off by O(1). Honest errors in the small
# cases, at most: float16 1.1e-3 and bfloat16 6.5e-3 (~2 units of roundoff u: torch's CPU kernels accumulate
# half types in float32 and round the result), float32 5.7e-7 (~10 u). The half-type bounds are 20 u (fp16
# u = 2^-11, bf16 u = 2^-8), ~10x above those; float32's 1e-4 leaves room for float32 accumulation over long
# reductions; float64 runs the reference's own computation, so any error beyond 1e-12 is a disagreement.
REFERENCE_BOUND = {"float16": 1e-2, "bfloat16": 8e-2, "float32": 1e-4, "float64": 1e-12}
# On the GPU the check is only a guard against timing a broken kernel; tests/ holds the real checks.
GPU_DIFF_ALARM = {"float16": 1e-2, "bfloat16": 5e-2, "float32": 1e-4, "float64": 1e-10}


def progress(items: list, description: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return _text_progress(items, description)
    return tqdm(items, desc=description, unit="case")


def _text_progress(items: list, description: str):
    for done, item in enumerate(items, 1):
        print(f"\r{description}: {done}/{len(items)}", end="", flush=True)
        yield item
    print()


def max_abs_diff(actual, expected) -> float:
    return (actual.double() - expected.double()).abs().max().item()


def run_gpu(modules, args) -> bool:
    torch.backends.cudnn.enabled = True
    environment = results.environment()
    trials, warmup = (20, 3) if args.quick else (100, 10)
    print(f"{environment['device']}: driver {environment['driver']}, torch {environment['torch']} "
          f"(CUDA {environment['cuda']}, cuDNN {environment['cudnn']}), triton {environment['triton']}, "
          f"commit {environment['commit']}{' (dirty)' if environment['dirty'] else ''}")
    copy_gbs = timing.copy_bandwidth_gbs()
    print(f"device-to-device copy: {copy_gbs:.0f} GB/s")
    all_ok = True
    for module in modules:
        backends = [REFERENCE, *getattr(module, "EXTRA_BASELINES", ()), *dlkernels.available_backends("cuda"),
                    *(module.gpu_variants() if hasattr(module, "gpu_variants") else ())]
        jobs = [(case, direction, backend) for case in selected(module.CASES, args.match)
                for direction in directions_of(module, case) for backend in backends]
        records, reference_ms, reference_out = [], None, None
        for case, direction, backend in progress(jobs, module.FAMILY):
            nbytes = module.ideal_bytes(case, direction)
            record = {"op": case.op, "workload": case.workload, "shape": list(case.shape),
                      "params": [list(p) for p in case.params], "dtype": case.dtype, "layout": case.layout,
                      "direction": direction, "backend": backend, "bytes": nbytes}
            if hasattr(module, "flops"):
                record["flops"] = module.flops(case, direction)
            if hasattr(module, "summary_group"):
                record["group"] = module.summary_group(case, direction)
            if backend == REFERENCE:  # jobs put the reference first for each case and direction
                reference_out = reference_ms = None
            try:
                fn = module.build(case, backend, direction, "cuda")
                out = fn()
                reference_out = out if backend == REFERENCE else reference_out
                diff = max_abs_diff(out, reference_out) if reference_out is not None else None
                timed = timing.time_gpu(fn, trials, warmup)
            except Exception as error:  # one failing kernel must not lose the other measurements
                print(f"\nFAILED {backend} {direction} {case.describe()}: {error}")
                records.append({**record, "time_ms": None, "speedup": None, "error": str(error)})
                all_ok = False
                continue
            if backend == REFERENCE:
                reference_ms = timed["time_ms"]
            if diff is not None and diff > GPU_DIFF_ALARM[case.dtype]:
                print(f"\nMISMATCH {backend} {direction} {case.describe()}: max |ours - torch| = {diff:.3g}")
                all_ok = False
            gbs = nbytes / (timed["time_ms"] * 1e-3) / 1e9
            if "flops" in record:
                record["tflops"] = record["flops"] / (timed["time_ms"] * 1e-3) / 1e12
                peak = timing.dense_peak_tflops(environment["device"], case.dtype)
                record["pct_dense_peak"] = 100 * record["tflops"] / peak if peak else None
            records.append({**record, **timed, "gbs": gbs, "pct_copy_bandwidth": 100 * gbs / copy_gbs,
                            "reference_ms": reference_ms,
                            "speedup": reference_ms / timed["time_ms"] if reference_ms else None,
                            "max_abs_diff_vs_reference": diff})
            del fn, out
        report = {"family": module.FAMILY, **environment, "copy_bandwidth_gbs": copy_gbs, "trials": trials,
                  "timing": f"CUDA events around one call, {warmup} warm-up calls, "
                            f"{timing.L2_FLUSH_BYTES >> 20} MB written before each trial to flush L2; "
                            "bwd times torch.autograd.grad alone",
                  "bytes_counted": module.BYTES_COUNTED,
                  "precision_flags": getattr(module, "PRECISION_FLAGS", None), "selection": args.match,
                  "cases": records}
        paths = results.write(args.out, report, plot=not args.plot_off)
        print(results.render_markdown(report))
        print("wrote " + ", ".join(map(str, paths)))
    return all_ok


@dataclasses.dataclass
class Cell:
    """One backend's result in a row of the correctness matrix."""
    backend: str
    error: float | None = None     # max |ours - reference|
    relative: float | None = None  # that, divided by max |reference|
    failure: str | None = None     # the exception, when the backend raised
    ok: bool = False


@dataclasses.dataclass
class Row:
    """One case and direction of the correctness matrix: torch's own error in the case's dtype, the bar it sets,
    and each backend's error, all against torch in float64 on the same inputs and parameters."""
    direction: str
    case: Case
    torch_error: float
    torch_relative: float
    tolerance: float
    scale: float        # max |reference|, what rel divides by
    reference_ok: bool  # torch's own relative error is within REFERENCE_BOUND: the float64 reference is sound
    cells: list[Cell]

    @property
    def ok(self) -> bool:
        return self.reference_ok and all(cell.ok for cell in self.cells)

    def render(self) -> str:
        head = f"  {self.direction} {self.case.describe():74s} torch {self.torch_error:.1e} " \
               f"(rel {self.torch_relative:.1e})"
        if not self.reference_ok:
            head += f" FAIL: reference disagrees (rel > {REFERENCE_BOUND[self.case.dtype]:g}), nothing judged"
        else:
            head += f" tol {self.tolerance:.1e}"
        cells = [f"{cell.backend} FAIL ({cell.failure})" if cell.failure is not None else
                 f"{cell.backend} {cell.error:.1e} (rel {cell.relative:.1e})"
                 f"{(' pass' if cell.ok else ' FAIL') if self.reference_ok else ''}" for cell in self.cells]
        return " | ".join([head, *cells])


def errors(actual, exact, scale: float) -> tuple[float, float]:
    """max |actual - exact| and that relative to scale = max |exact| (norm-wise: elementwise ratios explode near
    zero)."""
    absolute = max_abs_diff(actual, exact)
    return absolute, absolute / scale if scale > 0 else (0.0 if absolute == 0 else math.inf)


def check_row(module, case: Case, direction: str, backends) -> Row:
    """One row of the matrix. The float64 reference is build(..., compute_dtype="float64"): torch on this very
    case's inputs and parameters (drawn in case.dtype, then cast), so it computes the same function as the run it
    judges; a reference that still disagrees with torch in case.dtype beyond REFERENCE_BOUND fails the row
    instead of widening the tolerance."""
    exact = module.build(case, REFERENCE, direction, "cpu", compute_dtype="float64")()
    scale = exact.double().abs().max().item() if exact.numel() else 0.0
    factor = module.error_factor(case) if hasattr(module, "error_factor") else 2.0
    torch_error, torch_relative = errors(module.build(case, REFERENCE, direction, "cpu")(), exact, scale)
    reference_ok = torch_relative <= REFERENCE_BOUND[case.dtype]
    tolerance = factor * torch_error + ERROR_FLOOR[case.dtype]
    cells = []
    for backend in backends:
        try:
            error, relative = errors(module.build(case, backend, direction, "cpu")(), exact, scale)
        except Exception as failure:
            cells.append(Cell(backend, failure=f"{type(failure).__name__}: {failure}"))
            continue
        cells.append(Cell(backend, error, relative, ok=reference_ok and error <= tolerance))
    return Row(direction, case, torch_error, torch_relative, tolerance, scale, reference_ok, cells)


def correctness_matrix(modules, match: str | None = None) -> bool:
    backends = dlkernels.available_backends("cpu")
    print(f"correctness on CPU, backends: {', '.join(backends)}. Reference: torch in float64 on the same inputs "
          "and parameters (the run's own, cast); pass if max |ours - reference| <= 2 x torch's own error in that "
          "dtype (a module may allow more for an algorithm that is known to lose accuracy, e.g. Winograd) + a "
          f"floor ({', '.join(f'{d} {v:g}' for d, v in ERROR_FLOOR.items())}). rel = error / max |reference|; "
          "a row whose torch rel exceeds "
          f"{', '.join(f'{d} {v:g}' for d, v in REFERENCE_BOUND.items())} fails: the reference disagrees")
    all_ok = True
    for module in modules:
        jobs = [(case, direction) for case in selected(module.SMALL_CASES, match)
                for direction in directions_of(module, case)]
        rows = [check_row(module, case, direction, backends) for case, direction in progress(jobs, module.FAMILY)]
        print("\n".join(row.render() for row in rows))
        all_ok &= all(row.ok for row in rows)
    print("all pass" if all_ok else "SOME CASES FAIL")
    return all_ok


def print_committed_tables(results_dir: Path) -> None:
    tables = sorted(Path(results_dir).glob("*/*.md"))
    if not tables:
        print(f"\nNo GPU results under {results_dir} yet.")
    for table in tables:
        print(f"\n{table}:\n{table.read_text()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlkernels.bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("command", nargs="?", choices=["run", "readme", "policy"], default="run",
                        help="run: benchmark (GPU) or correctness matrix (CPU); readme: rewrite README tables; "
                             "policy: rewrite dlkernels/auto_policy.json (what auto runs per GPU) from the results")
    parser.add_argument("--ops", default=",".join(OP_MODULES),
                        help=f"comma-separated op families ({', '.join(OP_MODULES)}), or "
                             f"{', '.join(STANDALONE_MODULES)} (host time per call, not in the default)")
    parser.add_argument("--quick", action="store_true", help="20 trials and 3 warm-up calls instead of 100 and 10")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR, help="results folder (%(default)s)")
    parser.add_argument("--no-plot", dest="plot_off", action="store_true", help="skip the PNG plots")
    parser.add_argument("--match", default=None,
                        help="only the cases whose description contains every comma-separated term, e.g. "
                             "'float16,VGG-16'; results then go to <family>-<terms>.json beside the full run's")
    args = parser.parse_args(argv)
    if args.command == "readme":
        changed = readme.update(results_dir=args.out)
        print("README.md speed tables " + ("updated" if changed else "already up to date"))
        return 0
    if args.command == "policy":
        from dlkernels.bench import policy

        chosen = policy.write(args.out)
        print(f"{policy.POLICY_FILE}: ours where measured at least as fast as torch: {chosen or 'nowhere yet'}")
        return 0
    names = [name.strip() for name in args.ops.split(",") if name.strip()]
    modules = [load(name) for name in names if name not in STANDALONE_MODULES]
    standalone_ok = all([load(name).run(args) for name in names if name in STANDALONE_MODULES])
    if not modules:
        return 0 if standalone_ok else 1
    if HAS_GPU:
        return 0 if run_gpu(modules, args) and standalone_ok else 1
    print("No CUDA GPU present: running the correctness matrix on CPU instead of timing.")
    if INTERPRET_SET_HERE:
        print("Set TRITON_INTERPRET=1 so the Triton kernels run in Triton's CPU interpreter.")
    elif os.environ.get("TRITON_INTERPRET") != "1":
        print(f"TRITON_INTERPRET={os.environ['TRITON_INTERPRET']} was given: the Triton backend is skipped.")
    ok = correctness_matrix(modules, args.match)
    print_committed_tables(args.out)
    return 0 if ok and standalone_ok else 1


if __name__ == "__main__":
    sys.exit(main())
