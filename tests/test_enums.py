"""dlkernels/_enums.py mirrors the C++ mode enums of csrc/include/dlk/*.h: the file is what
csrc/cuda/generate_kernels.py writes from the headers today, and a C++ compiler agrees with every
value in it (so a parser slip in the generator cannot hide behind the first check)."""
import importlib.util
import pathlib
import shutil
import subprocess

import pytest

from dlkernels import _enums

ROOT = pathlib.Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "csrc" / "cuda" / "generate_kernels.py"
CXX = shutil.which("g++") or shutil.which("c++")


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_kernels", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = load_generator()


def cpp_enums():
    """(header, enum name, [(C++ enumerator, value)]) as the generator reads them."""
    return [(header, name, members) for header in generator.ENUM_HEADERS
            for name, _, members in generator.parse_enums((generator.INCLUDE / header).read_text())]


def test_enums_file_is_current():
    assert (ROOT / "dlkernels" / "_enums.py").read_text() == generator.enums_file(), (
        f"dlkernels/_enums.py is stale: run python {generator.SCRIPT}")


def test_every_cpp_enum_is_mirrored():
    for _, name, members in cpp_enums():
        python_enum = getattr(_enums, name)
        assert {m.name: m.value for m in python_enum} == {
            generator.python_member_name(cpp): value for cpp, value in members}, name


def test_head_dims_match_the_generator_lists():
    assert _enums.ATTENTION_HEAD_DIMS == generator.ATTENTION_HEAD_DIMS
    assert _enums.ATTENTION_SM90_HEAD_DIMS == generator.ATTENTION_SM90_HEAD_DIMS


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
def test_cpp_compiler_agrees_with_every_value(tmp_path):
    lines = [f'#include "dlk/{header}"' for header in generator.ENUM_HEADERS]
    for _, name, members in cpp_enums():
        python_enum = getattr(_enums, name)
        for cpp, _ in members:
            value = python_enum[generator.python_member_name(cpp)].value
            lines.append(f"static_assert(static_cast<int>(dlk::{name}::{cpp}) == {value}, \"{name}::{cpp}\");")
        lines.append(f"static_assert(sizeof(dlk::{name}) == sizeof(int), \"{name} is passed as an int\");")
    source = tmp_path / "enums_check.cpp"
    source.write_text("\n".join(lines) + "\n")
    command = [CXX, "-std=c++17", "-fsyntax-only", f"-I{ROOT / 'csrc' / 'include'}", str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("cpp, python", [("kAdaptiveAvg", "ADAPTIVE_AVG"), ("kBFloat16", "BFLOAT16"),
                                         ("kUnsupportedDType", "UNSUPPORTED_DTYPE"), ("kLSTM", "LSTM"),
                                         ("kOk", "OK")])
def test_member_names(cpp, python):
    assert generator.python_member_name(cpp) == python


def test_enum_without_explicit_values_is_refused():
    with pytest.raises(ValueError, match="explicit value"):
        generator.parse_enums("enum class Mode : int { kA = 0, kB };\n")
