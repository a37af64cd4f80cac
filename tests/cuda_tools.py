"""What the CUDA toolkit says about csrc/cuda: one nvcc compile per (source, arch) for the whole test
session, and parsers for its ptxas report, its PTX and its SASS. Needs no GPU.

tests/test_cuda_compile.py, tests/test_cuda_resources.py and tests/test_cuda_sass.py share the compiles
(CI has 2 cores and compiling every source for sm_80 and sm_90a is most of their cost): the first test
that asks for a (source, arch) compiles it with the flags of COMPILE_FLAGS and keeps the intermediate
files (-keep: the PTX); later ones read the cache. cuobjdump comes from the CUDA toolkit when it has
one, else from the copy Triton bundles (triton/backends/nvidia/bin).
"""
from __future__ import annotations

import atexit
import dataclasses
import functools
import glob
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
CUDA_SOURCES = sorted(CUDA_DIR.glob("*.cu"))
ARCHS = ["80", "90a"]
NVCC = shutil.which("nvcc")
# The compile test's flags (bare nvcc, every warning an error) plus the ptxas report.
COMPILE_FLAGS = ["-std=c++17", "-O3", f"-I{ROOT / 'csrc' / 'include'}", "-Werror=all-warnings", "--resource-usage"]


def find_tool(name: str) -> str | None:
    candidates = [shutil.which(name)]
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", name))
    candidates += sorted(glob.glob(f"/usr/local/cuda*/bin/{name}"), reverse=True)
    try:
        import triton

        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name))
    except ImportError:
        pass
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


CUOBJDUMP = find_tool("cuobjdump")
CXXFILT = shutil.which("c++filt")


# ---------------------------------------------------------------------------------------------
# Compiling.

@dataclasses.dataclass
class Compiled:
    source: pathlib.Path
    arch: str
    command: list[str]
    returncode: int
    log: str  # nvcc's stdout and stderr: the ptxas report and any warning
    directory: pathlib.Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def object(self) -> pathlib.Path:
        return self.directory / "out.o"

    def failure(self) -> str:
        return f"{' '.join(self.command)}\n{self.log}"

    @functools.cached_property
    def resources(self) -> dict[str, KernelResources]:
        return parse_ptxas_report(self.log)

    @functools.cached_property
    def ptx(self) -> dict[str, PtxEntry]:
        ptx_files = list(self.directory.glob("*.ptx"))
        assert len(ptx_files) == 1, f"expected one PTX file from -keep in {self.directory}, got {ptx_files}"
        return parse_ptx_entries(ptx_files[0].read_text())

    @functools.cached_property
    def sass(self) -> dict[str, list[Instruction]]:
        return parse_sass(run_cuobjdump(self.object))


_WORK = None
_CACHE: dict[tuple[str, str, tuple[str, ...]], Compiled] = {}


def work_directory() -> pathlib.Path:
    global _WORK
    if _WORK is None:
        _WORK = pathlib.Path(tempfile.mkdtemp(prefix="dlk_cuda_tests_"))
        atexit.register(shutil.rmtree, _WORK, ignore_errors=True)
    return _WORK


def compile_source(source: pathlib.Path, arch: str, extra_flags: tuple[str, ...] = ()) -> Compiled:
    """nvcc -c for one arch, cached for the session. Raises nothing: check .ok."""
    key = (str(source), arch, tuple(extra_flags))
    if key not in _CACHE:
        directory = pathlib.Path(tempfile.mkdtemp(prefix=f"{source.stem}_sm{arch}_", dir=work_directory()))
        command = [NVCC, *COMPILE_FLAGS, *extra_flags, f"-gencode=arch=compute_{arch},code=sm_{arch}", "-keep",
                   "-keep-dir", str(directory), "-c", str(source), "-o", str(directory / "out.o")]
        result = subprocess.run(command, capture_output=True, text=True)
        _CACHE[key] = Compiled(source, arch, command, result.returncode, result.stdout + result.stderr, directory)
    return _CACHE[key]


# ---------------------------------------------------------------------------------------------
# The ptxas report (--resource-usage, i.e. ptxas -v).

@dataclasses.dataclass
class KernelResources:
    name: str
    registers: int = 0
    static_smem: int = 0
    stack_frame: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)  # ptxas' performance advisories (C75xx)


ENTRY = re.compile(r"Compiling entry function '([^']+)'")
# "wgmma.mma_async instructions are serialized ..." (C7510 .. C7520) and the like: ptxas gave up the
# asynchrony the code asks for.
ADVISORY = re.compile(r"\(C75\d\d\)|Potential Performance Loss|serializ", re.I)


def parse_ptxas_report(log: str) -> dict[str, KernelResources]:
    kernels: dict[str, KernelResources] = {}
    current = None
    for line in log.splitlines():
        match = ENTRY.search(line)
        if match:
            current = kernels.setdefault(match.group(1), KernelResources(match.group(1)))
            continue
        if ADVISORY.search(line):
            # Advisories name their function; otherwise they belong to the entry being compiled.
            named = next((k for k in kernels.values() if k.name in line), current)
            if named is not None:
                named.notes.append(line.strip())
            continue
        if current is None:
            continue
        if "Function properties for" in line and current.name not in line:
            current = None  # a non-inlined device function: its frame is reported apart
            continue
        match = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if match:
            current.stack_frame, current.spill_stores, current.spill_loads = map(int, match.groups())
        match = re.search(r"Used (\d+) registers", line)
        if match:
            current.registers = int(match.group(1))
            smem = re.search(r"(\d+) bytes smem", line)
            current.static_smem = int(smem.group(1)) if smem else 0
    return kernels


# ---------------------------------------------------------------------------------------------
# PTX: launch bounds and what each entry asks of the hardware.

@dataclasses.dataclass
class PtxEntry:
    name: str
    body: str
    max_threads: int | None  # .maxntid (x * y * z): __launch_bounds__' first argument
    min_blocks: int | None   # .minnctapersm: its second

    def issues(self, instruction: str) -> bool:
        return re.search(rf"^\s*(@!?%\w+\s+)?{re.escape(instruction)}", self.body, re.M) is not None


def parse_ptx_entries(ptx: str) -> dict[str, PtxEntry]:
    entries = {}
    starts = list(re.finditer(r"^\s*(?:\.\w+\s+)*\.entry\s+(\w+)", ptx, re.M))
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(ptx)
        body = ptx[match.start():end]
        header = body[:body.find("{")] if "{" in body else body
        ntid = re.search(r"\.maxntid\s+(\d+)(?:,\s*(\d+))?(?:,\s*(\d+))?", header)
        max_threads = None
        if ntid:
            max_threads = 1
            for value in ntid.groups():
                max_threads *= int(value) if value else 1
        blocks = re.search(r"\.minnctapersm\s+(\d+)", header)
        entries[match.group(1)] = PtxEntry(match.group(1), body, max_threads, int(blocks.group(1)) if blocks else None)
    return entries


# ---------------------------------------------------------------------------------------------
# SASS (cuobjdump -sass).

@dataclasses.dataclass(frozen=True)
class Instruction:
    address: int
    predicate: str  # "@P0", "@!P1" or ""
    opcode: str     # with its modifiers: "DEPBAR.LE", "HGMMA.64x128x16.F32"
    operands: str

    @property
    def mnemonic(self) -> str:
        return self.opcode.split(".")[0]


SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")


def run_cuobjdump(path: pathlib.Path) -> str:
    result = subprocess.run([CUOBJDUMP, "-sass", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, f"cuobjdump -sass {path}: {result.stderr}"
    return result.stdout


def parse_sass(text: str) -> dict[str, list[Instruction]]:
    functions: dict[str, list[Instruction]] = {}
    current = None
    for line in text.splitlines():
        header = re.search(r"Function : (\S+)", line)
        if header:
            current = functions.setdefault(header.group(1), [])
            continue
        match = SASS_LINE.search(line)
        if match and current is not None:
            address, predicate, opcode, operands = match.groups()
            current.append(Instruction(int(address, 16), (predicate or "").strip(), opcode, operands.strip()))
    return functions


def branch_target(instruction: Instruction) -> int | None:
    if instruction.mnemonic not in ("BRA", "JMP"):
        return None
    match = re.search(r"0x([0-9a-f]+)\s*$", instruction.operands)
    return int(match.group(1), 16) if match else None


def loops(code: list[Instruction]) -> list[list[Instruction]]:
    """The body of every loop: from the target of a backward branch to the branch. A branch to itself
    (the trailing `BRA .` after EXIT) is no loop."""
    found = []
    for instruction in code:
        target = branch_target(instruction)
        if target is not None and target < instruction.address:
            found.append([i for i in code if target <= i.address <= instruction.address])
    return found


def has(code: list[Instruction], *mnemonics: str) -> bool:
    return any(i.mnemonic in mnemonics for i in code)


def copy_wait_depths(code: list[Instruction]) -> list[int]:
    """The N of every `DEPBAR.LE SB0, N`: cp.async.wait_group N (SB0 is the LDGSTS scoreboard)."""
    depths = []
    for i in code:
        if i.opcode == "DEPBAR.LE":
            match = re.match(r"SB0\s*,\s*(0x[0-9a-f]+|\d+)", i.operands)
            if match:
                depths.append(int(match.group(1), 0))
    return depths


TENSOR_CORE_SASS = ("HMMA", "HGMMA", "DMMA", "IMMA")
LOCAL_MEMORY_SASS = ("LDL", "STL")


# ---------------------------------------------------------------------------------------------
# Names.

def demangle(names) -> dict[str, str]:
    names = list(names)
    if CXXFILT is None or not names:
        return {n: n for n in names}
    result = subprocess.run([CXXFILT], input="\n".join(names), capture_output=True, text=True, check=True)
    return dict(zip(names, result.stdout.splitlines()))


def kernel_name(demangled: str) -> str:
    """A demangled kernel name without `void` and its parameter list: `dlk::(anonymous namespace)::k<T>(...)`
    becomes `dlk::{anonymous}::k<T>` (the namespace's parentheses are not where the parameters begin)."""
    return re.sub(r"^void\s+|\(.*$", "", demangled.replace("(anonymous namespace)", "{anonymous}"))


def parse_constexpr(path: pathlib.Path, name: str) -> int:
    """The value of the one `constexpr int <name> = <literal>;` in `path`."""
    values = re.findall(rf"constexpr int {re.escape(name)} = (\d+);", path.read_text())
    assert len(values) == 1, f"{path.name}: expected one 'constexpr int {name} = <literal>;', found {values}"
    return int(values[0])


# ---------------------------------------------------------------------------------------------
# Planted faults: a mutated copy of the Hopper attention forward, one instantiation (fp16, head dim
# 64) built for sm_90a, for the tests that show a check catches what it is for.

SM90_HEADER = CUDA_DIR / "attention_fwd_sm90_kernel.cuh"
SM90_ONE_INSTANTIATION = ('#include "attention_fwd_sm90_kernel.cuh"\n'
                          "namespace dlk {\nnamespace attn {\n"
                          "template Status launch_attention_forward_sm90<__half, 64>(const ForwardArgs&, "
                          "cudaStream_t);\n"
                          "}  // namespace attn\n}  // namespace dlk\n")


def compile_sm90_mutant(directory: pathlib.Path, old: str, new: str) -> Compiled:
    """Writes the header with `old` (which must occur once) replaced by `new` into `directory`, which
    the quoted include then finds first, and compiles the one instantiation against it."""
    text = SM90_HEADER.read_text()
    assert text.count(old) == 1, f"the mutation site {old!r} is not in {SM90_HEADER.name} once"
    (directory / SM90_HEADER.name).write_text(text.replace(old, new))
    source = directory / "mutant.cu"
    source.write_text(SM90_ONE_INSTANTIATION)
    compiled = compile_source(source, "90a", (f"-I{CUDA_DIR}",))
    assert compiled.ok, compiled.failure()
    return compiled


def only_kernel(compiled: Compiled) -> tuple[str, list[Instruction]]:
    (name, code), = compiled.sass.items()
    return name, code
