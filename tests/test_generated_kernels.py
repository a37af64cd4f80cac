"""The generated files of the compiled core (csrc/cuda/generate_kernels.py) are current: every whole file
and every BEGIN/END section is what the generator writes from its lists today, no instantiation file
is left over from an older list, and no hand-written switch repeats a list the generator owns."""
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA = ROOT / "csrc" / "cuda"
GENERATOR = CUDA / "generate_kernels.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_kernels", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = load_generator()
EXPECTED = generator.expected_files()


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_file_is_current(path):
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run python {generator.SCRIPT}"
    assert path.read_text() == EXPECTED[path], (
        f"{path.relative_to(ROOT)} differs from what {generator.SCRIPT} writes: edit the lists in the "
        f"generator (or the hand-written part outside the markers) and rerun it")


def test_check_mode_reports_no_stale_file():
    assert generator.main(["--check"]) == 0


def test_every_generated_file_is_still_generated():
    """A file carrying the generated header that the generator no longer writes (a dtype or family
    dropped from the lists) would still be compiled by the build's glob."""
    header = generator.header_comment()
    on_disk = {p for p in CUDA.glob("*.cu") if p.read_text().startswith(header)}
    assert on_disk == {p for p in generator.whole_files() if p.suffix == ".cu"}


def test_instantiation_files_follow_the_lists():
    families = {"attention_fwd": generator.ATTENTION_DTYPES, "attention_bwd": generator.ATTENTION_DTYPES,
                "conv2d_gemm": generator.CONV_GEMM_DTYPES}
    for family, dtypes in families.items():
        on_disk = {p.stem[len(family) + 1:] for p in CUDA.glob(f"{family}_*.cu")}
        on_disk &= set(generator.CTYPES)  # attention_fwd_sm90.cu is not a dtype file
        assert on_disk == set(dtypes), family


def test_switches_use_the_generated_lists():
    """The head dims appear as numbers only in generated text: a hand-written `case 96:` or a
    `<T, 128>` instantiation outside the markers would bypass the list."""
    section = re.compile(re.escape(generator.BEGIN) + ".*?" + re.escape(generator.END), re.S)
    hand_written = {p: section.sub("", p.read_text()) for p in CUDA.glob("*.cu*")
                    if p not in EXPECTED or p.suffix == ".cuh" or p.name == "attention_fwd_sm90.cu"}
    for path, text in hand_written.items():
        for d in generator.ATTENTION_HEAD_DIMS:
            assert not re.search(rf"case {d}:|launch_attention_forward(_sm90)?<\w+, {d}>", text), (path.name, d)


def test_wgmma_wrappers_cover_every_n():
    text = (CUDA / "wgmma.cuh").read_text()
    for n in generator.WGMMA_N:
        for ptx_type in generator.WGMMA_TYPES.values():
            assert f"m64n{n}k16.f32.{ptx_type}.{ptx_type}" in text


def test_a_stale_section_is_detected(tmp_path):
    """The check compares text exactly: one changed line inside a section makes the file stale."""
    path = CUDA / "attention_fwd_kernel.cuh"
    stale = EXPECTED[path].replace("launch_attention_forward<__half, 64>", "launch_attention_forward<__half, 48>")
    assert stale != EXPECTED[path]
    copy = tmp_path / path.name
    copy.write_text(stale)
    assert generator.with_section(copy, copy.read_text(), generator.sections()[path]) == EXPECTED[path]


def test_a_header_without_markers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="markers"):
        generator.with_section(tmp_path / "x.cuh", "// no markers\n", "int x;\n")


def test_every_conv_gemm_has_a_fallback_tile():
    """available_tiles offers the list's last tile to every GEMM: it must be instantiated for every
    math, element size and loader, or the planner could pick a tile with no kernel."""
    last = generator.CONV_TILES[-1]
    assert last["tensor_cores"] and not last["fast_loader_only"] and set(last["simt_bytes"]) == {4, 8}
