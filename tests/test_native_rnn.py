"""dlkernels._native.rnn: the LSTM / GRU layer recurrence over the C ABI (libdlk_cpu.so / libdlk_cuda.so).

Both entry points are compared, within tolerances, with the step math of dlk/rnn.h written in
float64 torch ops, differentiated by autograd.
"""

import pytest
import torch

from dlkernels import _native

if not _native.has_cpu_lib():
    pytest.skip("libdlk_cpu.so is not built (python csrc/build.py)", allow_module_level=True)

from dlkernels._native import rnn as native  # noqa: E402  (declares its symbols on import)


TOLERANCES = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-4, 1e-4), torch.bfloat16: (5e-2, 5e-2)}


def close(actual, expected, input_dtype=None):
    """Tolerances of the inputs' dtype: the float32 gradients of bfloat16 inputs carry bfloat16's error."""
    rtol, atol = TOLERANCES[input_dtype or actual.dtype]
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol)


def reference(cell, x_proj, w_hh, b_hh, h0, c0, lengths, reverse):
    """(h_all, h_n, c_n) by the step math of dlk/rnn.h, in the inputs' dtype (use float64)."""
    steps, batch = x_proj.shape[:2]
    h, c, outputs = h0, c0, [None] * steps
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        gh = h @ w_hh.t()
        if cell == "lstm":
            i, f, g, o = (x_proj[t] + gh).chunk(4, dim=1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
        else:
            gh = gh + b_hh
            xr, xz, xn = x_proj[t].chunk(3, dim=1)
            hr, hz, hn = gh.chunk(3, dim=1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h_new = (1 - z) * torch.tanh(xn + r * hn) + z * h
            c_new = c
        valid = torch.ones(batch, 1, dtype=torch.bool) if lengths is None else (t < lengths)[:, None]
        h = torch.where(valid, h_new, h)
        if cell == "lstm":
            c = torch.where(valid, c_new, c)
        outputs[t] = torch.where(valid, h_new, torch.zeros_like(h_new))
    return torch.stack(outputs), h, c


def randn(shape, dtype, device="cpu", scale=0.5):
    return (scale * torch.randn(shape, dtype=torch.float64)).to(device=device, dtype=dtype)


def layer_inputs(cell, steps, batch, hidden, dtype, device="cpu"):
    gates = native.GATES[cell]
    x_proj = randn((steps, batch, gates * hidden), dtype, device)
    w_hh = randn((gates * hidden, hidden), dtype, device)
    b_hh = randn((gates * hidden,), dtype, device) if cell == "gru" else None
    h0 = randn((batch, hidden), dtype, device)
    c0 = randn((batch, hidden), dtype, device) if cell == "lstm" else None
    return x_proj, w_hh, b_hh, h0, c0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "lengths"])
def test_forward_and_backward(cell, dtype, reverse, packed):
    steps, batch, hidden = 5, 3, 8
    x_proj, w_hh, b_hh, h0, c0 = layer_inputs(cell, steps, batch, hidden, dtype)
    lengths = torch.tensor([5, 2, 4], dtype=torch.int32) if packed else None
    h_all, c_all, h_n, c_n, saved = native.rnn_layer_forward(cell, x_proj, w_hh, b_hh, h0, c0, lengths, reverse, True)
    lstm = cell == "lstm"
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert saved.shape == (steps, batch, 4 * hidden) and saved.dtype == acc
    assert c_all.shape == ((steps, batch, hidden) if lstm else (0,))

    leaves = [t.double().requires_grad_() if t is not None else None for t in (x_proj, w_hh, b_hh, h0, c0)]
    expected_h_all, expected_h_n, expected_c_n = reference(cell, *leaves, lengths, reverse)
    close(h_all, expected_h_all)
    close(h_n, expected_h_n)
    if lstm:
        close(c_n, expected_c_n)

    grad_h_all, grad_h_n = randn(h_all.shape, dtype), randn(h_n.shape, dtype)
    grad_c_n = randn(h_n.shape, dtype) if lstm else None
    grads = native.rnn_layer_backward(cell, grad_h_all, grad_h_n, grad_c_n, w_hh, h0, c0, h_all, c_all, saved,
                                      lengths, reverse)
    grad_x_proj, grad_gh, grad_h0, grad_c0 = grads
    loss = (expected_h_all * grad_h_all.double()).sum() + (expected_h_n * grad_h_n.double()).sum()
    if lstm:
        loss = loss + (expected_c_n * grad_c_n.double()).sum()
    wanted = [t for t in leaves if t is not None]
    expected = dict(zip(["x_proj", "w_hh", *(["b_hh"] if not lstm else []), "h0", *(["c0"] if lstm else [])],
                        torch.autograd.grad(loss, wanted)))
    close(grad_x_proj, expected["x_proj"], dtype)
    close(grad_h0, expected["h0"])
    if lstm:
        close(grad_c0, expected["c0"])
        assert grad_gh.numel() == 0
    else:  # grad_gh is d loss / d (h W_hh^T + b_hh) per step: summed over steps and batch it is grad b_hh
        close(grad_gh.sum(dim=(0, 1)), expected["b_hh"], dtype)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_inference_and_absent_gradients(cell):
    x_proj, w_hh, b_hh, h0, c0 = layer_inputs(cell, 4, 2, 8, torch.float64)
    h_all, c_all, h_n, c_n, saved = native.rnn_layer_forward(cell, x_proj, w_hh, b_hh, h0, c0, None, False, False)
    assert saved.numel() == 0
    trained = native.rnn_layer_forward(cell, x_proj, w_hh, b_hh, h0, c0, None, False, True)
    assert torch.equal(h_all, trained[0]) and torch.equal(h_n, trained[2])
    # With no incoming gradient at all, every gradient is zero.
    grads = native.rnn_layer_backward(cell, None, None, None, w_hh, h0, c0, *trained[:2], trained[4], None, False)
    assert all(not g.any() for g in grads)


def test_checks_before_the_kernel():
    x_proj, w_hh, b_hh, h0, c0 = layer_inputs("lstm", 3, 2, 4, torch.float32)
    with pytest.raises(RuntimeError, match='cell must be "lstm" or "gru"'):
        native.rnn_layer_forward("rnn", x_proj, w_hh, None, h0, c0, None, False, True)
    with pytest.raises(RuntimeError, match="c0 is required"):
        native.rnn_layer_forward("lstm", x_proj, w_hh, None, h0, None, None, False, True)
    with pytest.raises(RuntimeError, match="takes no b_hh"):
        native.rnn_layer_forward("lstm", x_proj, w_hh, torch.zeros(16), h0, c0, None, False, True)
    with pytest.raises(RuntimeError, match="w_hh must have shape"):
        native.rnn_layer_forward("lstm", x_proj, w_hh[:8], None, h0, c0, None, False, True)
    h_all, c_all, _, _, saved = native.rnn_layer_forward("lstm", x_proj, w_hh, None, h0, c0, None, False, False)
    with pytest.raises(RuntimeError, match="saved is empty"):
        native.rnn_layer_backward("lstm", None, None, None, w_hh, h0, c0, h_all, c_all, saved, None, False)


def test_cpu_library_checks_lengths():
    """lengths that would index out of bounds are refused by the library, not followed."""
    x_proj, w_hh, b_hh, h0, c0 = layer_inputs("gru", 3, 2, 4, torch.float32)
    with pytest.raises(RuntimeError, match=r"lengths\[1\] = 4 is outside \[1, 3\]"):
        native.rnn_layer_forward("gru", x_proj, w_hh, b_hh, h0, c0, torch.tensor([3, 4], dtype=torch.int32), False,
                                 True)


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.cuda
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_cuda_matches_reference(cell, dtype):
    steps, batch, hidden = 6, 5, 64
    x_proj, w_hh, b_hh, h0, c0 = layer_inputs(cell, steps, batch, hidden, dtype, "cuda")
    lengths = torch.tensor([6, 3, 1, 6, 2], dtype=torch.int32, device="cuda")
    h_all, c_all, h_n, c_n, saved = native.rnn_layer_forward(cell, x_proj, w_hh, b_hh, h0, c0, lengths, True, True)
    leaves = [t.double().cpu() if t is not None else None for t in (x_proj, w_hh, b_hh, h0, c0)]
    expected_h_all, expected_h_n, _ = reference(cell, *leaves, lengths.cpu(), True)
    torch.testing.assert_close(h_all.cpu(), expected_h_all.to(dtype), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(h_n.cpu(), expected_h_n.to(dtype), rtol=2e-2, atol=2e-2)
    grads = native.rnn_layer_backward(cell, torch.ones_like(h_all), None, None, w_hh, h0, c0, h_all, c_all, saved,
                                      lengths, True)
    cpu = native.rnn_layer_backward(cell, torch.ones_like(h_all).cpu(), None, None, w_hh.cpu(), h0.cpu(),
                                    None if c0 is None else c0.cpu(), h_all.cpu(), c_all.cpu(), saved.cpu(),
                                    lengths.cpu(), True)
    for actual, expected in zip(grads, cpu):
        torch.testing.assert_close(actual.cpu(), expected, rtol=3e-2, atol=3e-2)
