"""Train RowLSTM / RowGRU on the digits' 28 rows, or the character-level LSTM language model on a packaged text.

    python examples/train_rnn.py --model RowLSTM --steps 300
    python examples/train_rnn.py --model CharLSTM --steps 200
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Log, autocast, digits, parser  # noqa: E402

import dlkernels.models as M  # noqa: E402


def text_corpus() -> bytes:
    """Some English that ships with Python: the standard library's own docstrings."""
    import argparse
    import json
    import typing
    return "\n".join(m.__doc__ or "" for m in (argparse, json, typing, torch.nn.Module)).encode("ascii", "ignore")


def main():
    p = parser(__doc__.split("\n\n")[0], steps=200, batch=32)
    p.add_argument("--model", default="RowLSTM", choices=["RowLSTM", "RowGRU", "CharLSTM"])
    p.add_argument("--seq", type=int, default=64)
    args = p.parse_args()
    log = Log(args)
    if args.model == "CharLSTM":
        data = torch.tensor(list(text_corpus()), dtype=torch.long, device=args.device)
        model = M.CharLSTM(vocab_size=128, impl=args.impl, backend=args.backend).to(args.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        for step in range(args.steps):
            starts = torch.randint(0, len(data) - args.seq - 1, (args.batch,), device=args.device)
            index = starts[None] + torch.arange(args.seq + 1, device=args.device)[:, None]  # (T+1, N)
            chunk = data[index]
            with autocast(args):
                logits, _ = model(chunk[:-1])
                loss = F.cross_entropy(logits.flatten(0, 1).float(), chunk[1:].flatten())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            log(step, loss=loss.item(), bits_per_char=loss.item() / 0.6931)
        return
    make = M.RowLSTM if args.model == "RowLSTM" else M.RowGRU
    model = make(impl=args.impl, backend=args.backend).to(args.device)
    (x, y), (x_test, y_test) = digits(28, args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(args.steps):
        index = torch.randint(0, len(y), (args.batch,), device=args.device)
        with autocast(args):
            loss = F.cross_entropy(model(x[index]).float(), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log(step, loss=loss.item())
    model.eval()
    with torch.no_grad(), autocast(args):
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(f"held-out accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
