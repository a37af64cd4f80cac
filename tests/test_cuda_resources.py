"""ptxas' resource report (--resource-usage) for every kernel at sm_80 and sm_90a, against what the
launch planners assume (no GPU needed).

- Tensor-core kernels (their PTX issues mma.sync / wgmma) do not spill, except those of KNOWN_SPILLS
  (each entry must still spill: the list only shrinks).
- Kernels the planners plan residency for (tests/cuda_planner_probe.cu prints the planners' own
  numbers: threads, dynamic shared memory and the blocks per SM they count on, e.g. kConvTiles'
  resident_* for the conv GEMMs, or else the __launch_bounds__ minimum from the PTX) fit that many
  blocks per SM in registers (ptxas' count) and in shared memory (the planner's bytes plus ptxas'
  static bytes plus the 1 KB per block the runtime reserves).

The compiles are shared with test_cuda_compile.py (tests/cuda_tools.py); the probe costs one host
compile. test_a_forced_spill_is_caught plants a fault (a doubled __launch_bounds__ minimum).
"""
import functools
import re
import subprocess

import pytest

import cuda_tools as cuda

pytestmark = pytest.mark.skipif(cuda.NVCC is None, reason="nvcc is not installed")

# Hardware (CUDA C++ Programming Guide, compute capabilities 8.0 and 9.0).
REGISTERS_PER_SM = 65536
REGISTER_UNIT_PER_WARP = 256
SMEM_PER_SM = {"80": 164 * 1024, "90a": 228 * 1024}
SMEM_PER_BLOCK = {"80": 163 * 1024, "90a": 227 * 1024}
RESERVED_SMEM_PER_BLOCK = 1024


def blocks_by_registers(registers: int, threads: int) -> int:
    per_warp = -(-registers * 32 // REGISTER_UNIT_PER_WARP) * REGISTER_UNIT_PER_WARP
    return (REGISTERS_PER_SM // per_warp) // -(-threads // 32)


def squeeze(name: str) -> str:
    return re.sub(r"\s+", "", name)


@functools.lru_cache(maxsize=None)
def planned_kernels() -> dict[str, tuple[int, int, int]]:
    """squeezed demangled kernel name -> (threads, dynamic smem bytes, blocks per SM, 0 if unplanned)."""
    exe = cuda.work_directory() / "cuda_planner_probe"
    command = [cuda.NVCC, "-std=c++17", "-O0", f"-I{cuda.ROOT / 'csrc' / 'include'}", f"-I{cuda.CUDA_DIR}",
               "-gencode=arch=compute_80,code=sm_80", str(cuda.ROOT / "tests" / "cuda_planner_probe.cu"),
               "-o", str(exe)]
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, f"{' '.join(command)}\n{built.stderr}"
    plans = {}
    for line in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines():
        name, threads, smem, blocks = line.split("\t")
        plans[squeeze(name)] = (int(threads), int(smem), int(blocks))
    return plans


def compiled_or_fail(source, arch):
    compiled = cuda.compile_source(source, arch)
    if not compiled.ok:
        pytest.fail(f"{source.name} does not compile for sm_{arch} (see test_cuda_compile.py):\n{compiled.failure()}")
    return compiled


def spilling_tensor_core_kernels(compiled) -> list[str]:
    return [f"{name}: {k.spill_stores} bytes spill stores, {k.spill_loads} bytes spill loads"
            for name, k in compiled.resources.items()
            if (k.spill_stores or k.spill_loads) and name in compiled.ptx
            and (compiled.ptx[name].issues("mma.sync") or compiled.ptx[name].issues("wgmma.mma_async"))]


# Tensor-core kernels known to spill a little, not fixed yet (issue #14): (source, arch) -> {regex on
# the demangled name: what}. Any other spill fails, and so does an entry that no longer spills.
KNOWN_SPILLS = {
    ("rnn.cu", "80"): {r"rnn::rnn_backward_kernel<": "4-8 bytes at 64-80 registers, reloaded once per time step"},
    ("rnn.cu", "90a"): {r"rnn::rnn_backward_kernel<": "4 bytes at 72 registers, reloaded once per time step"},
}


@pytest.mark.parametrize("arch", cuda.ARCHS)
@pytest.mark.parametrize("source", cuda.CUDA_SOURCES, ids=lambda p: p.name)
def test_tensor_core_kernels_do_not_spill(source, arch):
    compiled = compiled_or_fail(source, arch)
    demangled = cuda.demangle(compiled.resources)
    known = KNOWN_SPILLS.get((source.name, arch), {})
    problems, seen = [], set()
    for line in spilling_tensor_core_kernels(compiled):
        mangled = line.split(":")[0]
        known_as = [pattern for pattern in known if re.search(pattern, cuda.kernel_name(demangled[mangled]))]
        seen.update(known_as)
        if not known_as:
            problems.append(line)
    assert not problems, "\n".join(problems)
    stale = sorted(set(known) - seen)
    assert not stale, f"KNOWN_SPILLS lists {stale} for {source.name} sm_{arch}, which no longer spill: delete them"


def test_the_probe_finds_the_planned_kernels():
    names = planned_kernels()
    assert any("conv_gemm_kernel" in n for n in names) and any("attention_forward_sm90_kernel" in n for n in names)


@pytest.mark.parametrize("arch", cuda.ARCHS)
@pytest.mark.parametrize("source", cuda.CUDA_SOURCES, ids=lambda p: p.name)
def test_planned_residency_fits(source, arch):
    compiled = compiled_or_fail(source, arch)
    plans = planned_kernels()
    demangled = cuda.demangle(compiled.resources)
    problems, planned = [], 0
    for mangled, kernel in compiled.resources.items():
        name = squeeze(cuda.kernel_name(demangled[mangled]))
        if name not in plans or ("_sm90_" in name and arch != "90a"):  # the sm90 kernel is a trap on sm_80
            continue
        planned += 1
        threads, smem, blocks = plans[name]
        entry = compiled.ptx.get(mangled)
        if entry is not None and entry.max_threads is not None:
            assert threads <= entry.max_threads, f"{name}: launched with {threads} threads, bound {entry.max_threads}"
        blocks = blocks or (entry.min_blocks if entry is not None and entry.min_blocks else 1)
        by_registers = blocks_by_registers(kernel.registers, threads)
        block_smem = smem + kernel.static_smem
        if by_registers < blocks:
            problems.append(f"{name}: {kernel.registers} registers x {threads} threads fit {by_registers} "
                            f"blocks per SM, the planner counts on {blocks}")
        if block_smem > SMEM_PER_BLOCK[arch] or blocks * (block_smem + RESERVED_SMEM_PER_BLOCK) > SMEM_PER_SM[arch]:
            problems.append(f"{name}: {blocks} blocks of {block_smem} B shared memory do not fit sm_{arch}")
    if re.match(r"conv2d_gemm_|attention_fwd_sm90", source.name) and not (arch == "80" and "sm90" in source.name):
        assert planned == len(compiled.resources), f"{source.name}: kernels the probe does not list"
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_a_forced_spill_is_caught(tmp_path):
    # Two blocks of 256 threads per SM leave 128 registers a thread: the head-dim-64 kernel needs more.
    bounds = "__launch_bounds__(Sm90ForwardConfig<kHeadDim>::kThreads, 1)"
    compiled = cuda.compile_sm90_mutant(tmp_path, bounds, bounds.replace(", 1)", ", 2)"))
    assert spilling_tensor_core_kernels(compiled)


# The register table at the top of csrc/cuda/attention_bwd.cu: head dim, dkdv sm_80 / sm_90a, dq sm_80 / sm_90a.
BACKWARD_TABLE_ROW = re.compile(r"^//\s+(\d+)\s+\d+ x \d+(?:, two passes)?\s+(\d+)/(\d+)\s+[\d.]+ KiB\s+\d+ x \d+\s+"
                                r"(\d+)/(\d+)\s+[\d.]+ KiB$", re.M)
BACKWARD_TC_KERNEL = re.compile(r"dlk::attention_bwd::(dkdv|dq)_tc_kernel<__half, (\d+)\b.*>")


def test_attention_backward_register_table_is_current():
    """The table the tile choices are argued from (dK + dV or dQ plus S and dP under 255 registers) must be what
    ptxas gives today; it went stale once. Head dim 256's dkdv row is the larger of its two passes. The numbers
    are nvcc 13.0's (CI's); another release allocates differently, so it is skipped there."""
    release = subprocess.run([cuda.NVCC, "--version"], capture_output=True, text=True).stdout
    if "release 13.0" not in release:
        pytest.skip("the table records nvcc 13.0's register counts")
    cuda_dir = cuda.CUDA_SOURCES[0].parent
    table = {int(m[1]): tuple(int(x) for x in m.groups()[1:])
             for m in BACKWARD_TABLE_ROW.finditer((cuda_dir / "attention_bwd.cu").read_text())}
    assert sorted(table) == [32, 64, 96, 128, 256], f"could not read the table: {table}"
    measured: dict[tuple[str, int, str], int] = {}
    for arch in ("80", "90a"):
        compiled = compiled_or_fail(cuda_dir / "attention_bwd_f16.cu", arch)
        demangled = cuda.demangle(compiled.resources)
        for mangled, kernel in compiled.resources.items():
            match = BACKWARD_TC_KERNEL.fullmatch(cuda.kernel_name(demangled[mangled]))
            if match:
                key = (match[1], int(match[2]), arch)
                measured[key] = max(measured.get(key, 0), kernel.registers)
    actual = {d: tuple(measured[(kind, d, arch)] for kind in ("dkdv", "dq") for arch in ("80", "90a"))
              for d in table}
    assert table == actual, f"update the register table in attention_bwd.cu to ptxas' {actual}"
