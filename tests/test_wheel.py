"""The wheel builds with build isolation (no torch among the build requirements) and carries a torch-free
C++ library: `pip wheel .` from the tracked files, as a fresh clone would, with DLK_CUDA=off so CI spends
its time on the packaging rather than on nvcc (test_cuda_compile.py and test_native_build.py cover CUDA)."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LOAD_WITHOUT_TORCH = """
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
lib.dlk_cpu_build_info.restype = ctypes.c_char_p
print(json.dumps({"info": json.loads(lib.dlk_cpu_build_info()), "torch_imported": "torch" in sys.modules}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to list the tracked files")
    source = tmp_path_factory.mktemp("clone")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = source / "dist"
    env = {**os.environ, "DLK_CUDA": "off"}
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-cache-dir", "-w", str(dist)],
                            cwd=source, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels = list(dist.glob("dlkernels-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_build_requirements_have_no_torch():
    requires = (ROOT / "pyproject.toml").read_text().split("requires", 1)[1].split("]", 1)[0]
    assert "setuptools" in requires and "torch" not in requires


@pytest.mark.slow
def test_wheel_is_one_per_platform_and_needs_torch_2_4(wheel):
    python_tag, abi_tag, platform_tag = wheel.stem.split("-")[-3:]
    assert (python_tag, abi_tag) == ("py3", "none")
    assert platform_tag == sysconfig.get_platform().replace("-", "_").replace(".", "_")
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [line for line in archive.read(metadata).decode().splitlines() if line.startswith("Requires-Dist")]
    assert "Requires-Dist: torch>=2.4" in requires


@pytest.mark.slow
def test_wheel_carries_the_library_policy_and_every_op(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        by_suffix = {n.split("/dlkernels/", 1)[-1] if "/dlkernels/" in n else n.split("dlkernels/", 1)[-1]: n
                     for n in names if "dlkernels/" in n}
        for needed in ["lib/libdlk_cpu.so", "auto_policy.json", "_native/__init__.py", "triton_kernels/conv2d.py",
                       *(f"ops/{p.name}" for p in (ROOT / "dlkernels" / "ops").glob("*.py"))]:
            assert needed in by_suffix, f"{needed} missing from {wheel.name}"
        library = tmp_path / "libdlk_cpu.so"
        library.write_bytes(archive.read(by_suffix["lib/libdlk_cpu.so"]))
    loaded = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_TORCH, str(library)], capture_output=True, text=True,
                            timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    report = json.loads(loaded.stdout)
    assert report["torch_imported"] is False and report["info"]["abi"] >= 1
