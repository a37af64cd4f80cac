"""Collect bench_*.py here (the project's pytest settings only name test_*.py files), and the one
timing routine every bench_<op>.py shares."""
import pytest
import torch


def pytest_collect_file(file_path, parent):
    # A file named on the command line is already collected by pytest itself.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def case_id(case) -> str:
    return "-".join([case.op, case.workload.replace(" ", "_"), "x".join(map(str, case.shape)), case.dtype,
                     case.layout])


@pytest.fixture
def bench_case(benchmark):
    """bench_case(module, case, direction, backend): times one benchmark case under pytest-benchmark.

    Each round flushes L2 in an untimed setup, then times one call up to torch.cuda.synchronize(),
    so wall-clock times include the launch overhead CUDA events would hide.
    """
    from dlkernels.bench import timing

    flush_buffer = torch.empty(timing.L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")

    def run_case(module, case, direction, backend):
        fn = module.build(case, backend, direction, "cuda")

        def flush_l2():
            flush_buffer.zero_()
            torch.cuda.synchronize()

        def run():
            fn()
            torch.cuda.synchronize()

        benchmark.group = f"{case.describe()} {direction}"
        benchmark.extra_info.update(bytes=module.ideal_bytes(case, direction), bytes_counted=module.BYTES_COUNTED)
        benchmark.pedantic(run, setup=flush_l2, warmup_rounds=10, rounds=100, iterations=1)

    return run_case
