"""Recurrent reference models: RowLSTM / RowGRU (an image classified row by row) and a character-level LSTM LM."""
from __future__ import annotations

from torch import Tensor, nn

from dlkernels.models._layers import Layers


class RowRNN(nn.Module):
    """nn.LSTM (or GRU)(28, 128, num_layers=2, batch_first=True) over the 28 rows of a (N, 1, 28, 28) image; the
    last step's output -> linear(128 -> 10)."""

    def __init__(self, cell: str = "lstm", input_size: int = 28, hidden_size: int = 128, num_layers: int = 2,
                 num_classes: int = 10, *, impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        make = {"lstm": L.lstm, "gru": L.gru}[cell]
        self.rnn = make(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:  # (N, 1, H, W): the rows are the sequence
            x = x.squeeze(1)
        output, _ = self.rnn(x)
        return self.fc(output[:, -1])


def RowLSTM(**kwargs) -> RowRNN:  # noqa: N802 (a model name)
    return RowRNN("lstm", **kwargs)


def RowGRU(**kwargs) -> RowRNN:  # noqa: N802
    return RowRNN("gru", **kwargs)


class CharLSTM(nn.Module):
    """Character-level language model: embedding -> LSTM (seq-first) -> dropout -> linear decoder over the
    vocabulary. forward(tokens (T, N), hidden=None) -> (logits (T, N, V), hidden)."""

    def __init__(self, vocab_size: int = 128, embedding_dim: int = 64, hidden_size: int = 256, num_layers: int = 2,
                 dropout: float = 0.0, *, impl: str = "dlkernels", backend: str = "auto"):
        super().__init__()
        L = Layers(impl, backend)
        self.encoder = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = L.lstm(embedding_dim, hidden_size, num_layers=num_layers, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: Tensor, hidden=None):
        output, hidden = self.rnn(self.encoder(tokens), hidden)
        return self.decoder(self.drop(output)), hidden
