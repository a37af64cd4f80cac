"""python -m dlkernels.bench [readme] [--ops pool2d] [--quick] [--out DIR] [--no-plot]

With a GPU: times every op x backend against the PyTorch/cuDNN reference and writes
<out>/<device>/<family>.{json,md,png}. Without one: the correctness matrix on CPU (Triton through
its interpreter) and the GPU tables already committed. `readme` rewrites README.md's speed tables.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

HAS_GPU = torch.cuda.is_available()
# Triton's jit reads this when triton_kernels is imported (lazily, at the first Triton call), so
# setting it here, before any benchmark runs, lets the matrix cover the Triton kernels on CPU.
INTERPRET_SET_HERE = not HAS_GPU and "TRITON_INTERPRET" not in os.environ
if INTERPRET_SET_HERE:
    os.environ["TRITON_INTERPRET"] = "1"

import dlkernels  # noqa: E402
from dlkernels.bench import (DEFAULT_RESULTS_DIR, OP_MODULES, REFERENCE, directions_of, selected,  # noqa: E402
                             load, readme, results, timing)

# Correctness: our error against float64 may be at most twice PyTorch's own error in the same dtype
# (FlashAttention's rule) plus a floor of about one unit in the last place, for exact results.
ERROR_FLOOR = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 1e-6, "float64": 1e-12}
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


def correctness_matrix(modules, match: str | None = None) -> bool:
    backends = dlkernels.available_backends("cpu")
    print(f"correctness on CPU, backends: {', '.join(backends)}. Reference: torch in float64 on the same input; "
          "pass if max |ours - reference| <= 2 x torch's own error in that dtype (a module may allow more for "
          "an algorithm that is known to lose accuracy, e.g. Winograd) + a floor "
          f"({', '.join(f'{d} {v:g}' for d, v in ERROR_FLOOR.items())})")
    all_ok = True
    for module in modules:
        jobs = [(case, direction) for case in selected(module.SMALL_CASES, match)
                for direction in directions_of(module, case)]
        lines = []
        for case, direction in progress(jobs, module.FAMILY):
            exact = module.build(case.with_(dtype="float64"), REFERENCE, direction, "cpu")()
            factor = module.error_factor(case) if hasattr(module, "error_factor") else 2.0
            tolerance = factor * max_abs_diff(module.build(case, REFERENCE, direction, "cpu")(), exact) \
                + ERROR_FLOOR[case.dtype]
            cells = []
            for backend in backends:
                try:
                    error = max_abs_diff(module.build(case, backend, direction, "cpu")(), exact)
                    ok = error <= tolerance
                    cells.append(f"{backend} {error:.1e} {'pass' if ok else 'FAIL'}")
                except Exception as failure:
                    ok = False
                    cells.append(f"{backend} FAIL ({type(failure).__name__}: {failure})")
                all_ok &= ok
            lines.append(f"  {direction} {case.describe():74s} tol {tolerance:.1e} | " + " | ".join(cells))
        print("\n".join(lines))
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
    parser.add_argument("command", nargs="?", choices=["run", "readme"], default="run",
                        help="run: benchmark (GPU) or correctness matrix (CPU); readme: rewrite README tables")
    parser.add_argument("--ops", default=",".join(OP_MODULES),
                        help=f"comma-separated op families ({', '.join(OP_MODULES)})")
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
    modules = [load(name.strip()) for name in args.ops.split(",") if name.strip()]
    if HAS_GPU:
        return 0 if run_gpu(modules, args) else 1
    print("No CUDA GPU present: running the correctness matrix on CPU instead of timing.")
    if INTERPRET_SET_HERE:
        print("Set TRITON_INTERPRET=1 so the Triton kernels run in Triton's CPU interpreter.")
    elif os.environ.get("TRITON_INTERPRET") != "1":
        print(f"TRITON_INTERPRET={os.environ['TRITON_INTERPRET']} was given: the Triton backend is skipped.")
    ok = correctness_matrix(modules, args.match)
    print_committed_tables(args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
