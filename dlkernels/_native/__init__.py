"""ctypes access to dlkernels' compiled core: dlkernels/lib/libdlk_cpu.so and libdlk_cuda.so.

The libraries (built by csrc/build.py, no torch or Python inside) export the flat C ABI of
csrc/capi/capi.h. This module loads them lazily, once, checks their ABI version and sets every
launcher's argtypes/restype at load (a ctypes call then costs about 0.5 µs). The family modules
(dlkernels/_native/<family>.py) mirror the `torch.ops.dlk_C.<entry>` ops on top of it.

API:
  cpu_lib() / cuda_lib()   the loaded library (a NativeLibrary); RuntimeError saying why when a
                           library is missing, stale (ABI version) or, for CUDA, not built.
                           cpu_lib() also passes torch.get_num_threads() on to the library's OpenMP
  has_cpu_lib() / has_cuda_lib()   whether that library can be loaded (never raises)
  build_info()             {"cpu": {...} or None, "cuda": {...} or None}: each library's own JSON
  declare(signatures)      {symbol: [ctypes arg types]}: launcher prototypes (restype is int);
                           applied to a library when it loads, or at once if it already has
  check(status, lib, what) raises RuntimeError with the library's last error when status != 0
  launch_cuda(fn, args, device_index, what)   calls fn(*args, stream) with the device current and
                           torch's current stream of that device, then checks the status

DLK_LIB_DIR overrides where the libraries are looked for (e.g. libraries built on another machine).
"""
from __future__ import annotations

import ctypes
import json
import os
import threading
from pathlib import Path

import torch

ABI_VERSION = 3  # must equal DLK_ABI_VERSION in csrc/capi/capi.h
LIB_DIR = Path(os.environ.get("DLK_LIB_DIR") or Path(__file__).resolve().parents[1] / "lib")
KINDS = ("cpu", "cuda")


class NativeLibrary(ctypes.CDLL):
    """A loaded libdlk_<kind>.so; `kind` is "cpu" or "cuda"."""

    def __init__(self, path: Path, kind: str):
        super().__init__(str(path))
        self.kind = kind
        self.path = path
        for name, restype in (("abi_version", ctypes.c_int), ("last_error", ctypes.c_char_p),
                              ("build_info", ctypes.c_char_p)):
            function = getattr(self, f"dlk_{kind}_{name}")
            function.argtypes, function.restype = [], restype
        if kind == "cpu":
            self.dlk_cpu_set_num_threads.argtypes, self.dlk_cpu_set_num_threads.restype = [ctypes.c_int], None
        self._last_error = getattr(self, f"dlk_{kind}_last_error")

    def last_error(self) -> str:
        return (self._last_error() or b"").decode(errors="replace")

    def build_info(self) -> dict:
        return json.loads(getattr(self, f"dlk_{self.kind}_build_info")())


_libraries: dict[str, NativeLibrary] = {}
_load_errors: dict[str, str] = {}
_signatures: dict[str, list] = {}
_lock = threading.Lock()


def _apply_signatures(lib: NativeLibrary, signatures: dict[str, list]) -> None:
    suffix = f"_{lib.kind}"
    for symbol, argtypes in signatures.items():
        if symbol.endswith(suffix):
            # A missing symbol means the library predates this Python code: fail at load, loudly.
            function = getattr(lib, symbol)
            function.argtypes, function.restype = argtypes, ctypes.c_int


def declare(signatures: dict[str, list]) -> None:
    """Registers launcher prototypes; symbols ending in _cpu go to the CPU library, _cuda to CUDA."""
    with _lock:
        _signatures.update(signatures)
        for lib in _libraries.values():
            _apply_signatures(lib, signatures)


def _load(kind: str) -> NativeLibrary:
    with _lock:
        if kind in _libraries:
            return _libraries[kind]
        if kind in _load_errors:
            raise RuntimeError(_load_errors[kind])
        path = LIB_DIR / f"libdlk_{kind}.so"
        try:
            if not path.is_file():
                raise RuntimeError(f"{path} is missing: build it with `python csrc/build.py"
                                   f"{' --cuda on' if kind == 'cuda' else ''}`")
            try:
                lib = NativeLibrary(path, kind)
            except OSError as error:
                raise RuntimeError(f"{path} does not load: {error}") from None
            version = getattr(lib, f"dlk_{kind}_abi_version")()
            if version != ABI_VERSION:
                raise RuntimeError(f"{path} has C ABI version {version}, this dlkernels expects {ABI_VERSION}: "
                                   "rebuild it with `python csrc/build.py`")
            _apply_signatures(lib, _signatures)
        except (RuntimeError, AttributeError) as error:
            _load_errors[kind] = f"dlkernels: the native {kind.upper()} library is unusable: {error}"
            raise RuntimeError(_load_errors[kind]) from None
        _libraries[kind] = lib
        return lib


_cpu_threads = [0]  # what the CPU library was last told; see cpu_lib


def cpu_lib() -> NativeLibrary:
    """The CPU library, its OpenMP thread count kept equal to torch.get_num_threads(): it has its own
    OpenMP runtime, which torch.set_num_threads does not reach (and whose default, every core, costs
    hundreds of µs per call on a busy machine)."""
    lib = _libraries.get("cpu")
    if lib is None:
        lib = _load("cpu")
    threads = torch.get_num_threads()
    if threads != _cpu_threads[0]:
        lib.dlk_cpu_set_num_threads(threads)
        _cpu_threads[0] = threads
    return lib


def cuda_lib() -> NativeLibrary:
    lib = _libraries.get("cuda")
    return lib if lib is not None else _load("cuda")


def _loadable(kind: str) -> bool:
    try:
        _load(kind)
        return True
    except RuntimeError:
        return False


def has_cpu_lib() -> bool:
    return _loadable("cpu")


def has_cuda_lib() -> bool:
    return _loadable("cuda")


def build_info() -> dict:
    return {kind: _load(kind).build_info() if _loadable(kind) else None for kind in KINDS}


def check(status: int, lib: NativeLibrary, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"dlkernels {what} ({lib.kind}): {lib.last_error() or f'failed with status {status}'}")


def launch_cuda(function, args: tuple, device_index: int, what: str) -> None:
    """function(*args, stream) on torch's current stream of `device_index`, with that device current
    (the launchers query device properties and launch on the current device)."""
    previous = torch._C._cuda_getDevice()
    if previous != device_index:
        torch._C._cuda_setDevice(device_index)
    try:
        status = function(*args, torch._C._cuda_getCurrentRawStream(device_index))
    finally:
        if previous != device_index:
            torch._C._cuda_setDevice(previous)
    if status != 0:
        check(status, cuda_lib(), what)
