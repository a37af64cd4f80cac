"""The GPU check: one command, on a fresh GPU machine, using only what a CPU machine built.

    python benchmarks/gpu_artifact.py                        # on a CPU machine: libraries + Triton cache
    python3 benchmarks/gpu_check.py                          # on the GPU machine, carrying build/gpu_artifact
    python benchmarks/gpu_check.py --dry-run [--require-artifact] [--json]   # anywhere: the plan, nothing run
    python3 benchmarks/gpu_check.py --profile sanitizers    # the four compute-sanitizer tools, nothing else

Stages, each with a hard time budget (at the budget a step gets SIGINT, so pytest still writes its junit xml,
then SIGKILL after a grace period): setup (install the carried artifact), tests (`pytest -m cuda tests/`:
every op x backend x dtype against cuDNN, forward and backward), memcheck and racecheck (compute-sanitizer over
benchmarks/sanitize.py, instrumenting only our kernels), bench (the headline rows of `python -m dlkernels.bench
--quick`), pack. Every stage runs even when an earlier one failed; the exit status is 0 only if all passed.
The default profile has no time left for synccheck and initcheck; `--profile sanitizers` (a second device
session, or the rest of one) runs setup and then memcheck, racecheck, synccheck and initcheck with longer
budgets, and no tests or benchmarks.
Nothing compiles CUDA here: the native libraries come from the artifact (an `nvcc` on PATH is a tripwire), and
Triton finds the kernels the artifact carries in its cache (the summary counts those it still had to compile,
and triton_cache.tar.gz returns them: `gpu_artifact.py --gpu-triton-cache` folds them into the next artifact).
At most 8 files land in $OUT (OUT_FILES).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARTIFACT = ROOT / "build" / "gpu_artifact"
WORK_DIR = ROOT / "build" / "gpu_check"
MANIFEST = "manifest.json"
NATIVE_TARBALL = "native.tar.gz"
TRITON_TARBALL = "triton_cache.tar.gz"
LIBRARIES = ("libdlk_cpu.so", "libdlk_cuda.so")
LIB_DIR = ROOT / "dlkernels" / "lib"

TOTAL_BUDGET_S = 480          # the limit for the whole check, cold start of the processes included
BUDGET_MARGIN_S = 30          # left unassigned: interpreter starts, the summary, the device tool's own work
GRACE_S = 10                  # between SIGINT and SIGKILL; taken out of each step's budget, not added to it
CARRY_LIMIT_BYTES = 64 << 20  # the device tool carries at most this much: working tree + artifact
MAX_OUT_FILES = 8             # the device tool returns at most this many files from $OUT
MAX_FILE_BYTES = 15 << 20     # and none over 16 MiB

# Every file the check writes to $OUT; nothing else lands there.
OUT_FILES = ("summary.json", "setup.log", "tests.log", "tests.xml", "sanitizer.log", "bench.log",
             "results.tar.gz", TRITON_TARBALL)

# The headline benchmark rows: one small subset per family (`--match` terms a case must all contain), sized so
# that each fits its budget with 20 timed trials (--quick). The full matrices are hours; see README.
HEADLINE_BENCH = (
    ("pool2d", "float16", 12),
    ("batch_norm", "32x64x112x112,float16 channels_last", 15),
    ("conv2d", "32x64x56x56 float16 channels_last", 15),
    ("attention", "head_dim=128,bfloat16", 20),
    ("rnn", "float16", 13),
)
OVERHEAD_BENCH_BUDGET_S = 15  # `--ops overhead`, once dlkernels/bench/overhead.py exists

# What each profile runs: the sanitizer tools of the default check, and the sanitizer profile's (seconds each).
PROFILES = ("default", "sanitizers")
DEFAULT_SANITIZERS = (("memcheck", 55), ("racecheck", 70))
ALL_SANITIZERS = (("memcheck", 95), ("racecheck", 100), ("synccheck", 90), ("initcheck", 95))
SANITIZER_TOOLS = tuple(tool for tool, _ in ALL_SANITIZERS)

# compute-sanitizer instruments only kernels whose mangled name contains this: all of ours live in namespace
# dlk (tests/test_gpu_check.py checks it), while cuDNN's reference kernels run uninstrumented, at full speed.
SANITIZER_KERNEL_FILTER = "kns=dlk"


@dataclasses.dataclass
class Step:
    name: str
    log: str                                    # a file of OUT_FILES
    budget_s: int
    command: list[str] | None = None            # a process, or
    action: Callable[[], bool] | None = None    # a Python function returning success
    about: str = ""                             # what an action does, for the dry run
    env: dict = dataclasses.field(default_factory=dict)  # set for this step only
    verdict: str = ""                           # a line or two from the log worth the summary
    status: str = "not run"
    seconds: float = 0.0


@dataclasses.dataclass
class Stage:
    name: str
    steps: list[Step]

    @property
    def budget_s(self) -> int:
        return sum(step.budget_s for step in self.steps)


# ---------------------------------------------------------------------------------------------------------------
# The artifact (written by gpu_artifact.py, read here)

def source_digest(root: Path = ROOT) -> str:
    """A digest of every source the native libraries are built from (csrc/ without the torch bindings), so a
    library built from other sources is caught before its tests report on code that is not the tree's."""
    digest = hashlib.sha256()
    csrc = root / "csrc"
    for path in sorted(csrc.rglob("*")):
        relative = path.relative_to(csrc)
        if not path.is_file() or relative.parts[0] == "bindings" or "__pycache__" in relative.parts:
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def working_tree_bytes(root: Path = ROOT) -> int | None:
    """Bytes of what the device tool sends besides carried paths (tracked and untracked-not-ignored files)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                                capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sum((root / name).stat().st_size for name in listed.decode().split("\0")
               if name and (root / name).is_file())


def artifact_status(artifact: Path, root: Path = ROOT) -> dict:
    """{"ok": bool, "problems": [sentences], "manifest": {...} or None}; a problem names its remedy."""
    build_hint = "build it on a CPU machine with `python benchmarks/gpu_artifact.py`"
    manifest_path = artifact / MANIFEST
    if not manifest_path.is_file():
        return {"ok": False, "manifest": None, "problems": [f"MISSING: no {manifest_path}; {build_hint}"]}
    manifest = json.loads(manifest_path.read_text())
    problems = [f"the artifact's build failed: {reason}" for reason in manifest.get("problems", [])]
    for name, entry in manifest.get("files", {}).items():
        path = artifact / name
        if not path.is_file():
            problems.append(f"MISSING: {path} (listed in the manifest); {build_hint}")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{path} is {path.stat().st_size} bytes, the manifest says {entry['bytes']}: "
                            f"a partial copy; {build_hint}")
    if not set(LIBRARIES) <= set(manifest.get("libraries", {})):
        missing = sorted(set(LIBRARIES) - set(manifest.get("libraries", {})))
        problems.append(f"MISSING: the artifact holds no {', '.join(missing)} (csrc/build.py --cuda on made none)")
    if (root / "csrc").is_dir() and manifest.get("source_digest") != source_digest(root):
        problems.append(f"STALE: csrc/ changed since the libraries were built (digest {manifest.get('source_digest')}"
                        f", now {source_digest(root)}); {build_hint}")
    total = sum(entry["bytes"] for entry in manifest.get("files", {}).values())
    tree = working_tree_bytes(root)
    if tree is not None and tree + total > CARRY_LIMIT_BYTES:
        problems.append(f"TOO LARGE: working tree {tree >> 20} MiB + artifact {total >> 20} MiB exceed the "
                        f"{CARRY_LIMIT_BYTES >> 20} MiB the device tool carries")
    return {"ok": not problems, "manifest": manifest, "problems": problems, "artifact_bytes": total,
            "working_tree_bytes": tree}


# ---------------------------------------------------------------------------------------------------------------
# Triton's cache, carried between machines. Triton stores one folder per compiled kernel, <cache>/<key>/, and a
# __grp__*.json that lists the folder's files by ABSOLUTE path: a copied cache is found only after those paths
# are rewritten for its new place. Only the cubin and the json files are needed to launch (the IR is not read).

KEPT_SUFFIXES = (".cubin", ".json")


def pack_triton_cache(cache_dir: Path, tarball: Path, keys=None, origin: dict | None = None) -> int:
    """Writes the entries `keys` (default: all) of `cache_dir` to `tarball`, group paths made relative;
    returns the number of entries."""
    keys = sorted(keys if keys is not None else (p.name for p in cache_dir.iterdir() if p.is_dir()))
    with tarfile.open(tarball, "w:gz") as tar:
        for key in keys:
            for path in sorted((cache_dir / key).iterdir()):
                if path.suffix not in KEPT_SUFFIXES:
                    continue
                data = path.read_bytes()
                if path.name.startswith("__grp__"):
                    children = json.loads(data)["child_paths"]
                    kept = {name: name for name in children if Path(name).suffix in KEPT_SUFFIXES}
                    data = json.dumps({"child_paths": kept}).encode()
                _add_bytes(tar, f"{key}/{path.name}", data)
        _add_bytes(tar, "origin.json", json.dumps(origin or {}).encode())
    return len(keys)


def install_triton_cache(tarball: Path, cache_dir: Path) -> tuple[set[str], dict]:
    """Unpacks a pack_triton_cache tarball into `cache_dir` with group paths pointing there; returns the
    entries' keys and the tarball's origin (which Triton made it)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    origin, keys = {}, set()
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or ".." in parts or Path(member.name).is_absolute():
                continue
            data = tar.extractfile(member).read()
            if member.name == "origin.json":
                origin = json.loads(data)
                continue
            key, name = parts[0], parts[-1]
            keys.add(key)
            if name.startswith("__grp__"):
                children = json.loads(data)["child_paths"]
                data = json.dumps({"child_paths": {child: str(cache_dir / key / child) for child in children}}).encode()
            (cache_dir / key).mkdir(exist_ok=True)
            (cache_dir / key / name).write_bytes(data)
    return keys, origin


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # identical contents give an identical tarball
    tar.addfile(info, io.BytesIO(data))


TRITON_IDENTITY_SNIPPET = (
    "import hashlib, json, sys, triton\n"
    "from triton.runtime.cache import triton_key\n"
    "print(json.dumps({'triton': triton.__version__, 'python': sys.version.split()[0],\n"
    "                  'key': hashlib.sha256(triton_key().encode()).hexdigest()[:16]}))\n")


def triton_identity(python: str = sys.executable) -> dict:
    """Which Triton `python` runs: version and a digest of Triton's cache key, which covers its compiler's
    binary (built per Python version), so a cache made by another Triton build is never hit."""
    done = subprocess.run([python, "-c", TRITON_IDENTITY_SNIPPET], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-500:]}
    return json.loads(done.stdout)


# ---------------------------------------------------------------------------------------------------------------
# The plan

class Check:
    def __init__(self, out: Path, artifact: Path, python: str = sys.executable, test_workers: int | None = None,
                 profile: str = "default"):
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
        self.out, self.artifact, self.python, self.profile = out, artifact, python, profile
        self.cache_dir = WORK_DIR / "triton_cache"
        self.results_dir = WORK_DIR / "results"
        self.tripwire_log = WORK_DIR / "nvcc_calls.log"
        self.carried_keys: set[str] = set()
        self.facts: dict = {}
        self.has_xdist = importlib.util.find_spec("xdist") is not None
        self.has_timeout = importlib.util.find_spec("pytest_timeout") is not None
        self.test_workers = test_workers if test_workers is not None else (4 if self.has_xdist else 0)
        self.stages = self._plan()

    def _plan(self) -> list[Stage]:
        py = self.python
        tests = [py, "-m", "pytest", "-m", "cuda", "tests/", "-q", "-rfEs", "-p", "no:cacheprovider",
                 f"--junitxml={self.out / 'tests.xml'}"]
        if self.test_workers:  # parallel processes also compile the Triton kernels the cache lacks in parallel
            tests += ["-n", str(self.test_workers)]
        if self.has_timeout:
            tests += ["--timeout", "120"]
        sanitizer = shutil.which("compute-sanitizer") or str(
            Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "compute-sanitizer")

        def sanitize(tool: str, budget: int) -> Step:
            return Step(tool, "sanitizer.log", budget, [
                sanitizer, "--tool", tool, "--error-exitcode", "1", "--kernel-name", SANITIZER_KERNEL_FILTER,
                py, "benchmarks/sanitize.py", "--budget-s", str(budget - GRACE_S - 15)],
                # Without the caching allocator every tensor is its own allocation, so an overrun is reported
                # instead of landing in a neighbouring cached block.
                env={"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"})

        bench = [Step(f"bench {family} ({match})", "bench.log", budget,
                      [py, "-m", "dlkernels.bench", "--ops", family, "--quick", "--match", match,
                       "--out", str(self.results_dir)]) for family, match, budget in HEADLINE_BENCH]
        if (ROOT / "dlkernels" / "bench" / "overhead.py").exists():
            bench.append(Step("bench overhead", "bench.log", OVERHEAD_BENCH_BUDGET_S,
                              [py, "-m", "dlkernels.bench", "--ops", "overhead", "--quick",
                               "--out", str(self.results_dir)]))
        setup = Stage("setup", [
            Step("device", "setup.log", 12, ["nvidia-smi"]),
            Step("install artifact", "setup.log", 10, action=self.install_artifact,
                 about=f"check {self.artifact / MANIFEST}, unpack the libraries into {LIB_DIR}/ "
                       f"and the Triton cache into {self.cache_dir}/"),
            Step("python and libraries", "setup.log", 15, [py, "benchmarks/gpu_check.py", "--load-check"]),
        ])
        if self.profile == "sanitizers":
            return [setup, *(Stage(tool, [sanitize(tool, budget)]) for tool, budget in ALL_SANITIZERS)]
        return [
            setup,
            Stage("tests", [Step("GPU tests", "tests.log", 180, tests)]),
            *(Stage(tool, [sanitize(tool, budget)]) for tool, budget in DEFAULT_SANITIZERS),
            Stage("bench", bench),
            Stage("pack", [Step("results and Triton cache", "bench.log", 10, action=self.pack,
                                about=f"results.tar.gz (benchmarks/results/ of this run) and {TRITON_TARBALL} "
                                      "(the Triton kernels compiled here, for the next artifact)")]),
        ]

    @property
    def steps(self) -> list[Step]:
        return [step for stage in self.stages for step in stage.steps]

    def environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env.update(PYTHONUNBUFFERED="1", TRITON_CACHE_DIR=str(self.cache_dir),
                   PATH=f"{WORK_DIR / 'tripwire'}{os.pathsep}{env.get('PATH', '')}",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
        manifest = self.facts.get("manifest") or {}
        if not (ROOT / ".git").exists() and manifest.get("commit"):  # the bench's results name the commit
            env.setdefault("DLK_BENCH_COMMIT", manifest["commit"])
            env.setdefault("DLK_BENCH_DIRTY", "1" if manifest.get("dirty") else "0")
        return env

    # -- actions ---------------------------------------------------------------------------------------------

    def install_artifact(self) -> bool:
        status = artifact_status(self.artifact)
        self.facts["manifest"] = status["manifest"]
        for problem in status["problems"]:
            print(f"artifact: {problem}")
        tripwire = WORK_DIR / "tripwire" / "nvcc"
        tripwire.parent.mkdir(parents=True, exist_ok=True)
        tripwire.write_text(f'#!/bin/sh\necho "gpu_check: nvcc $*: nothing may compile CUDA here" >&2\n'
                            f'echo "$*" >> {shlex.quote(str(self.tripwire_log))}\nexit 1\n')
        tripwire.chmod(0o755)
        if status["manifest"] is None:
            return False
        if (self.artifact / NATIVE_TARBALL).is_file():
            LIB_DIR.mkdir(parents=True, exist_ok=True)
            with tarfile.open(self.artifact / NATIVE_TARBALL) as tar:
                for member in tar.getmembers():
                    if member.isfile() and member.name in LIBRARIES:
                        (LIB_DIR / member.name).write_bytes(tar.extractfile(member).read())
                        print(f"installed {LIB_DIR / member.name} ({member.size} bytes)")
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        if (self.artifact / TRITON_TARBALL).is_file():
            self.carried_keys, _ = install_triton_cache(self.artifact / TRITON_TARBALL, self.cache_dir)
        else:
            self.cache_dir.mkdir(parents=True)
        here = triton_identity(self.python)
        made_by = status["manifest"].get("triton_origins", [])
        usable = [origin for origin in made_by if origin.get("key") == here.get("key")]
        self.facts["triton"] = {"here": here, "carried_entries": len(self.carried_keys),
                                "usable_origins": usable, "all_origins": made_by}
        print(f"Triton here: {here}; carried cache: {len(self.carried_keys)} kernels from {made_by}; "
              f"{'some usable' if usable else 'NONE made by this Triton build, so none can be hit'}")
        return status["ok"]

    def pack(self) -> bool:
        self.results_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(self.out / "results.tar.gz", "w:gz") as tar:
            tar.add(self.results_dir, arcname="benchmarks/results")
        new_keys = sorted({p.name for p in self.cache_dir.iterdir() if p.is_dir()} - self.carried_keys
                          if self.cache_dir.is_dir() else set())
        origin = (self.facts.get("triton") or {}).get("here")
        returned = len(new_keys)
        # The device tool returns no file over MAX_FILE_BYTES: return a share of the kernels rather than none.
        while pack_triton_cache(self.cache_dir, self.out / TRITON_TARBALL, new_keys[:returned], origin) and \
                (self.out / TRITON_TARBALL).stat().st_size > MAX_FILE_BYTES:
            returned = returned * MAX_FILE_BYTES // (self.out / TRITON_TARBALL).stat().st_size * 9 // 10
        self.facts.setdefault("triton", {}).update(compiled_here=len(new_keys), returned=returned)
        print(f"Triton kernels compiled on this machine: {len(new_keys)}, {returned} returned in {TRITON_TARBALL}")
        return True

    # -- running ---------------------------------------------------------------------------------------------

    def run_step(self, step: Step) -> None:
        log_path = self.out / step.log
        started = time.monotonic()
        log_start = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "a") as log:
            log.write(f"\n== {step.name} (budget {step.budget_s} s): "
                      f"{shlex.join(step.command) if step.command else step.about}\n")
            log.flush()
            try:
                if step.action is not None:
                    with _redirect(log):
                        step.status = "ok" if step.action() else "failed"
                else:
                    step.status = _run_with_budget(step.command, log, step.budget_s, self.environment() | step.env)
            except Exception as error:  # a broken step is reported and the next one runs
                step.status = f"error: {type(error).__name__}: {error}"
            step.seconds = time.monotonic() - started
            log.write(f"== {step.name}: {step.status} in {step.seconds:.0f} s\n")
        if step.name in SANITIZER_TOOLS:  # what the sanitizer and sanitize.py concluded
            with open(log_path, errors="replace") as log:
                log.seek(log_start)
                step.verdict = "; ".join(line.strip("= \n") for line in log if not line.startswith("== ") and (
                    "ERROR SUMMARY" in line or " failures in " in line or "budget of" in line))
        print(f"{'ok    ' if step.status == 'ok' else 'FAILED'} {step.name}: {step.status} "
              f"({step.seconds:.0f} of {step.budget_s} s; {step.log})", flush=True)

    def run(self) -> bool:
        self.out.mkdir(parents=True, exist_ok=True)
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        self.tripwire_log.unlink(missing_ok=True)
        shutil.rmtree(self.results_dir, ignore_errors=True)  # the tarball holds this run's results only
        for name in OUT_FILES:
            (self.out / name).unlink(missing_ok=True)
        for step in self.steps:
            self.run_step(step)
        summary = self.summary()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        extra = sorted(p.name for p in self.out.iterdir() if p.name not in OUT_FILES)
        if extra:
            print(f"FAILED: $OUT holds files the check did not declare: {extra}")
        for line in summary["lines"]:
            print(line)
        return summary["passed"] and not extra

    def summary(self) -> dict:
        nvcc_calls = self.tripwire_log.read_text().splitlines() if self.tripwire_log.exists() else []
        passed = all(step.status == "ok" for step in self.steps) and not nvcc_calls
        tests = junit_counts(self.out / "tests.xml")
        lines = [f"{'PASSED' if passed else 'FAILED'}: GPU check, "
                 f"{sum(step.seconds for step in self.steps):.0f} s of the {TOTAL_BUDGET_S} s budget"]
        for step in self.steps:
            lines.append(f"  {step.name:<48} {step.status[:60]:<60} {step.seconds:4.0f}/{step.budget_s} s")
            if step.verdict:
                lines.append(f"      {step.verdict}")
        lines.append(f"  tests: {tests}")
        lines.append(f"  Triton: {self.facts.get('triton', {}).get('carried_entries', 0)} kernels carried, "
                     f"{self.facts.get('triton', {}).get('compiled_here', '?')} compiled here; nvcc calls: "
                     f"{len(nvcc_calls)}")
        return {"passed": passed, "lines": lines, "tests": tests, "nvcc_calls": nvcc_calls, "facts": self.facts,
                "steps": [{"name": step.name, "status": step.status, "seconds": round(step.seconds, 1),
                           "budget_s": step.budget_s, "log": step.log, "verdict": step.verdict} for step in self.steps]}


def load_check() -> int:
    """Setup's last step, in the Python the tests use: torch sees the GPU, the carried libraries load (their
    missing dependencies, if any, listed by ldd), and what dlkernels says it can run."""
    import ctypes

    import torch
    import triton

    print("torch", torch.__version__, "CUDA", torch.version.cuda, "triton", triton.__version__)
    assert torch.cuda.is_available(), "torch sees no GPU"
    print(torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
    for name in LIBRARIES:
        print(subprocess.run(["ldd", str(LIB_DIR / name)], capture_output=True, text=True).stdout)
        ctypes.CDLL(str(LIB_DIR / name))
        print("loaded", LIB_DIR / name)
    return subprocess.run([sys.executable, "-m", "dlkernels", "info"], cwd=ROOT).returncode


def junit_counts(path: Path) -> dict:
    if not path.is_file():
        return {"error": "no junit xml"}
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        return {"error": f"unreadable junit xml: {error}"}
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    return {key: sum(int(suite.get(key, 0)) for suite in suites) for key in ("tests", "failures", "errors", "skipped")}


def _run_with_budget(command: list[str], log, budget_s: int, env: dict) -> str:
    """Runs `command` in its own process group; at budget - GRACE_S it gets SIGINT (pytest then stops and
    still writes its reports), at the budget SIGKILL."""
    try:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                   start_new_session=True)
    except OSError as error:
        return f"could not start: {error}"
    try:
        code = process.wait(timeout=max(1, budget_s - GRACE_S))
        return "ok" if code == 0 else f"exit {code}"
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGINT)
        try:
            process.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
        return f"timeout: stopped at its {budget_s} s budget"


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


class _redirect:
    """Sends an action's prints to its log."""

    def __init__(self, log):
        self.log = log

    def __enter__(self):
        self.saved = sys.stdout
        sys.stdout = self.log

    def __exit__(self, *exc):
        sys.stdout = self.saved


# ---------------------------------------------------------------------------------------------------------------
# The dry run

def dry_run(check: Check, collect: bool) -> dict:
    """What the check would run here, and whether its plan keeps the limits; runs nothing on a GPU."""
    problems = []
    budget = sum(stage.budget_s for stage in check.stages)
    if budget > TOTAL_BUDGET_S - BUDGET_MARGIN_S:
        problems.append(f"the stages' budgets add up to {budget} s, over {TOTAL_BUDGET_S} - {BUDGET_MARGIN_S} s")
    if len(OUT_FILES) > MAX_OUT_FILES:
        problems.append(f"{len(OUT_FILES)} output files declared, over {MAX_OUT_FILES}")
    for step in check.steps:
        if step.command and step.budget_s <= GRACE_S:
            problems.append(f"step {step.name!r} has {step.budget_s} s, no more than the {GRACE_S} s grace period")
        if step.log not in OUT_FILES:
            problems.append(f"step {step.name!r} logs to {step.log}, which is not a declared output file")
    plan = {
        "profile": check.profile, "total_budget_s": TOTAL_BUDGET_S, "stages_budget_s": budget,
        "max_out_files": MAX_OUT_FILES,
        "out_files": list(OUT_FILES),
        "stages": [{"name": stage.name, "budget_s": stage.budget_s, "steps": [
            {"name": step.name, "budget_s": step.budget_s, "log": step.log,
             "command": shlex.join(step.command) if step.command else None, "action": step.about or None}
            for step in stage.steps]} for stage in check.stages],
        "artifact": artifact_status(check.artifact),
        "triton_here": triton_identity(check.python),
        "problems": problems,
        "notes": [f"tests in {check.test_workers} pytest-xdist processes" if check.test_workers else
                  "pytest-xdist is not installed here (the GPU image has it): the tests would run in one process",
                  "pytest-timeout stops a test after 120 s" if check.has_timeout else
                  "pytest-timeout is not installed here (the GPU image has it): no per-test limit"],
        "device_call": {"command": "python3 benchmarks/gpu_check.py" + (
                            "" if check.profile == "default" else f" --profile {check.profile}"),
                        "carry": [os.path.relpath(check.artifact, ROOT)], "timeout_s": 600},
    }
    if collect:
        plan["collected"] = _collect(check.python)
        if "error" in plan["collected"]:
            problems.append(f"collecting the GPU tests failed: {plan['collected']['error']}")
        else:
            plan["collected"]["sanitizer"] = _sanitizer_cases(check.python)
    return plan


def _collect(python: str) -> dict:
    done = subprocess.run([python, "-m", "pytest", "-m", "cuda", "tests/", "--collect-only", "-q",
                           "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    if done.returncode != 0 or not ids:
        return {"error": (done.stdout + done.stderr).strip()[-1500:]}
    per_file: dict[str, int] = {}
    for test_id in ids:
        per_file[test_id.split("::")[0]] = per_file.get(test_id.split("::")[0], 0) + 1
    return {"cuda_tests": len(ids), "per_file": per_file}


def _sanitizer_cases(python: str) -> str:
    done = subprocess.run([python, "benchmarks/sanitize.py", "--list"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 else f"error: {done.stderr[-500:]}"


def print_plan(plan: dict) -> None:
    print(f"GPU check plan: {plan['stages_budget_s']} s of budgets (limit {plan['total_budget_s']} s, "
          f"{BUDGET_MARGIN_S} s margin), at most {plan['max_out_files']} files")
    for stage in plan["stages"]:
        print(f"stage {stage['name']} ({stage['budget_s']} s)")
        for step in stage["steps"]:
            print(f"  {step['name']} [{step['budget_s']} s -> {step['log']}]: {step['command'] or step['action']}")
    print(f"files in $OUT: {', '.join(plan['out_files'])}")
    artifact = plan["artifact"]
    print(f"artifact: {'ok' if artifact['ok'] else 'NOT READY'}")
    for problem in artifact["problems"]:
        print(f"  {problem}")
    if artifact["manifest"]:
        manifest = artifact["manifest"]
        print(f"  commit {manifest.get('commit')}{' (dirty)' if manifest.get('dirty') else ''}, archs "
              f"{manifest.get('cuda_archs')}, {artifact['artifact_bytes'] >> 10} KiB + working tree "
              f"{(artifact['working_tree_bytes'] or 0) >> 10} KiB; Triton cache from {manifest.get('triton_origins')}")
    print(f"Triton here: {plan['triton_here']} (the cache is hit only where the key matches)")
    if "collected" in plan:
        print(f"would run: {plan['collected']}")
    for note in plan["notes"]:
        print(f"note: {note}")
    for problem in plan["problems"]:
        print(f"PROBLEM: {problem}")
    call = plan["device_call"]
    print(f"device call: run(command={call['command']!r}, carry={call['carry']}, timeout_s={call['timeout_s']})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")),
                        help="where the files go (default: $OUT, else ./gpu_out)")
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    parser.add_argument("--test-workers", type=int, default=None,
                        help="pytest-xdist processes for the tests (default 4 when xdist is installed, else 0)")
    parser.add_argument("--profile", choices=PROFILES, default="default",
                        help="default: tests, memcheck, racecheck, bench; sanitizers: all four compute-sanitizer "
                             "tools with longer budgets, nothing else")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and check it; run nothing")
    parser.add_argument("--load-check", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    parser.add_argument("--no-collect", action="store_true", help="with --dry-run: skip collecting the tests")
    parser.add_argument("--require-artifact", action="store_true",
                        help="with --dry-run: exit 1 unless the artifact is present, current and small enough")
    args = parser.parse_args(argv)
    if args.load_check:
        return load_check()
    check = Check(args.out.resolve(), args.artifact.resolve(), test_workers=args.test_workers, profile=args.profile)
    if args.dry_run:
        plan = dry_run(check, collect=not args.no_collect)
        print(json.dumps(plan, indent=1, default=str)) if args.json else print_plan(plan)
        if plan["problems"]:
            return 2
        return 1 if args.require_artifact and not plan["artifact"]["ok"] else 0
    return 0 if check.run() else 1


if __name__ == "__main__":
    sys.exit(main())
