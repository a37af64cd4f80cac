"""Collect bench_*.py here: the project's pytest settings only name test_*.py files."""
import pytest


def pytest_collect_file(file_path, parent):
    # A file named on the command line is already collected by pytest itself.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
