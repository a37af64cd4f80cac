"""Mutation testing: plants each bug of tests/mutation/catalogue.py, one at a time, in a copy of the
repository and runs its family's tests against it.

    python -m tests.mutation.run [--family F] [--mutant ID ...] [--jobs N] [--json results.json]
                                 [--timeout S] [--workdir DIR] [--no-baseline] [--tests PATH ...]
    python -m tests.mutation.run --readme results.json    # rewrite README.md's "Mutation testing" section

Each worker (one per --jobs) copies the repository's tracked files (`git ls-files`, as they are in the
working tree) into <workdir>/worker<i> once per run, then for each mutant: applies it, rebuilds the C++
reference library when a csrc/ file changed (csrc/build.py --cuda off; the worker's build directory
persists across runs, so ninja recompiles one object), runs the family's tests with
`-x -q -p no:cacheprovider` under a timeout, and restores the file. Outcomes:
  killed    a test failed (or the test process crashed: a bad address is a caught bug too)
  survived  every test passed
  timeout   the tests ran past --timeout (counted as not killed)
  error     a broken mutant (does not compile, tests cannot be collected), or a baseline that cannot run
Score = killed / (killed + survived + timeout). Before the mutants, each family's tests run once, without
-x, on the unmutated copy (the baseline): tests failing there are deselected for that family's mutants
(and listed in the report), so a test broken by someone else never counts as a kill.
Not part of `make test` (it takes tens of minutes): `make mutation`.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from .catalogue import FAMILIES, FAMILY_TESTS, ROOT, SURVIVOR_NOTES, Mutant, select

DEFAULT_WORKDIR = ROOT / "build" / "mutation"
DEFAULT_TIMEOUT_S = 900
README = ROOT / "README.md"
README_HEADING = "## Mutation testing"
# Worker paths that are build products, never synced or deleted.
KEEP = ("build/", "dlkernels/lib/", "dlkernels/triton_kernels")
STATUSES = ("killed", "survived", "timeout", "error")


@dataclass
class Result:
    id: str
    family: str
    file: str
    status: str
    seconds: float
    detail: str  # the test that killed it, or why it is an error
    description: str
    issue: str


def tracked_files(root: Path = ROOT) -> list[str]:
    """The repository's tracked files that exist in the working tree (deleted ones are skipped)."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return [name for name in listing.decode().split("\0") if name and (root / name).is_file()]


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DLK_LIB_DIR", None)  # the worker's own library, never one from elsewhere
    # No .pyc files: a mutant of the same length written within the same second as the original would
    # otherwise be shadowed by (or leave behind) a stale cached module.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_command(command: list[str], cwd: Path, timeout: float) -> tuple[int | None, str, float]:
    """(return code or None on timeout, combined output, seconds); on timeout the whole process group dies."""
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, env=python_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        code = None
    return code, output.decode(errors="replace"), time.monotonic() - start


def failed_tests(output: str) -> list[str]:
    """Node ids of the FAILED / ERROR lines of pytest's short summary."""
    found = []
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            node = line.split(" ", 1)[1].split(" - ", 1)[0].strip()
            if "::" in node:
                found.append(node)
    return found


def first_failure(output: str) -> str:
    """The first FAILED / ERROR line of pytest's short summary, or the last line of output."""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line[:300]
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


class Worker:
    """A copy of the repository at <workdir>/worker<index> that mutants are planted in."""

    def __init__(self, workdir: Path, index: int, prebuilt_lib: bool = False):
        self.path = (workdir / f"worker{index}").resolve()
        self.prebuilt_lib = prebuilt_lib
        self.lib_dirty = True  # the worker's library must be (re)built before tests run

    def sync(self) -> None:
        """Copies the tracked files, writing only those whose content differs (fresh mtimes, so ninja
        and Python see them as new), and deletes files that are no longer tracked."""
        files = tracked_files()
        wanted = set(files)
        for name in files:
            source, target = ROOT / name, self.path / name
            data = source.read_bytes()
            if not target.is_file() or target.read_bytes() != data:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                shutil.copymode(source, target)
        for path in list(self.path.rglob("*")):
            relative = path.relative_to(self.path).as_posix()
            if (path.is_file() and not path.is_symlink() and relative not in wanted
                    and not relative.startswith(KEEP) and "__pycache__" not in relative):
                path.unlink()
        # setup.py installs triton_kernels/ as dlkernels.triton_kernels; the editable install's finder
        # would map it to the main tree, so the copy gets a link of its own that the import system finds first.
        link = self.path / "dlkernels" / "triton_kernels"
        if not link.is_symlink():
            link.symlink_to(Path("..") / "triton_kernels")

    def build(self) -> tuple[bool, str]:
        if self.prebuilt_lib:
            lib_dir = self.path / "dlkernels" / "lib"
            lib_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / "dlkernels" / "lib" / "libdlk_cpu.so", lib_dir / "libdlk_cpu.so")
            self.lib_dirty = False
            return True, ""
        command = ["nice", "-n", "10", sys.executable, "csrc/build.py", "--cuda", "off", "--jobs", "2"]
        code, output, _ = run_command(command, self.path, timeout=1800)
        self.lib_dirty = code != 0
        return code == 0, output

    def check_imports(self) -> None:
        """Fails unless the worker's packages (not the main tree's) are what the tests will import."""
        probe = ("import dlkernels, dlkernels.triton_kernels as t, dlkernels._native as n; "
                 "print(dlkernels.__file__); print(t.__file__); print(n.LIB_DIR)")
        code, output, _ = run_command([sys.executable, "-c", probe], self.path, timeout=600)
        paths = output.split()
        if code != 0 or len(paths) != 3 or not all(Path(p).resolve().is_relative_to(self.path) for p in paths):
            raise RuntimeError(f"mutation worker {self.path}: imports do not resolve inside the copy:\n{output}")

    def prepare(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.sync()
        ok, output = self.build()
        if not ok:
            raise RuntimeError(f"mutation worker {self.path}: the unmutated C++ reference does not build:\n{output}")
        self.check_imports()

    def run_tests(self, family: str, timeout: float, tests: list[str] | None, deselect=(),
                  stop_first: bool = True) -> tuple[int | None, str, float]:
        selected = tests or [name for name in FAMILY_TESTS[family] if (self.path / name).is_file()]
        command = ["nice", "-n", "10", sys.executable, "-m", "pytest", *selected, "-q", "-p", "no:cacheprovider",
                   "-rfE", *(["-x"] if stop_first else []), *(f"--deselect={node}" for node in deselect)]
        return run_command(command, self.path, timeout)

    def run_mutant(self, mutant: Mutant, timeout: float, tests: list[str] | None, deselect=()) -> Result:
        def result(status: str, seconds: float, detail: str) -> Result:
            return Result(mutant.id, mutant.family, mutant.file, status, round(seconds, 1), detail,
                          mutant.description, mutant.issue)

        target = self.path / mutant.file
        if not target.is_file():
            return result("error", 0.0, f"{mutant.file} is not a tracked file of the tree")
        original = target.read_text()
        try:
            mutated = mutant.apply(original)
        except ValueError as error:
            return result("error", 0.0, str(error))
        start = time.monotonic()
        target.write_text(mutated)
        try:
            if mutant.native or self.lib_dirty:
                ok, output = self.build()
                if not ok:
                    if mutant.native:
                        return result("error", time.monotonic() - start, "does not compile: " + first_failure(output))
                    raise RuntimeError(f"the unmutated C++ reference stopped building:\n{output}")
            code, output, _ = self.run_tests(mutant.family, timeout, tests, deselect)
        finally:
            target.write_text(original)  # a fresh mtime: ninja rebuilds the object before the next run
            if mutant.native:
                self.lib_dirty = True
        seconds = time.monotonic() - start
        if code is None:
            return result("timeout", seconds, f"tests ran past {timeout:.0f} s")
        if code == 0:
            return result("survived", seconds, "")
        if code == 1:
            return result("killed", seconds, first_failure(output))
        if code < 0 or code > 128:  # killed by a signal: the mutant crashed the test process
            return result("killed", seconds, f"test process crashed (exit {code}): {first_failure(output)}")
        return result("error", seconds, f"pytest exit {code}: {first_failure(output)}")


def run(mutants: list[Mutant], jobs: int, timeout: float, workdir: Path, baseline: bool,
        tests: list[str] | None = None, prebuilt_lib: bool = False, log=print,
        baseline_failures: dict[str, list[str]] | None = None) -> list[Result]:
    """Runs `mutants` on `jobs` workers; returns one Result per mutant, in catalogue order. Tests that fail
    on the unmutated copy (the baseline, run without -x) are deselected for that family's mutants and
    listed in `baseline_failures`; a family whose baseline cannot run at all gives errors."""
    if baseline_failures is None:
        baseline_failures = {}
    workers = [Worker(workdir, index, prebuilt_lib) for index in range(max(1, min(jobs, len(mutants))))]
    with ThreadPoolExecutor(len(workers)) as pool:
        list(pool.map(Worker.prepare, workers))
    free: queue.Queue[Worker] = queue.Queue()
    for worker in workers:
        free.put(worker)
    lock = threading.Lock()

    def on_worker(task):
        worker = free.get()
        try:
            return task(worker)
        finally:
            free.put(worker)

    broken: dict[str, str] = {}
    if baseline:
        def check_family(family: str):
            def task(worker: Worker):
                if worker.lib_dirty:
                    worker.build()
                code, output, seconds = worker.run_tests(family, 2 * timeout, tests, stop_first=False)
                failing = failed_tests(output)
                with lock:
                    log(f"baseline {family}: {'passes' if code == 0 else 'FAILS'} ({seconds:.0f} s)"
                        + "".join(f"\n    deselected for the mutants: {node}" for node in failing))
                if code == 1 and failing:
                    baseline_failures[family] = failing
                elif code != 0:
                    broken[family] = first_failure(output) if code is not None else f"ran past {2 * timeout:.0f} s"
            return on_worker(task)

        with ThreadPoolExecutor(len(workers)) as pool:
            list(pool.map(check_family, sorted({m.family for m in mutants})))

    def run_one(mutant: Mutant) -> Result:
        if mutant.family in broken:
            return Result(mutant.id, mutant.family, mutant.file, "error", 0.0,
                          f"baseline fails: {broken[mutant.family]}", mutant.description, mutant.issue)
        deselect = baseline_failures.get(mutant.family, ())
        result = on_worker(lambda worker: worker.run_mutant(mutant, timeout, tests, deselect))
        with lock:
            log(f"{result.status:>8}  {result.seconds:6.0f} s  {result.id}  {result.detail[:100]}")
        return result

    with ThreadPoolExecutor(len(workers)) as pool:
        return list(pool.map(run_one, mutants))


def score(results: list[Result]) -> tuple[int, int]:
    """(killed, counted): errors (broken mutants) do not count, timeouts count as not killed."""
    counted = [r for r in results if r.status != "error"]
    return sum(r.status == "killed" for r in counted), len(counted)


def layer(file: str) -> str:
    return "C++" if file.startswith("csrc/") else "Triton" if file.startswith("triton_kernels/") else "Python"


def table(results: list[Result]) -> str:
    rows = [f"{'mutant':<38} {'layer':<6} {'status':<8} {'time':>6}  detail"]
    for r in results:
        rows.append(f"{r.id:<38} {layer(r.file):<6} {r.status:<8} {r.seconds:5.0f}s  {r.detail[:90]}")
    killed, counted = score(results)
    rows.append(f"score: {killed}/{counted} killed ({100 * killed / max(counted, 1):.0f}%)")
    return "\n".join(rows)


def git_commit() -> str:
    """HEAD's short hash, with "+changes" when tracked files differ from it (the run tests the working tree)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
    return (head.stdout.strip() or "unknown") + ("+changes" if changed else "")


def report(results: list[Result], command: str, seconds: float, baseline_failures: dict[str, list[str]],
           commit: str) -> dict:
    killed, counted = score(results)
    return {"command": command, "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_seconds": round(seconds), "killed": killed, "counted": counted,
            "score_percent": round(100 * killed / max(counted, 1), 1), "baseline_failures": baseline_failures,
            "results": [asdict(r) for r in results]}


def readme_section(data: dict) -> str:
    """The README's "Mutation testing" section from a --json report."""
    results = [Result(**r) for r in data["results"]]
    lines = [
        README_HEADING,
        "",
        "A catalogue of realistic kernel bugs (`tests/mutation/catalogue.py`: off-by-one bounds, dropped terms in a",
        "backward, swapped gates, arguments ignored along one axis or on one backend, wrong launch grids and strides,",
        "lost NaN propagation, a skipped online-softmax rescale) is planted one bug at a time in a copy of the tree",
        "(C++ reference, Triton kernels, Python op layer), and each family's tests run against it (issue #17):",
        "",
        "    make mutation        # python -m tests.mutation.run --json build/mutation/results.json",
        "",
        f"Last full run: commit `{data['commit']}`, {data['date']}, {data['wall_seconds'] // 60} min on the 2-core "
        f"CPU machine (Triton in its interpreter). **{data['killed']} of {data['counted']} mutants killed "
        f"({data['score_percent']:.0f}%)**.",
        "",
        "| family | mutants | killed | survived | timeout | error |",
        "|---|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        mine = [r for r in results if r.family == family]
        if mine:
            counts = [sum(r.status == s for r in mine) for s in STATUSES]
            lines.append(f"| {family} | {len(mine)} | " + " | ".join(map(str, counts)) + " |")
    for family, nodes in sorted(data.get("baseline_failures", {}).items()):
        lines += ["", f"Failing on the unmutated tree, so deselected for the {family} mutants: "
                  + ", ".join(f"`{node}`" for node in nodes) + "."]
    not_killed = [r for r in results if r.status != "killed"]
    if not_killed:
        lines += ["", "Not killed, and why:", "", "| mutant | layer | status | bug | why it got through |",
                  "|---|---|---|---|---|"]
        for r in not_killed:
            why = SURVIVOR_NOTES.get(r.id) or r.detail or "not yet explained"
            lines.append(f"| `{r.id}` | {layer(r.file)} | {r.status} | {r.description} | {why} |")
    else:
        lines += ["", "Every mutant was killed."]
    return "\n".join(lines) + "\n"


def update_readme(section: str, path: Path = README) -> None:
    """Replaces the "Mutation testing" section (up to the next "## " heading) or appends it."""
    text = path.read_text()
    start = text.find(README_HEADING + "\n")
    if start < 0:
        path.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    end = text.find("\n## ", start + len(README_HEADING))
    rest = "" if end < 0 else text[end + 1:]
    path.write_text(text[:start] + section + ("\n" + rest if rest else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=FAMILIES)
    parser.add_argument("--mutant", nargs="+", metavar="ID", help="run only these mutants")
    parser.add_argument("--jobs", type=int, default=1, help="workers (each a copy of the tree); default 1")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per mutant's tests")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="where the workers' copies live")
    parser.add_argument("--json", type=Path, help="write the results here (input of --readme)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of each family's tests")
    parser.add_argument("--tests", nargs="+", metavar="PATH", help="run these tests instead of the family's")
    parser.add_argument("--prebuilt-lib", action="store_true",
                        help="copy the tree's dlkernels/lib/libdlk_cpu.so instead of building the workers' "
                             "(only for Python/Triton mutants, and only when that library is current)")
    parser.add_argument("--readme", type=Path, metavar="JSON", help="rewrite README.md's section from a report")
    args = parser.parse_args(argv)

    if args.readme:
        update_readme(readme_section(json.loads(args.readme.read_text())))
        print(f"updated the {README_HEADING!r} section of {README}")
        return 0
    mutants = select(args.family, args.mutant)
    if args.prebuilt_lib and any(m.native for m in mutants):
        parser.error("--prebuilt-lib cannot run mutants of csrc/ (they need a rebuilt library)")
    started, commit = time.monotonic(), git_commit()  # the tree the workers copy, not the one at the end
    baseline_failures: dict[str, list[str]] = {}
    results = run(mutants, args.jobs, args.timeout, args.workdir, not args.no_baseline, args.tests, args.prebuilt_lib,
                  baseline_failures=baseline_failures)
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = "python -m tests.mutation.run " + " ".join(argv if argv is not None else sys.argv[1:])
        data = report(results, command.strip(), time.monotonic() - started, baseline_failures, commit)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
