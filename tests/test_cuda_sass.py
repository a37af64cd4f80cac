"""SASS assertions on every CUDA kernel at sm_80 and sm_90a (cuobjdump -sass; no GPU needed).

- Tensor-core kernels (their PTX issues mma.sync / wgmma) run on tensor cores: HMMA / DMMA, and
  HGMMA for wgmma; the families listed in TENSOR_CORE_FAMILIES must be such kernels. ptxas printed no
  performance advisory (C75xx: "wgmma.mma_async instructions are serialized ...").
- The fast paths (FAST_PATHS) copy through cp.async: LDGSTS inside their main loop.
- No local memory (LDL / STL: spills or indexed register arrays) inside any loop, except the known
  cases of KNOWN_LOCAL_MEMORY_IN_LOOPS (each entry must still happen: the list only shrinks).
- Copy pipelines are as deep as the code says: in the main loop (the outermost loop holding LDGSTS)
  the cp.async.wait_group immediate (SASS `DEPBAR.LE SB0, N`) is at least 1 everywhere (0 there means
  the ring is single-buffered: the block just requested is waited for before any compute), and for the
  kernels of PIPELINES exactly what their stage count, parsed from the source, makes it.

Each check is shown to catch a planted fault by the mutation tests at the end (they compile a mutated
copy of the Hopper attention forward), and test_the_depth_check_catches_the_single_buffered_ring
replays the fault this file was written for. The compiles are shared with test_cuda_compile.py
(tests/cuda_tools.py), so these tests add cuobjdump and parsing: about 1 s per source and arch.
"""
import pathlib
import re

import pytest

import cuda_tools as cuda

pytestmark = pytest.mark.skipif(cuda.NVCC is None or cuda.CUOBJDUMP is None, reason="nvcc or cuobjdump is missing")

# Kernel families (regex on the demangled name, template arguments included) that must be
# tensor-core kernels, and the SASS opcode that shows it, per arch. A deleted or #ifdef'd-out mma
# path leaves a kernel that still compiles: this catches it.
TENSOR_CORE_FAMILIES = {
    r"attention_forward_kernel<": {"80": "HMMA", "90a": "HMMA"},
    r"attention_bwd::(dkdv|dq)_tc_kernel<": {"80": "HMMA", "90a": "HMMA"},
    r"conv_gemm_kernel<.*TensorCoreMath": {"80": "HMMA", "90a": "HMMA"},
    r"attention_forward_sm90_kernel<": {"90a": "HGMMA"},  # on sm_80 its body is a trap
}
# The kernels whose operands come through cp.async (kFast = true is the conv GEMMs' last argument).
FAST_PATHS = {
    r"attention_forward_kernel<": ("80", "90a"),
    r"attention_bwd::(dkdv|dq)_tc_kernel<": ("80", "90a"),
    r"conv_gemm_kernel<.*, true> ?>$": ("80", "90a"),
    r"attention_forward_sm90_kernel<": ("90a",),
}
# Local memory inside loops that is known and not fixed yet (issue #14), per (source, arch): kernel regex
# -> what it is. The test still fails on any other kernel, and on an entry that no longer happens
# (delete it then), so this list only shrinks. "Division calls": ptxas keeps a few values in local
# memory across the calls to the slow-path subroutines of IEEE division (fp32/fp64 div.rn, reached
# only for denormal or huge operands) and of 64-bit integer division (the 64-bit index variants);
# the saves sit on the per-element path, not in a tensor-core main loop.
_POOL2D_DIVISION = "division calls in the avg/adaptive window arithmetic (per output element)"
KNOWN_LOCAL_MEMORY_IN_LOOPS = {
    ("pool2d.cu", "80"): {r"pool2d_backward_kernel<": _POOL2D_DIVISION, r"pool2d_forward_kernel<__nv_bfloat16": _POOL2D_DIVISION},
    ("pool2d.cu", "90a"): {r"pool2d_backward_kernel<": _POOL2D_DIVISION,
                           r"pool2d_forward_kernel<(__half|__nv_bfloat16)": "not diagnosed: no call in the loop"},
    ("rnn.cu", "80"): {r"rnn::rnn_backward_kernel<": "4-8 bytes spilled across the time-step loop (one reload per step)"},
    ("rnn.cu", "90a"): {r"rnn::rnn_backward_kernel<": "4 bytes spilled across the time-step loop (one reload per step)"},
    ("batch_norm.cu", "80"): {r"apply_channels_last_kernel<__half, ?8,": "not diagnosed: one LDL.64 in the vector loop"},
}
# family regex -> (file, its stage-count constexpr, the wait immediate the main loop uses for it).
PIPELINES = {
    r"attention_forward_sm90_kernel<": ("attention_fwd_sm90_kernel.cuh", "kStages", lambda stages: stages - 1),
    r"attention_forward_kernel<": ("attention_fwd_kernel.cuh", "kStages", lambda stages: stages - 1),
    r"conv_gemm_kernel<": ("conv2d_kernels.cuh", "kStages", lambda stages: stages - 2),
    r"winograd.*gemm": ("conv2d_winograd.cu", "kStages", lambda stages: stages - 2),
}


def kernel_names(compiled) -> dict[str, str]:
    """mangled -> demangled without the parameter list."""
    return {name: cuda.kernel_name(full) for name, full in cuda.demangle(compiled.sass).items()}


def matches(families, name: str) -> list:
    return [value for pattern, value in families.items() if re.search(pattern, name)]


def compiled_or_fail(source, arch):
    compiled = cuda.compile_source(source, arch)
    if not compiled.ok:
        pytest.fail(f"{source.name} does not compile for sm_{arch} (see test_cuda_compile.py):\n{compiled.failure()}")
    return compiled


def main_loops(code):
    """The outermost loops that issue cp.async copies."""
    copying = [body for body in cuda.loops(code) if cuda.has(body, "LDGSTS")]
    def inside(inner, outer):
        return outer is not inner and outer[0].address <= inner[0].address <= inner[-1].address <= outer[-1].address
    return [body for body in copying if not any(inside(body, other) for other in copying)]


def pipeline_problems(code, expected_wait: int | None) -> list[str]:
    """What is wrong with the copy waits of the main loops of one kernel's SASS."""
    problems = []
    for body in main_loops(code):
        depths = cuda.copy_wait_depths(body)
        if not depths:
            continue  # no wait in the loop: nothing is waited for at the top of an iteration
        where = f"main loop {body[0].address:#x}-{body[-1].address:#x} waits with DEPBAR.LE SB0, {min(depths)}"
        if min(depths) < 1:
            problems.append(f"{where}: nothing stays in flight while it computes (single-buffered ring)")
        elif expected_wait is not None and min(depths) != expected_wait:
            problems.append(f"{where}, the code's stage count makes it {expected_wait}")
    return problems


parametrize_sources = pytest.mark.parametrize("source", cuda.CUDA_SOURCES, ids=lambda p: p.name)
parametrize_archs = pytest.mark.parametrize("arch", cuda.ARCHS)


@parametrize_archs
@parametrize_sources
def test_tensor_core_kernels_use_tensor_cores(source, arch):
    compiled = compiled_or_fail(source, arch)
    names = kernel_names(compiled)
    problems = []
    for mangled, code in compiled.sass.items():
        entry = compiled.ptx[mangled]
        wanted = {opcodes[arch] for opcodes in matches(TENSOR_CORE_FAMILIES, names[mangled]) if arch in opcodes}
        if entry.issues("mma.sync"):
            wanted.add("DMMA" if re.search(r"mma\.sync\S*\.f64", entry.body) else "HMMA")
        if entry.issues("wgmma.mma_async"):
            wanted.add("HGMMA")
        missing = sorted(op for op in wanted if not cuda.has(code, op))
        if missing:
            problems.append(f"{names[mangled]}: no {', '.join(missing)} in its SASS")
    assert not problems, "\n".join(problems)


@parametrize_archs
@parametrize_sources
def test_ptxas_gives_no_performance_advisory(source, arch):
    compiled = compiled_or_fail(source, arch)
    notes = [note for kernel in compiled.resources.values() for note in kernel.notes]
    notes += [line for line in compiled.log.splitlines() if cuda.ADVISORY.search(line) and line.strip() not in notes]
    assert not notes, "\n".join(notes)


@parametrize_archs
@parametrize_sources
def test_fast_paths_copy_with_cp_async(source, arch):
    compiled = compiled_or_fail(source, arch)
    problems = []
    for mangled, name in kernel_names(compiled).items():
        if any(arch in archs for archs in matches(FAST_PATHS, name)) and not main_loops(compiled.sass[mangled]):
            problems.append(f"{name}: no LDGSTS (cp.async) inside a loop")
    assert not problems, "\n".join(problems)


@parametrize_archs
@parametrize_sources
def test_no_local_memory_in_loops(source, arch):
    compiled = compiled_or_fail(source, arch)
    names = kernel_names(compiled)
    known = KNOWN_LOCAL_MEMORY_IN_LOOPS.get((source.name, arch), {})
    problems, seen = [], set()
    for mangled, code in compiled.sass.items():
        for body in cuda.loops(code):
            local = [i for i in body if i.mnemonic in cuda.LOCAL_MEMORY_SASS]
            if local:
                known_as = [pattern for pattern in known if re.search(pattern, names[mangled])]
                seen.update(known_as)
                if not known_as:
                    problems.append(f"{names[mangled]}: {local[0].opcode} {local[0].operands} at "
                                    f"{local[0].address:#x} in the loop {body[0].address:#x}-{body[-1].address:#x}")
                break
    stale = sorted(set(known) - seen)
    assert not problems, "\n".join(problems)
    assert not stale, f"KNOWN_LOCAL_MEMORY_IN_LOOPS lists {stale} for {source.name} sm_{arch}, which now has none: delete them"


def expected_wait(name: str) -> int | None:
    for pattern, (file, constant, wait) in PIPELINES.items():
        if re.search(pattern, name):
            return wait(cuda.parse_constexpr(cuda.CUDA_DIR / file, constant))
    return None


@parametrize_archs
@parametrize_sources
def test_copy_pipelines_are_as_deep_as_the_code_says(source, arch):
    compiled = compiled_or_fail(source, arch)
    problems = []
    for mangled, name in kernel_names(compiled).items():
        problems += [f"{name}: {p}" for p in pipeline_problems(compiled.sass[mangled], expected_wait(name))]
    assert not problems, "\n".join(problems)


def test_the_stage_counts_parse():
    """The constants PIPELINES reads exist (parse_constexpr finds exactly one of each)."""
    for file, constant, wait in PIPELINES.values():
        assert wait(cuda.parse_constexpr(cuda.CUDA_DIR / file, constant)) >= 1, (file, constant)


# ---------------------------------------------------------------------------------------------
# The checks against planted faults: SASS of the kernel this file was written for, as it was, and
# mutated copies of the Hopper attention forward (one instantiation, fp16, head dim 64, sm_90a).

# Main-loop SASS of attention_forward_sm90_kernel<__half, 128> before the pipeline fix (nvcc 13.0): the
# loop waits for every group (DEPBAR.LE SB0, 0x0) at its top and refills at its end.
SINGLE_BUFFERED_LOOP = """
        /*6b80*/                   DEPBAR.LE SB0, 0x0 ;
        /*6d40*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*6e00*/                   WARPGROUP.ARRIVE ;
        /*6e10*/                   HGMMA.64x128x16.F32 R24, gdesc[UR8], RZ, !UPT, gsb0 ;
        /*7780*/                   WARPGROUP.DEPBAR.LE gsb0, 0x1 ;
        /*80b0*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*b150*/                   LDGSTS.E.BYPASS.128 [R121+0x8000], desc[UR10][R100.64], !P4 ;
        /*b2c0*/                   LDGDEPBAR ;
        /*b500*/              @!P0 BRA 0x6b80 ;
"""


def test_the_depth_check_catches_the_single_buffered_ring():
    code = cuda.parse_sass("Function : kernel\n" + SINGLE_BUFFERED_LOOP)["kernel"]
    assert len(main_loops(code)) == 1
    assert pipeline_problems(code, expected_wait=1) and "single-buffered" in pipeline_problems(code, 1)[0]
    fixed = cuda.parse_sass("Function : kernel\n" + SINGLE_BUFFERED_LOOP.replace("SB0, 0x0", "SB0, 0x1"))["kernel"]
    assert pipeline_problems(fixed, expected_wait=1) == []
    assert pipeline_problems(fixed, expected_wait=2)  # a deeper ring than the loop keeps: also caught


def test_the_advisory_check_reads_ptxas_notes():
    name = "_ZN3dlk4attn29attention_forward_sm90_kernelI6__halfLi64EEEvNS0_11ForwardArgsE"
    log = (f"ptxas info    : Compiling entry function '{name}' for 'sm_90a'\n"
           f"ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized due to "
           f"the presence of Extern calls in the function '{name}'.\n"
           f"ptxas info    : Used 168 registers, used 1 barriers\n")
    assert cuda.parse_ptxas_report(log)[name].notes


LOOP_WAIT = "cp_async_wait<Config::kStages - 1>();"


@pytest.mark.slow
def test_unmutated_copy_passes(tmp_path):
    """The control: the same one-instantiation build, unmutated, passes every check below."""
    compiled = cuda.compile_sm90_mutant(tmp_path, LOOP_WAIT, LOOP_WAIT)
    mangled, code = cuda.only_kernel(compiled)
    assert pipeline_problems(code, expected_wait(kernel_names(compiled)[mangled])) == []
    assert main_loops(code) and cuda.has(code, "HGMMA")
    assert not any(cuda.has(body, *cuda.LOCAL_MEMORY_SASS) for body in cuda.loops(code))


@pytest.mark.slow
def test_a_wait_for_every_group_fails_the_depth_check(tmp_path):
    compiled = cuda.compile_sm90_mutant(tmp_path, LOOP_WAIT, "cp_async_wait<0>();")
    mangled, code = cuda.only_kernel(compiled)
    assert pipeline_problems(code, expected_wait(kernel_names(compiled)[mangled]))


@pytest.mark.slow
def test_a_deleted_cp_async_path_fails_the_fast_path_check(tmp_path):
    # kAligned false: load_tile's element-wise fallback (registers, then st.shared) instead of cp.async.
    compiled = cuda.compile_sm90_mutant(tmp_path, "constexpr bool kAligned = true;", "constexpr bool kAligned = false;")
    _, code = cuda.only_kernel(compiled)
    assert not main_loops(code)
