"""Every Triton kernel specialisation the launchers use compiles for sm_90 and sm_80 (compile only).

Runs without a GPU: the op tests run Triton in its CPU interpreter, which never invokes the GPU
compiler and so misses its failures (Triton 3.6 once crashed with "operand does not dominate this
use" only when compiling for real). The compiling happens in triton_compile_worker.py, in
subprocesses, because conftest.py sets TRITON_INTERPRET=1 for this process and triton.jit reads it
at import. Skipped only when Triton itself is missing.
"""
import ast
import json
import os
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("triton", reason="triton is not installed")

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = pathlib.Path(__file__).with_name("triton_compile_worker.py")
OP_FILES = sorted(p for p in (ROOT / "triton_kernels").glob("*.py") if not p.name.startswith("_"))
ARCHS = {"sm_90", "sm_80"}
# Each op's specialisations are split over this many workers; more shards than cores keeps every
# core busy until the end even when one op has many more kernels than another.
SHARDS = 2 * (os.cpu_count() or 1)


def launched_kernels(path):
    """Names of the @triton.jit functions that `path` launches (`kernel[grid](...)`), read from
    its source, so the worker cannot pass by silently recording nothing."""
    tree = ast.parse(path.read_text())
    jitted = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
              and any("jit" in ast.unparse(decorator) for decorator in node.decorator_list)}
    return {node.func.value.id for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)
            and isinstance(node.func.value, ast.Name) and node.func.value.id in jitted}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{op: ([one dict per compilation], [worker failures])}, all ops compiled concurrently."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # A fresh cache: the test must really compile, not find an earlier run's binaries.
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton_cache"))
    jobs = [(path.stem, shard) for path in OP_FILES for shard in range(SHARDS)]

    def run(job):
        command = [sys.executable, str(WORKER), job[0], str(job[1]), str(SHARDS)]
        return job[0], subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)

    out = {path.stem: ([], []) for path in OP_FILES}
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for op, done in pool.map(run, jobs):
            lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
            out[op][0].extend(line for line in lines if "kernel" in line)
            out[op][1].extend(line["error"] for line in lines if "kernel" not in line)
            if done.returncode != 0:
                out[op][1].append(f"worker exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return out


def test_there_are_op_files():
    assert OP_FILES, "triton_kernels/ holds no op files"


@pytest.mark.parametrize("path", OP_FILES, ids=lambda p: p.name)
def test_kernels_compile_for_gpu(path, results):
    compiled, worker_errors = results[path.stem]
    if worker_errors:
        pytest.fail("\n".join(worker_errors), pytrace=False)
    failures = [f"{r['kernel']} for {r['arch']}: {r['spec']}\n{r['error']}" for r in compiled if "error" in r]
    if failures:
        pytest.fail(f"{len(failures)} of {len(compiled)} compilations failed:\n\n" + "\n\n".join(failures),
                    pytrace=False)

    expected = launched_kernels(path)
    assert expected, f"found no kernel launch (kernel[grid](...)) in {path.name}"
    for arch in ARCHS:
        done = {r["kernel"] for r in compiled if r["arch"] == arch}
        assert expected <= done, (
            f"{path.name} launches {len(expected)} kernels {sorted(expected)}, but only {sorted(done)} were "
            f"compiled for {arch}: extend the launcher calls in {WORKER.name}")
