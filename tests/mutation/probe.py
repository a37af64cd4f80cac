"""A deliberately small test for the end-to-end check of the mutation routine
(tests/test_mutation_catalogue.py): it kills pool2d-ops-ceil-rule and cannot see conv2d-ops-same-padding.
Not collected by `pytest tests` (its name does not start with test_); the routine runs it by path."""
import torch
import torch.nn.functional as F

import dlkernels


def test_ceil_mode_drops_a_window_that_starts_in_the_right_padding():
    # size 5, kernel 2, stride 2, padding 1: the fourth window would start at 6 = size + padding, which
    # ATen's ceil_mode rule drops, so the output is 3 x 3.
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    ours = dlkernels.avg_pool2d(x, 2, 2, 1, ceil_mode=True, backend="reference")
    expected = F.avg_pool2d(x, 2, 2, 1, ceil_mode=True)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
