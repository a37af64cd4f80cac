"""The compiled core (csrc/build.py -> dlkernels/lib/libdlk_*.so) is torch-free and portable:

  - each built library loads with ctypes alone, torch not imported, and reports the C ABI version of
    csrc/capi/capi.h (which dlkernels/_native checks too);
  - it exports only dlk_* symbols and references no torch, c10, ATen, pybind11 or Python symbol;
  - the CUDA library carries SASS for every arch it was built for plus PTX of the highest
    (cuobjdump when installed, else a reader of the fatbinary headers).

Skipped, with the reason, for a library that is not built. Build them with `python csrc/build.py`.
"""
import ctypes
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB_DIR = ROOT / "dlkernels" / "lib"
LIBRARIES = {kind: LIB_DIR / f"libdlk_{kind}.so" for kind in ("cpu", "cuda")}
NM = shutil.which("nm")
CUOBJDUMP = shutil.which("cuobjdump") or (shutil.which("/usr/local/cuda/bin/cuobjdump"))


def capi_abi_version() -> int:
    header = (ROOT / "csrc" / "capi" / "capi.h").read_text()
    return int(re.search(r"#define DLK_ABI_VERSION (\d+)", header).group(1))


def built(kind: str) -> Path:
    path = LIBRARIES[kind]
    if not path.is_file():
        hint = "python csrc/build.py" + (" --cuda on (needs nvcc)" if kind == "cuda" else "")
        pytest.skip(f"{path.name} is not built ({hint})")
    return path


# ids must not be a bare "cuda": conftest.py skips items with that keyword when no GPU is present.
KINDS = pytest.mark.parametrize("kind", list(LIBRARIES), ids=lambda kind: f"libdlk_{kind}")

LOAD_WITHOUT_TORCH = """
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
kind = sys.argv[2]
getattr(lib, f"dlk_{kind}_abi_version").restype = ctypes.c_int
getattr(lib, f"dlk_{kind}_build_info").restype = ctypes.c_char_p
info = json.loads(getattr(lib, f"dlk_{kind}_build_info")())
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
print(json.dumps({"abi": getattr(lib, f"dlk_{kind}_abi_version")(), "info": info}))
"""


def load_without_torch(kind: str) -> dict:
    result = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_TORCH, str(built(kind)), kind],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@KINDS
def test_loads_without_torch_and_reports_its_abi(kind):
    loaded = load_without_torch(kind)
    assert loaded["abi"] == capi_abi_version() == loaded["info"]["abi"]
    assert loaded["info"]["cuda"] == (kind == "cuda")


def test_python_loader_expects_the_header_abi():
    native_init = (ROOT / "dlkernels" / "_native" / "__init__.py").read_text()
    assert re.search(r"^ABI_VERSION = (\d+)", native_init, re.M).group(1) == str(capi_abi_version())


def dynamic_symbols(path: Path, which: str) -> list[str]:
    if NM is None:
        pytest.skip("nm (binutils) is not installed")
    result = subprocess.run([NM, "-D", "-C", f"--{which}-only", str(path)], capture_output=True, text=True, check=True)
    # Lines: "<address> <type> <name>" or, undefined, "<type> <name>"; names may contain spaces when demangled.
    return [re.sub(r"^\s*(?:[0-9a-f]+\s+)?\w\s+", "", line) for line in result.stdout.splitlines() if line.strip()]


@KINDS
def test_exports_only_the_c_abi(kind):
    exported = dynamic_symbols(built(kind), "defined")
    assert exported and all(name.startswith("dlk_") for name in exported), \
        [name for name in exported if not name.startswith("dlk_")][:20]
    assert f"dlk_{kind}_last_error" in exported and f"dlk_{kind}_build_info" in exported


# Torch, c10, ATen, pybind11 or CPython API references: any would tie the binary to one torch/Python.
FORBIDDEN = re.compile(r"c10::|(?<![\w])at::|torch|pybind11|(?<![A-Za-z0-9])_?Py[A-Z_]")


def test_forbidden_pattern_catches_what_it_should():
    caught = ["c10::Error::Error()", "at::empty(...)", "torch::jit::x", "PyObject_Call", "_Py_Dealloc",
              "pybind11::handle::inc_ref()"]
    allowed = ["std::basic_string<char>::format::x", "memcpy@GLIBC_2.14", "cudaMemcpyAsync", "Copy"]
    assert all(FORBIDDEN.search(name) for name in caught)
    assert not any(FORBIDDEN.search(name) for name in allowed)


@KINDS
def test_references_no_torch_or_python_symbol(kind):
    undefined = dynamic_symbols(built(kind), "undefined")
    offenders = [name for name in undefined if FORBIDDEN.search(name)]
    assert not offenders, offenders[:20]
    # Nor a dynamic dependency on them (libtorch, libc10, libpython) or on a shared CUDA runtime.
    needed = subprocess.run(["readelf", "-d", str(LIBRARIES[kind])], capture_output=True, text=True).stdout
    assert not re.search(r"NEEDED.*\[(libtorch|libc10|libpython|libcudart)", needed), needed


def cuda_build_info() -> dict:
    return load_without_torch("cuda")["info"]


def fatbin_entries(path: Path) -> list[tuple[str, str]]:
    """(kind, arch) of every embedded cubin ("elf", e.g. "90a") and PTX ("ptx", e.g. "90").

    Without cuobjdump, reads the fatbinary container headers that nvcc embeds (magic 0xBA55ED50; each
    entry: kind 1 = PTX / 2 = ELF, header size, payload size, arch at +28, flags at +40 with 0x100000
    marking arch-specific "a" code). cuobjdump, when installed, is the authority."""
    if CUOBJDUMP:
        entries = []
        for flag, kind in (("--list-elf", "elf"), ("--list-ptx", "ptx")):
            listing = subprocess.run([CUOBJDUMP, flag, str(path)], capture_output=True, text=True, check=True).stdout
            entries += [(kind, arch) for arch in re.findall(r"\.sm_(\w+)\.(?:cubin|ptx)", listing)]
        return entries
    data = path.read_bytes()
    magic, entries, position = struct.pack("<I", 0xBA55ED50), [], 0
    while (start := data.find(magic, position)) >= 0:
        _, _, header_size, fatbin_size = struct.unpack_from("<IHHQ", data, start)
        entry, end = start + header_size, start + header_size + fatbin_size
        while entry < end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            arch, = struct.unpack_from("<I", data, entry + 28)
            flags, = struct.unpack_from("<Q", data, entry + 40)
            if kind in (1, 2):
                entries.append(("ptx" if kind == 1 else "elf", f"{arch}{'a' if flags & 0x100000 else ''}"))
            entry += entry_header + payload
        position = max(end, start + 4)
    return entries


def test_cuda_library_has_sass_for_each_arch_and_ptx():
    path = built("cuda")
    info = cuda_build_info()
    entries = fatbin_entries(path)
    assert entries, f"no CUDA code found in {path.name}"
    sass = {arch for kind, arch in entries if kind == "elf"}
    ptx = {arch for kind, arch in entries if kind == "ptx"}
    missing = [arch for arch in info["cuda_archs"] if arch not in sass]
    assert not missing, f"no SASS for {missing} (found {sorted(sass)}); build info {info}"
    assert info["ptx"] in ptx, f"no PTX for compute_{info['ptx']} (found {sorted(ptx)})"
    # Every file's kernels are compiled for every arch: as many cubins of each requested arch.
    per_arch = {arch: sum(1 for kind, a in entries if kind == "elf" and a == arch) for arch in info["cuda_archs"]}
    assert len(set(per_arch.values())) == 1, per_arch


def test_cpu_library_is_used_by_the_python_loader():
    """dlkernels._native finds, checks and describes the same library (torch imported here is fine)."""
    built("cpu")
    from dlkernels import _native

    assert _native.has_cpu_lib()
    assert _native.build_info()["cpu"]["abi"] == capi_abi_version()
    lib = _native.cpu_lib()
    assert lib.path == LIBRARIES["cpu"] and isinstance(lib, ctypes.CDLL)


def test_cpu_library_follows_torch_thread_count():
    """The library's own OpenMP runtime gets torch.get_num_threads() (torch.set_num_threads cannot reach it)."""
    built("cpu")
    import torch

    from dlkernels import _native

    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            _native.cpu_lib()
            assert _native._cpu_threads[0] == threads
    finally:
        torch.set_num_threads(before)


BUILD_SCRIPT_WITHOUT_TORCH = """
import importlib.util, sys
from pathlib import Path
sys.modules["torch"] = None  # any `import torch` now raises ImportError
spec = importlib.util.spec_from_file_location("dlk_build", sys.argv[1])
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)
out = Path(sys.argv[2])
print(build.ninja_file(out, out / "lib", "g++", Path("/opt/cuda/bin/nvcc"), build.parse_archs("80;90a")))
"""


def test_build_script_needs_no_torch_and_asks_for_sass_and_forward_ptx(tmp_path):
    result = subprocess.run([sys.executable, "-c", BUILD_SCRIPT_WITHOUT_TORCH, str(ROOT / "csrc" / "build.py"),
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    ninja = result.stdout
    assert "-gencode=arch=compute_80,code=sm_80" in ninja and "-gencode=arch=compute_90a,code=sm_90a" in ninja
    # PTX of the highest arch without its "a": arch-specific PTX would not JIT on newer GPUs.
    assert "-gencode=arch=compute_90,code=compute_90" in ninja and "code=compute_90a" not in ninja
    assert "-cudart static" in ninja and ninja.count("--version-script") == 2
    for source in ("cpu/pool2d.cpp", "capi/pool2d_cpu.cpp", "cuda/pool2d.cu", "capi/pool2d_cuda.cpp"):
        assert f"{ROOT / 'csrc' / source}" in ninja, source
