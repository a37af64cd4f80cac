"""LSTM / GRU drop-ins: torch.nn.LSTM, GRU, LSTMCell and GRUCell with their constructor arguments,
parameters and state_dict keys (weight_ih_l0, ..., *_reverse), plus keyword `backend`.

Forward signatures and outputs are torch's, including unbatched input, batch_first and
PackedSequence input. A packed batch is unpacked to a padded one with per-sequence lengths (the
kernels' lengths path), run in the packed (sorted) order as torch does, and packed again.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from dlkernels.ops.rnn import gru, gru_cell, lstm, lstm_cell


def _permute_states(states, permutation: Tensor | None):
    """Reorders the batch dimension of h (and c), as torch.nn.LSTM's permute_hidden does."""
    if permutation is None or states is None:
        return states
    if isinstance(states, Tensor):
        return states.index_select(1, permutation)
    return tuple(state.index_select(1, permutation) for state in states)


def _forward(module: nn.RNNBase, functional, input, hx):
    options = dict(num_layers=module.num_layers, bidirectional=module.bidirectional, dropout=float(module.dropout),
                   training=module.training, backend=module.backend)
    if not isinstance(input, PackedSequence):
        return functional(input, hx, module._flat_weights, batch_first=module.batch_first, **options)
    data, batch_sizes, sorted_indices, unsorted_indices = input
    # Padded in the packed (length-sorted) order, with the initial states brought into that order.
    padded, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes), batch_first=False)
    output, states = functional(padded, _permute_states(hx, sorted_indices), module._flat_weights,
                                batch_first=False, lengths=lengths, **options)
    packed = pack_padded_sequence(output, lengths, batch_first=False, enforce_sorted=True)
    output = PackedSequence(packed.data, batch_sizes, sorted_indices, unsorted_indices)
    return output, _permute_states(states, unsorted_indices)


class LSTM(nn.LSTM):
    """torch.nn.LSTM on our kernels: forward(input, hx=None) -> (output, (h_n, c_n)).

    Arguments as torch.nn.LSTM (input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None), plus keyword `backend`.
    proj_size > 0 is not supported.
    """

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        if self.proj_size > 0:
            raise NotImplementedError(f"dlkernels.nn.LSTM: proj_size > 0 (LSTM with projections) is not supported, "
                                      f"got proj_size={self.proj_size}; use torch.nn.LSTM")
        self.backend = backend

    def forward(self, input, hx: tuple[Tensor, Tensor] | None = None):
        return _forward(self, lstm, input, hx)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"


class GRU(nn.GRU):
    """torch.nn.GRU on our kernels: forward(input, hx=None) -> (output, h_n). Arguments as torch.nn.GRU,
    plus keyword `backend`."""

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend

    def forward(self, input, hx: Tensor | None = None):
        return _forward(self, gru, input, hx)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"


class LSTMCell(nn.LSTMCell):
    """torch.nn.LSTMCell on our fused step: forward(input, hx=None) -> (h', c')."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 backend: str = "auto"):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.backend = backend

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        h, c = (None, None) if hx is None else hx
        return lstm_cell(input, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                         backend=self.backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"


class GRUCell(nn.GRUCell):
    """torch.nn.GRUCell on our fused step: forward(input, hx=None) -> h'."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 backend: str = "auto"):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self.backend = backend

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, backend=self.backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"
