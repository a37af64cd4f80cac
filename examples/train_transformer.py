"""Train a Transformer from dlkernels.models: TransformerLM or GPT on a character stream, BERT with masked-LM on
padded batches (varlen attention), or ViT on the digits upsampled to 32x32.

    python examples/train_transformer.py --model gpt --steps 300
    python examples/train_transformer.py --model vit
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Log, autocast, digits, parser  # noqa: E402
from train_rnn import text_corpus  # noqa: E402

import dlkernels.models as M  # noqa: E402


def main():
    p = parser(__doc__.split("\n\n")[0], steps=200, batch=16)
    p.add_argument("--model", default="gpt", choices=["transformer-lm", "gpt", "bert", "vit"])
    p.add_argument("--seq", type=int, default=64)
    args = p.parse_args()
    dev, kw, log = args.device, dict(impl=args.impl, backend=args.backend), Log(args)
    data = torch.tensor(list(text_corpus()), dtype=torch.long, device=dev)
    small = dict(d_model=128, dropout=0.0)
    if args.model == "transformer-lm":
        model = M.TransformerLM(ntoken=128, nhead=4, d_hid=256, nlayers=2, **small, **kw)
    elif args.model == "gpt":
        model = M.GPT(vocab_size=128, block_size=args.seq, n_layer=2, n_head=4, **small, **kw)
    elif args.model == "bert":
        model = M.BERT(vocab_size=129, max_len=args.seq, n_layer=2, n_head=4, d_ff=256, **small, **kw)  # 128 = [MASK]
    else:
        model = M.ViT(image_size=32, patch_size=4, num_layers=2, num_heads=4, hidden_dim=128, mlp_dim=256,
                      num_classes=10, **kw)
        (x, y), _ = digits(32, dev)
        x = x.expand(-1, 3, -1, -1)
    model = model.to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(args.steps):
        with autocast(args):
            if args.model == "vit":
                index = torch.randint(0, len(y), (args.batch,), device=dev)
                loss = F.cross_entropy(model(x[index].contiguous()).float(), y[index])
            else:
                starts = torch.randint(0, len(data) - args.seq - 1, (args.batch,), device=dev)
                chunk = data[starts[:, None] + torch.arange(args.seq + 1, device=dev)]  # (N, T+1)
                if args.model == "gpt":
                    loss = F.cross_entropy(model(chunk[:, :-1]).flatten(0, 1).float(), chunk[:, 1:].flatten())
                elif args.model == "transformer-lm":  # sequence-first, log-probabilities
                    out = model(chunk[:, :-1].t().contiguous())
                    loss = F.nll_loss(out.flatten(0, 1).float(), chunk[:, 1:].t().flatten())
                else:  # BERT: right-padded sequences, 15% of the valid tokens masked
                    tokens = chunk[:, :-1]
                    lengths = torch.randint(args.seq // 2, args.seq + 1, (args.batch,), device=dev)
                    valid = torch.arange(args.seq, device=dev)[None] < lengths[:, None]
                    masked = (torch.rand(tokens.shape, device=dev) < 0.15) & valid
                    _, logits = model(tokens.masked_fill(masked, 128), valid.long())
                    loss = F.cross_entropy(logits[masked].float(), tokens[masked]) if masked.any() else \
                        logits.sum() * 0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log(step, loss=loss.item())


if __name__ == "__main__":
    main()
