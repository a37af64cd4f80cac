"""Builds, on a CPU machine, everything the GPU check needs, so nothing compiles on the GPU machine:

    python benchmarks/gpu_artifact.py [--arch "80;90a"] [--jobs N] [--gpu-triton-cache PATH/triton_cache.tar.gz]

writes build/gpu_artifact/ (ignored by git), which the device call carries (see gpu_check.py):
    native.tar.gz        dlkernels/lib/libdlk_cpu.so and libdlk_cuda.so, from `csrc/build.py --cuda on`
    triton_cache.tar.gz  Triton's cache with every kernel specialisation tests/triton_compile_worker.py compiles,
                         for sm_90 only (cubin + metadata), plus the kernels earlier GPU checks compiled there
    manifest.json        git commit, csrc digest, sizes, sha256s, CUDA archs, which Triton made the cache
Fails (exit 1, saying why) when a part is missing or when the working tree plus the artifact exceed the
64 MiB the device tool carries.

A Triton cache is hit only by the same Triton build (its key covers the compiler's binary, which differs per
Python version): the GPU machine's Python may not be this one's, so the kernels its check had to compile come
back in $OUT/triton_cache.tar.gz; --gpu-triton-cache keeps them (in build/gpu_triton_cache/, accumulating)
for every later artifact. Delete that folder when the GPU machine's Triton changes.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import (CARRY_LIMIT_BYTES, LIB_DIR, LIBRARIES, MANIFEST, NATIVE_TARBALL, ROOT,  # noqa: E402
                       TRITON_TARBALL, install_triton_cache, pack_triton_cache, source_digest, triton_identity,
                       working_tree_bytes)

DEFAULT_OUT = ROOT / "build" / "gpu_artifact"
# Persistent, so a rebuild compiles only what changed; the artifact takes only the entries this build used.
LOCAL_TRITON_CACHE = ROOT / "build" / "triton_cache_sm90"
GPU_TRITON_CACHE = ROOT / "build" / "gpu_triton_cache"
WORKER = ROOT / "tests" / "triton_compile_worker.py"


def build_native(arch: str, jobs: int | None) -> list[str]:
    """Runs csrc/build.py; returns problems."""
    script = ROOT / "csrc" / "build.py"
    if not script.is_file():
        return [f"{script.relative_to(ROOT)} does not exist yet: the native libraries cannot be built"]
    command = [sys.executable, str(script), "--cuda", "on", "--arch", arch] + (["--jobs", str(jobs)] if jobs else [])
    print("$", " ".join(command), flush=True)
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        return [f"`{' '.join(command)}` failed"]
    missing = [name for name in LIBRARIES if not (LIB_DIR / name).is_file()]
    return [f"csrc/build.py made no dlkernels/lib/{name}" for name in missing]


def cuda_archs(library: Path) -> list[str]:
    """The SASS and PTX targets inside a library, as cuobjdump lists them (empty when it is not installed)."""
    archs = []
    for option, kind in (("--list-elf", "sass"), ("--list-ptx", "ptx")):
        try:
            listed = subprocess.run(["cuobjdump", option, str(library)], capture_output=True, text=True).stdout
        except OSError:
            return ["unlisted: no cuobjdump here"]
        archs += sorted({f"{kind} {match}" for match in re.findall(r"sm_\d+a?", listed)})
    return archs


def warm_triton_cache(jobs: int) -> tuple[set[str], list[str]]:
    """Compiles every specialisation the compile worker knows, for sm_90, into LOCAL_TRITON_CACHE; returns the
    cache entries used (compiled or found) and the failures."""
    ops = sorted(path.stem for path in (ROOT / "triton_kernels").glob("*.py") if not path.name.startswith("_"))
    shards = 2 * jobs
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(LOCAL_TRITON_CACHE)

    def run(job):
        command = [sys.executable, __file__, "--triton-worker", job[0], str(job[1]), str(shards)]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)

    used, failures = set(), []
    with ThreadPoolExecutor(jobs) as pool:
        for done in pool.map(run, [(op, shard) for op in ops for shard in range(shards)]):
            for line in done.stdout.splitlines():
                record = json.loads(line) if line.startswith("{") else {}
                if "cache_entry" in record:
                    used.add(record["cache_entry"])
                elif "error" in record:
                    failures.append(f"{record.get('kernel', '')} {record.get('spec', '')}: {record['error'][:300]}")
            if done.returncode != 0:
                failures.append(f"worker exited with {done.returncode}: {done.stderr[-1000:]}")
    return used, failures


def triton_worker(op: str, shard: int, num_shards: int) -> None:
    """The compile worker restricted to sm_90, printing each cache entry Triton used as {"cache_entry": key}."""
    sys.path.insert(0, str(WORKER.parent))
    import triton
    import triton_compile_worker as worker

    def listener(*, metadata_group, **_):
        print(json.dumps({"cache_entry": Path(next(iter(metadata_group.values()))).parent.name}), flush=True)

    triton.knobs.compilation.listener = listener
    worker.TARGETS = {"sm_90": worker.TARGETS["sm_90"]}
    worker.main(op, shard, num_shards)


def git(*args: str) -> str | None:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--arch", default="80;90a", help="CUDA archs for csrc/build.py (%(default)s)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-native", action="store_true", help="package the libraries already in dlkernels/lib")
    parser.add_argument("--gpu-triton-cache", type=Path, action="append", default=[],
                        help="a triton_cache.tar.gz a GPU check returned; kept for every later artifact")
    parser.add_argument("--triton-worker", nargs=3, metavar=("OP", "SHARD", "SHARDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.triton_worker:
        op, shard, shards = args.triton_worker
        triton_worker(op, int(shard), int(shards))
        return 0

    problems = [] if args.skip_native else build_native(args.arch, args.jobs)
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    libraries = {}
    present = [name for name in LIBRARIES if (LIB_DIR / name).is_file()]
    if args.skip_native:
        problems += [f"dlkernels/lib/{name} is missing (--skip-native)" for name in LIBRARIES if name not in present]
        newest_source = max(path.stat().st_mtime for path in (ROOT / "csrc").rglob("*") if path.is_file())
        problems += [f"dlkernels/lib/{name} is older than csrc/ (--skip-native): rebuild it" for name in present
                     if (LIB_DIR / name).stat().st_mtime < newest_source]
    with tarfile.open(out / NATIVE_TARBALL, "w:gz") as tar:
        for name in present:
            tar.add(LIB_DIR / name, arcname=name)
            libraries[name] = {"bytes": (LIB_DIR / name).stat().st_size, "sha256": sha256(LIB_DIR / name),
                               "cuda_archs": cuda_archs(LIB_DIR / name) if "cuda" in name else []}

    print("warming the Triton cache for sm_90 ...", flush=True)
    used, failures = warm_triton_cache(args.jobs)
    if failures:
        print(f"{len(failures)} Triton compilations failed (tests/test_triton_compile.py says why):", *failures[:5],
              sep="\n  ")
    if not used:
        problems.append("the compile worker put nothing in the Triton cache")
    origins = [{**triton_identity(), "entries": len(used), "made_on": "this CPU machine"}]
    for tarball in args.gpu_triton_cache:
        _, origin = install_triton_cache(tarball, GPU_TRITON_CACHE)
        (GPU_TRITON_CACHE / "origin.json").write_text(json.dumps(origin))
    with tempfile.TemporaryDirectory() as scratch:
        merged = Path(scratch) / "cache"
        merged.mkdir()
        for key in used:
            shutil.copytree(LOCAL_TRITON_CACHE / key, merged / key)
        gpu_keys = [p.name for p in GPU_TRITON_CACHE.iterdir() if p.is_dir()] if GPU_TRITON_CACHE.is_dir() else []
        for key in gpu_keys:
            shutil.copytree(GPU_TRITON_CACHE / key, merged / key, dirs_exist_ok=True)
        origin_file = GPU_TRITON_CACHE / "origin.json"
        if gpu_keys and origin_file.is_file():
            origins.append({**json.loads(origin_file.read_text()), "entries": len(gpu_keys),
                            "made_on": "a GPU machine (returned by gpu_check.py)"})
        pack_triton_cache(merged, out / TRITON_TARBALL)

    files = {name: {"bytes": (out / name).stat().st_size, "sha256": sha256(out / name)}
             for name in (NATIVE_TARBALL, TRITON_TARBALL)}
    total = sum(entry["bytes"] for entry in files.values())
    tree = working_tree_bytes() or 0
    if tree + total > CARRY_LIMIT_BYTES:
        problems.append(f"working tree {tree / 2**20:.1f} MiB + artifact {total / 2**20:.1f} MiB exceed the "
                        f"{CARRY_LIMIT_BYTES >> 20} MiB the device tool carries: build fewer archs (--arch 90a) "
                        f"or delete {GPU_TRITON_CACHE.relative_to(ROOT)}")
    manifest = {
        "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_digest": source_digest(), "cuda_archs_requested": args.arch,
        "cuda_archs": libraries.get("libdlk_cuda.so", {}).get("cuda_archs", []),
        "libraries": libraries, "files": files, "artifact_bytes": total, "working_tree_bytes": tree,
        "triton_origins": origins, "triton_compile_failures": len(failures), "problems": problems,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    sizes = ", ".join(f"{name} {entry['bytes'] / 2**20:.1f} MiB" for name, entry in files.items())
    print(f"{out}: {total / 2**20:.1f} MiB ({sizes}) + working tree {tree / 2**20:.1f} MiB; Triton kernels: "
          f"{', '.join(str(origin['entries']) for origin in origins)}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
