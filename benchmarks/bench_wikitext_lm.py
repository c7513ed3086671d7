"""Training speed of the 1-layer WikiText LM (dynamics.scan_snap.lm) against the same model built on
torch.nn.TransformerEncoderLayer, same batch shape, same sizes, both measured in this run.

Both models: token embedding -> one single-head causal self-attention block (post-LayerNorm
residual, as nn.TransformerEncoderLayer) -> linear decoder, dropout 0, SGD.  nn.TransformerEncoderLayer
always has an MLP, so the matched comparison gives dynamics.scan_snap.lm the same MLP width; the no-MLP
default of the experiments is timed as well.  Prints tokens per second (best of several repeats)
and the ratio dynamics.scan_snap.lm / nn.TransformerEncoderLayer (>= 1: at least as fast).

    .venv/bin/python benchmarks/bench_wikitext_lm.py [--vocab 2000] [--d-model 64] [--iters 20] [--rounds 6]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from dynamics.scan_snap.lm import LMSpec, TransformerLM


class TorchEncoderLM(nn.Module):
    """Embedding + nn.TransformerEncoderLayer (causal mask) + decoder, initialised like TransformerLM."""

    def __init__(self, vocab: int, d: int, d_ff: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layer = nn.TransformerEncoderLayer(d, nhead=1, dim_feedforward=d_ff, dropout=0.0, batch_first=True)
        self.decoder = nn.Linear(d, vocab)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(L)
        h = self.layer(self.embed(x), src_mask=mask, is_causal=True)
        logits = self.decoder(h)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """One SGD step (forward, backward, clipping, update) as in the experiments; warmed up."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step():
        opt.zero_grad(set_to_none=True)
        model.loss(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()

    for _ in range(3):
        step()
    return step


def tokens_per_s(step, tokens: int, iters: int) -> float:
    t = time.perf_counter()
    for _ in range(iters):
        step()
    return tokens * iters / (time.perf_counter() - t)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--d-ff", type=int, default=64, help="MLP width of the matched pair")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=6, help="alternating measurement rounds (best one counts)")
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randint(args.vocab, (args.batch, args.bptt))
    y = torch.randint(args.vocab, (args.batch, args.bptt))
    ours = TransformerLM(LMSpec(vocab=args.vocab, d_model=args.d_model, d_ff=args.d_ff, norm="post"))
    ref = TorchEncoderLM(args.vocab, args.d_model, args.d_ff)
    plain = TransformerLM(LMSpec(vocab=args.vocab, d_model=args.d_model))
    print(f"batch {args.batch} x bptt {args.bptt}, vocab {args.vocab}, d_model {args.d_model}, "
          f"{torch.get_num_threads()} torch threads")
    rows = []
    steps = {name: trainer(m, x, y) for name, m in (("ref", ref), ("ours", ours), ("plain", plain))}
    best = dict.fromkeys(steps, 0.0)
    # alternate the models round by round so a change in machine load hits all of them alike;
    # the best round of each counts (the least disturbed by other processes)
    for _ in range(args.rounds):
        for name, step in steps.items():
            best[name] = max(best[name], tokens_per_s(step, x.numel(), args.iters))
    t_ref, t_ours, t_plain = best["ref"], best["ours"], best["plain"]
    rows.append((f"nn.TransformerEncoderLayer LM (MLP {args.d_ff})", n_params(ref), t_ref))
    rows.append((f"dynamics.scan_snap.lm TransformerLM   (MLP {args.d_ff})", n_params(ours), t_ours))
    rows.append(("dynamics.scan_snap.lm TransformerLM   (no MLP, experiment default)", n_params(plain), t_plain))
    for name, n, t in rows:
        print(f"{name:58s} {n:>9,d} params {t:>12,.0f} tokens/s")
    print(f"ratio dynamics.scan_snap.lm / nn.TransformerEncoderLayer (same size, same batch): {t_ours / t_ref:.2f}")


if __name__ == "__main__":
    main()
