"""The GPU check (benchmarks/gpu_check.py) without a GPU: its dry run, its stage runner, the artifact checks and
the Triton cache it carries between machines."""
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))
import gpu_check  # noqa: E402


def dry_run(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, str(SCRIPT), "--dry-run", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    done = dry_run("--json", "--no-collect", "--artifact", str(tmp_path_factory.mktemp("no_artifact")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout)


def test_dry_run_lists_every_stage_within_its_budgets(plan):
    assert [stage["name"] for stage in plan["stages"]] == ["setup", "tests", "memcheck", "racecheck", "bench", "pack"]
    steps = [step for stage in plan["stages"] for step in stage["steps"]]
    assert sum(step["budget_s"] for step in steps) <= plan["total_budget_s"] - gpu_check.BUDGET_MARGIN_S
    assert plan["total_budget_s"] <= 8 * 60
    # Each step gets more than the grace period, so SIGINT comes before its budget ends.
    assert all(step["budget_s"] > gpu_check.GRACE_S for step in steps if step["command"])
    assert len(plan["out_files"]) <= 8 and {step["log"] for step in steps} <= set(plan["out_files"])
    commands = " ".join(step["command"] or "" for step in steps)
    assert "-m pytest -m cuda tests/" in commands and "tests.xml" in commands
    assert "--tool memcheck" in commands and "--tool racecheck" in commands
    assert "dlkernels.bench" in commands and "--quick" in commands
    assert "nvcc" not in commands and "build.py" not in commands, "the GPU machine must compile nothing"
    assert plan["problems"] == []


def test_sanitizer_profile_runs_the_four_tools_within_the_budget(tmp_path):
    """Issue #14 item 8: memcheck, racecheck, synccheck and initcheck, each over benchmarks/sanitize.py and only
    our kernels; the default profile has room for two of them, so the others have their own profile."""
    done = dry_run("--json", "--no-collect", "--profile", "sanitizers", "--artifact", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    plan = json.loads(done.stdout)
    tools = ["memcheck", "racecheck", "synccheck", "initcheck"]
    assert plan["profile"] == "sanitizers" and [stage["name"] for stage in plan["stages"]] == ["setup", *tools]
    assert plan["stages_budget_s"] <= plan["total_budget_s"] - gpu_check.BUDGET_MARGIN_S and plan["problems"] == []
    for stage, tool in zip(plan["stages"][1:], tools):
        command = stage["steps"][0]["command"]
        assert f"--tool {tool}" in command and "--kernel-name kns=dlk" in command and "sanitize.py" in command
    assert plan["device_call"]["command"].endswith("--profile sanitizers")


def test_dry_run_lists_the_tests_and_sanitizer_runs(tmp_path):
    """Collects the GPU tests: a test module that fails to import here would fail on the GPU too."""
    done = dry_run("--json", "--artifact", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collected = json.loads(done.stdout)["collected"]
    assert collected["cuda_tests"] > 0 and sum(collected["per_file"].values()) == collected["cuda_tests"]
    assert re.match(r"\d+ runs in 5 families", collected["sanitizer"]), collected["sanitizer"]


def test_dry_run_flags_a_missing_artifact(plan, tmp_path):
    assert not plan["artifact"]["ok"]
    assert any("MISSING" in problem and "gpu_artifact.py" in problem for problem in plan["artifact"]["problems"])
    done = dry_run("--no-collect", "--require-artifact", "--artifact", str(tmp_path))
    assert done.returncode == 1
    assert "artifact: NOT READY" in done.stdout and "MISSING" in done.stdout


def fake_artifact(path, **changes):
    path.mkdir(exist_ok=True)
    files = {}
    for name in (gpu_check.NATIVE_TARBALL, gpu_check.TRITON_TARBALL):
        (path / name).write_bytes(b"x" * 100)
        files[name] = {"bytes": 100, "sha256": "-"}
    manifest = {"source_digest": gpu_check.source_digest(), "files": files, "problems": [],
                "libraries": {name: {} for name in gpu_check.LIBRARIES}, **changes}
    (path / gpu_check.MANIFEST).write_text(json.dumps(manifest))
    return path


def test_artifact_status(tmp_path):
    assert gpu_check.artifact_status(fake_artifact(tmp_path / "ok"))["problems"] == []

    stale = gpu_check.artifact_status(fake_artifact(tmp_path / "stale", source_digest="0" * 16))
    assert any(problem.startswith("STALE: csrc/ changed") for problem in stale["problems"])

    partial = fake_artifact(tmp_path / "partial")
    (partial / gpu_check.NATIVE_TARBALL).write_bytes(b"x")
    assert any("partial copy" in problem for problem in gpu_check.artifact_status(partial)["problems"])

    no_cuda = fake_artifact(tmp_path / "no_cuda", libraries={"libdlk_cpu.so": {}})
    assert any("libdlk_cuda.so" in problem for problem in gpu_check.artifact_status(no_cuda)["problems"])

    huge = fake_artifact(tmp_path / "huge")
    with open(huge / gpu_check.TRITON_TARBALL, "wb") as sparse:
        sparse.truncate(gpu_check.CARRY_LIMIT_BYTES)
    manifest = json.loads((huge / gpu_check.MANIFEST).read_text())
    manifest["files"][gpu_check.TRITON_TARBALL]["bytes"] = gpu_check.CARRY_LIMIT_BYTES
    (huge / gpu_check.MANIFEST).write_text(json.dumps(manifest))
    assert any(problem.startswith("TOO LARGE") for problem in gpu_check.artifact_status(huge)["problems"])


def test_a_step_over_its_budget_is_stopped_and_the_next_still_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "WORK_DIR", tmp_path / "work")
    monkeypatch.setattr(gpu_check, "GRACE_S", 1)
    check = gpu_check.Check(tmp_path / "out", tmp_path / "no_artifact")
    python = sys.executable
    check.stages = [
        gpu_check.Stage("slow", [gpu_check.Step("sleeper", "tests.log", 6, [python, "-c", "import time; "
                                                                              "print('started', flush=True); "
                                                                              "time.sleep(60)"])]),
        gpu_check.Stage("broken", [gpu_check.Step("exit 3", "bench.log", 5, [python, "-c", "raise SystemExit(3)"])]),
        gpu_check.Stage("fine", [gpu_check.Step("fine", "bench.log", 5, [python, "-c", "print('fine')"])]),
    ]
    started = time.monotonic()
    assert check.run() is False
    assert time.monotonic() - started < 20
    assert [step.status.split(":")[0] for step in check.steps] == ["timeout", "exit 3", "ok"]
    assert "started" in (tmp_path / "out" / "tests.log").read_text()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["passed"] is False and [step["name"] for step in summary["steps"]] == ["sleeper", "exit 3", "fine"]
    assert {path.name for path in (tmp_path / "out").iterdir()} <= set(gpu_check.OUT_FILES)

    for stage in check.stages[:2]:
        stage.steps[0].command = [python, "-c", "pass"]
    assert check.run() is True


RELOCATION_SCRIPT = textwrap.dedent("""
    import json, os, shutil, sys
    from pathlib import Path
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sys.path.insert(0, sys.argv[1])
    import gpu_check

    @triton.jit
    def double(x_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(x_ptr + offsets, 2 * tl.load(x_ptr + offsets, mask=offsets < n), mask=offsets < n)

    hits = []
    triton.knobs.compilation.listener = lambda *, cache_hit, **_: hits.append(cache_hit)
    def compile_into(cache):
        triton.knobs.cache.dir = str(cache)
        source = ASTSource(double, {"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}, {(2,): 128})
        triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})

    made, carried = Path(sys.argv[2]) / "made", Path(sys.argv[2]) / "carried"
    compile_into(made)
    gpu_check.pack_triton_cache(made, Path(sys.argv[2]) / "cache.tar.gz", origin={"key": "k"})
    shutil.rmtree(made)  # the group files named paths in here: gone, as on another machine
    keys, origin = gpu_check.install_triton_cache(Path(sys.argv[2]) / "cache.tar.gz", carried)
    compile_into(carried)
    print(json.dumps({"hits": hits, "keys": len(keys), "origin": origin,
                      "suffixes": sorted({p.suffix for p in carried.rglob("*") if p.is_file()})}))
""")


def test_the_carried_triton_cache_is_hit_at_its_new_place(tmp_path):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = tmp_path / "relocate.py"  # triton.jit reads its kernel's source from a file
    script.write_text(RELOCATION_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(SCRIPT.parent), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["hits"] == [False, True], "the relocated cache was not hit: Triton compiled again"
    assert result["keys"] == 1 and result["origin"] == {"key": "k"}
    assert result["suffixes"] == [".cubin", ".json"], "only the binary and metadata travel"


def test_every_cuda_kernel_lives_in_namespace_dlk():
    """compute-sanitizer instruments only kernels whose name contains 'dlk' (SANITIZER_KERNEL_FILTER): a kernel
    outside namespace dlk would run unchecked."""
    assert gpu_check.SANITIZER_KERNEL_FILTER == "kns=dlk"
    outside = []
    for path in sorted((ROOT / "csrc" / "cuda").rglob("*.cu*")):
        depth_in_dlk = 0
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*namespace dlk\s*\{", line):
                depth_in_dlk += 1
            elif re.match(r"\s*\}\s*//\s*namespace dlk\b", line):
                depth_in_dlk -= 1
            elif "__global__" in line and not line.lstrip().startswith("//") and depth_in_dlk == 0:
                outside.append(f"{path.relative_to(ROOT)}:{number}")
    assert not outside, f"kernels outside namespace dlk, which the sanitizer would skip: {outside}"


def test_sanitizer_verdicts_reach_the_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "WORK_DIR", tmp_path / "work")
    check = gpu_check.Check(tmp_path / "out", tmp_path / "no_artifact")
    printed = ("print('ok  cuda fwd case'); print('0 failures in 3 of 9 runs'); "
               "print('========= ERROR SUMMARY: 2 errors')")
    check.stages = [gpu_check.Stage("memcheck", [gpu_check.Step("memcheck", "sanitizer.log", 15,
                                                                [sys.executable, "-c", printed])])]
    check.run()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["steps"][0]["verdict"] == "0 failures in 3 of 9 runs; ERROR SUMMARY: 2 errors"


def test_returned_triton_cache_fits_the_file_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "WORK_DIR", tmp_path / "work")
    monkeypatch.setattr(gpu_check, "MAX_FILE_BYTES", 50_000)
    check = gpu_check.Check(tmp_path / "out", tmp_path / "no_artifact")
    check.out.mkdir()
    for key in range(20):  # 20 kernels of 10 kB that do not compress
        entry = check.cache_dir / f"KEY{key}"
        entry.mkdir(parents=True)
        (entry / "k.cubin").write_bytes(os.urandom(10_000))
        (entry / "__grp__k.json").write_text(json.dumps({"child_paths": {"k.cubin": str(entry / "k.cubin")}}))
    check.carried_keys = {"KEY0"}
    assert check.pack()
    assert (check.out / gpu_check.TRITON_TARBALL).stat().st_size <= 50_000
    assert check.facts["triton"]["compiled_here"] == 19 and 0 < check.facts["triton"]["returned"] < 19
