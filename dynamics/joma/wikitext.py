"""JoMA on real text (Tian et al. 2024, Figs. 6 and 8): a small pre-LN Transformer LM trained with Adam on
WikiText, with the attention entropy of every layer recorded along training.

The model is :class:`dynamics.scan_snap.lm.TransformerLM` (single head, ReLU MLP, no positional
encoding); ``cfg`` needs d_model, layers, d_ff, lr, bptt, iters, eval_every, root_seed, device.
"""

from __future__ import annotations

import pandas as pd
import torch

from ..runtime import torch_generator
from ..scan_snap.lm import LMSpec, TransformerLM, attention_entropy, chunk


def train_lm(cfg, seed: int, src: torch.Tensor, ex: torch.Tensor, V: int, bar) -> pd.DataFrame:
    """One seed: Adam on consecutive chunks of ``src`` (bptt, batch) from a random start; every eval_every
    steps, the mean attention entropy (nats) of each layer on ``ex`` (10, 2 bptt) and its loss.
    Rows: seed_index, iter, layer, entropy, eval_loss."""
    g = torch_generator(cfg.root_seed, seed, "joma-wikitext")
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))  # nn init draws from the global RNG
    model = TransformerLM(LMSpec(vocab=V, d_model=cfg.d_model, n_layers=cfg.layers, d_ff=cfg.d_ff, norm="pre"))
    model.to(cfg.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    i = int(torch.randint(0, src.shape[0] - cfg.bptt - 2, (1,), generator=g))  # random start, then in order
    rows = []
    for it in range(cfg.iters + 1):
        if it % cfg.eval_every == 0 or it == cfg.iters:
            model.eval()
            with torch.no_grad():
                maps = model.attention(ex)
                loss = model.loss(ex[:, :-1], ex[:, 1:]).item()
            model.train()
            for layer, a in enumerate(maps):
                rows.append({"seed_index": seed, "iter": it, "layer": layer,
                             "entropy": float(attention_entropy(a).mean()), "eval_loss": loss})
        if it == cfg.iters:
            break
        x, y = chunk(src, i, cfg.bptt)
        i = (i + cfg.bptt) % (src.shape[0] - cfg.bptt - 2)
        opt.zero_grad()
        model.loss(x, y).backward()
        opt.step()
        bar.update(1)
    return pd.DataFrame(rows)
