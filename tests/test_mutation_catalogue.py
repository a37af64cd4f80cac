"""The mutation catalogue (tests/mutation/catalogue.py) stays in step with the source, and the routine
(tests/mutation/run.py) classifies mutants correctly. The full run is `make mutation`, not part of CI."""
import json
from collections import Counter

import pytest

from mutation import run as mutation_run
from mutation.catalogue import FAMILIES, FAMILY_TESTS, MUTANTS, ROOT, by_id


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_mutant_matches_the_source_exactly_once(mutant):
    text = (ROOT / mutant.file).read_text()
    assert text.count(mutant.search) == 1, f"{mutant.id}: the source of {mutant.file} drifted; update the catalogue"
    assert mutant.apply(text) != text


def test_catalogue_shape():
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids)), "mutant ids must be unique"
    per_family = Counter(m.family for m in MUTANTS)
    assert set(per_family) == set(FAMILIES) and min(per_family.values()) >= 6, per_family
    for family in FAMILIES:  # each family's bugs reach at least two of C++, Triton and Python
        assert len({mutation_run.layer(m.file) for m in MUTANTS if m.family == family}) >= 2, family
    # The seven classes of bug that got through issue #17's audit.
    assert len({m.issue for m in MUTANTS if m.issue}) == 7
    for family in FAMILIES:
        assert (ROOT / FAMILY_TESTS[family][-1]).is_file(), f"the main test file of {family} is missing"


def test_apply_refuses_a_drifted_source():
    mutant = by_id("pool2d-cpu-nan")
    with pytest.raises(ValueError, match="occurs 0 times"):
        mutant.apply("int main() {}\n")
    with pytest.raises(ValueError, match="occurs 2 times"):
        mutant.apply(mutant.search + "\n" + mutant.search)


@pytest.mark.slow
def test_routine_end_to_end(tmp_path):
    """One worker, two Python mutants against tests/mutation/probe.py: one killed, one survived, the file
    restored afterwards, the JSON report and README section generated from it."""
    if not (ROOT / "dlkernels" / "lib" / "libdlk_cpu.so").is_file():
        pytest.skip("needs the built C++ reference library (make build)")
    report = tmp_path / "results.json"
    mutation_run.main(["--mutant", "pool2d-ops-ceil-rule", "conv2d-ops-same-padding", "--no-baseline",
                       "--prebuilt-lib", "--tests", "tests/mutation/probe.py", "--timeout", "300",
                       "--workdir", str(tmp_path / "work"), "--json", str(report)])
    data = json.loads(report.read_text())
    statuses = {r["id"]: r["status"] for r in data["results"]}
    assert statuses == {"pool2d-ops-ceil-rule": "killed", "conv2d-ops-same-padding": "survived"}, data["results"]
    assert "probe.py::test_ceil_mode" in data["results"][0]["detail"]
    assert (data["killed"], data["counted"]) == (1, 2)
    for mutant_id in statuses:  # restored in the worker's copy
        mutant = by_id(mutant_id)
        worker_copy = tmp_path / "work" / "worker0" / mutant.file
        assert worker_copy.read_text() == (ROOT / mutant.file).read_text()
    section = mutation_run.readme_section(data)
    assert section.startswith(mutation_run.README_HEADING) and "`conv2d-ops-same-padding`" in section
    readme = tmp_path / "README.md"
    readme.write_text("# dlkernels\n\n## Build\n\ntext\n")
    mutation_run.update_readme(section, readme)
    mutation_run.update_readme(section, readme)  # replacing the section, not appending a second one
    assert readme.read_text().count(mutation_run.README_HEADING) == 1


def test_failed_tests_reads_node_ids_with_spaces():
    """Baseline failures are deselected by node id; case ids hold spaces and brackets."""
    output = ("....F\n=== short test summary info ===\n"
              "FAILED tests/test_cases_pool2d.py::test_boundary_case[avg_pool2d(shape=(1, 2, 6, 5),k=2)] - assert 1\n"
              "ERROR tests/test_rnn.py::test_cells - RuntimeError: boom\n1 failed, 1 error in 2.0s\n")
    assert mutation_run.failed_tests(output) == [
        "tests/test_cases_pool2d.py::test_boundary_case[avg_pool2d(shape=(1, 2, 6, 5),k=2)]",
        "tests/test_rnn.py::test_cells"]
    assert mutation_run.first_failure(output).startswith("FAILED tests/test_cases_pool2d.py")
