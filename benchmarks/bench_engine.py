"""Replica engine: achieved FLOP/s against the fp32 GEMM peak, and speed-up over a per-replica loop.

For the largest and the smallest trained cell of each experiment that trains transformers, one
training step of all R replicas of the cell (forward, backward, optimiser) is timed several ways, all
in this run, interleaved round by round so a change in machine load hits them alike (best round
counts; with one thread the clock is the process's CPU time, so other jobs' load does not count as
the step's time):

* engine: ``dynamics.engine`` (one flat (R, P) buffer, batched matmuls, fused optimiser, Trainer), the
  loss from :func:`dynamics.engine.models.loss` (LM heads: blockwise head + cross-entropy);
* unfused (LM cells): the same step with ``cross_entropy(forward(...))``, the (R, B, T, V) logits
  materialised (what ``dynamics.scan_snap.lm.train_replicas`` calls today);
* vmap: ``torch.func.stack_module_state`` + ``vmap(functional_call)`` over the per-replica modules
  and ``torch.optim.AdamW`` on the stacked tensors (timed on the deepvit cells, to choose between
  batched matmuls and vmap);
* loop: R separate ``nn.Module`` replicas (:mod:`dynamics.engine.reference`), each with its own
  ``torch.optim.AdamW`` (``torch.optim.SGD`` for the SGD-trained LM), stepped one after the other:
  what a user would write.

FLOPs count the matmuls only (2 per multiply-add, x3 for forward + backward,
:func:`dynamics.engine.models.flops_per_step`); the peak is the best of several fp32 ``torch.mm``
2048^3 products at the same thread count, measured between the rounds.  ``bound`` is the largest
speed-up over the loop that any implementation could reach if it ran those FLOPs at the peak
(loop time x peak / FLOPs): a cell whose loop is already compute-bound cannot be made 10x faster by
batching replicas.

R is what the experiment batches: deepvit-collapse 3 seeds, depth-width-budget 2 seeds x 3 learning
rates, wikitext-attention 3 seeds x 5 learning rates, dacdetr-gather 4 seeds.  The ViT and budget cells
run the engine's own models (:mod:`dynamics.engine.models`); deepvit-collapse and depth-width-budget
currently train their own forward passes (``dynamics.collapse.vit.forward``,
``dynamics.depth_width.transformer.ReplicaTransformer``) on the engine's Trainer and optimiser.
The machine's load (``/proc/loadavg``) is printed before and after: timings under load are noisy,
and the best round counts.  The toy DETR cells (dacdetr-gather: O-decoder only, and
O + C decoders) run the experiment's full loss (Hungarian matching per image and layer, per replica)
in both the engine and the loop; their matmul FLOPs are counted by :func:`detr_flops`.

    .venv/bin/python benchmarks/bench_engine.py [--threads 1] [--rounds 3] [--seconds 0.6]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from dynamics.depth_width.transformer import width_for_budget
from dynamics.engine import (
    FusedAdamW,
    FusedSGD,
    ReplicaParams,
    Schedule,
    Trainer,
    lr_table,
    models,
    replica_seeds,
)
from dynamics.engine.ops import BlockSpec
from dynamics.engine.reference import Encoder


@dataclasses.dataclass(frozen=True)
class Cell:
    experiment: str
    size: str  # "largest" / "smallest" (in the last line), or "small@R=..." (a larger R, printed only)
    spec: models.EncoderSpec
    replicas: int
    batch: int
    optimizer: str = "adamw"  # or "sgd"
    clip: float = 0.0
    vmap: bool = False


def _vit(depth, width, replicas):
    # deepvit-collapse on digits: 8x8 images, patch 2 -> 16 patches + class token, mlp_ratio 2, 4 heads
    return models.EncoderSpec(BlockSpec(width, 4, hidden=2 * width, norm="pre"), depth=depth, tokens=17,
                              patch_dim=4, cls=True, head="cls", classes=10)


def _budget(task, budget, depth):
    # depth-width-budget: pre-LN GPT-2 blocks, d_ff = 4d, 2 heads, width from the budget
    d = width_for_budget(budget, depth, 2)
    if task == "ses":  # k = 4, V = 4: 8 tokens, 5 classes, mean pooling
        return models.EncoderSpec(BlockSpec(d, 2, hidden=4 * d, norm="pre"), depth=depth, tokens=8, vocab=4,
                                  head="mean", classes=5, init="gpt2")
    return models.EncoderSpec(BlockSpec(d, 2, hidden=4 * d, norm="pre", causal=True), depth=depth, tokens=32,
                              vocab=2000, head="lm_tied", init="gpt2")


def _lm(d, vocab):
    # wikitext-attention: 1 layer, 1 head, no MLP, post-LN, no positions, untied decoder, bptt 35
    return models.EncoderSpec(BlockSpec(d, 1, norm="post", causal=True), depth=1, tokens=35, vocab=vocab,
                              pos="none", head="lm", final_norm=False, init="torch")


@dataclasses.dataclass(frozen=True)
class DetrCell:
    experiment: str
    size: str
    c_decoder: bool
    replicas: int = 4  # dacdetr-gather: 4 seeds per cell
    batch: int = 32
    optimizer: str = "adamw"
    vmap: bool = False


def detr_flops(cell: DetrCell) -> float:
    """Matmul FLOPs (x2 multiply-add, x3 forward + backward) of one toy DETR step, all replicas."""
    from dynamics.detr.model import ModelSpec

    m = ModelSpec()
    d, Q, N, L, f, C = m.d, m.queries, m.grid ** 2, m.layers, m.ffn, m.n_classes
    stem = N * ((C + 1) * m.patch ** 2 * d + 9 * d + d * d)
    pos_heads = Q * (2 * d * d) + Q * (d * C + 2 * d * d + 4 * d)
    ca = Q * 2 * d * d + 2 * N * d * d + 2 * Q * N * d
    sa = 4 * Q * d * d + 2 * Q * Q * d
    ffn = 2 * Q * d * f
    per_layer = sa + ca + ffn + pos_heads + ((ca + ffn + pos_heads) if cell.c_decoder else 0)
    return 6.0 * cell.batch * cell.replicas * (stem + L * per_layer)


CELLS = [
    Cell("deepvit-collapse", "largest", _vit(24, 128, 3), 3, 64, vmap=True),
    Cell("deepvit-collapse", "smallest", _vit(4, 32, 3), 3, 64, vmap=True),
    Cell("depth-width-budget", "largest", _budget("wikitext", 32000, 1), 6, 32, clip=1.0),
    Cell("depth-width-budget", "smallest", _budget("ses", 2000, 6), 6, 64, clip=1.0),
    Cell("wikitext-attention", "largest", _lm(64, 2000), 15, 20, optimizer="sgd", clip=0.5),
    Cell("wikitext-attention", "smallest", _lm(32, 1000), 15, 20, optimizer="sgd", clip=0.5),
    DetrCell("dacdetr-gather", "largest", True),
    DetrCell("dacdetr-gather", "smallest", False),
    # not in the last line: the two overhead-bound smallest cells at the R of a seeds x learning-rates
    # study (issue 15's rebuilds: 5-10 seeds); with per-operation overhead dominating, the speed-up over
    # the loop can approach R but not exceed it, so 10x needs R > 10
    Cell("deepvit-collapse", "small@R=24", _vit(4, 32, 3), 24, 64),
    Cell("depth-width-budget", "small@R=24", _budget("ses", 2000, 6), 24, 64, clip=1.0),
]


def detr_steps(cell: DetrCell):
    """(engine step, loop step) for the toy DETR: same seeds, same fixed scenes."""
    from dynamics.detr import scenes
    from dynamics.detr import train as T
    from dynamics.detr.model import ModelSpec

    spec, sspec = ModelSpec(), scenes.SceneSpec(32, 3, 1, 6, 0.12, 0.4)
    opts = T.TrainOptions(steps=10**6, batch=cell.batch, c_decoder=cell.c_decoder)
    R = cell.replicas
    batch = [scenes.sample(cell.batch, sspec, torch.Generator().manual_seed(r)) for r in range(R)]
    images = [scenes.render(sc, sspec) for sc in batch]
    nets = [T.build_model(spec, r) for r in range(R)]
    params = ReplicaParams.from_tensors({n: torch.stack([dict(m.named_parameters())[n].detach() for m in nets])
                                         for n, _ in nets[0].named_parameters()}, lambda n, t: True)
    trainer = Trainer(params, FusedAdamW(params, weight_decay=opts.weight_decay),
                      lr_table([opts.lr] * R, Schedule(1, kind="constant"), 1, dtype=torch.float32), clip=opts.clip)
    stacked = torch.stack(images)

    def loss_fn(t, rec):
        out = T.replica_forward(params, spec, stacked, nets[0].cells, nets[0].mpos, cell.c_decoder)
        return torch.stack([sum(T.loss_terms(T._replica(out, r), batch[r], opts)) for r in range(R)])

    def engine():
        trainer.step_count = 0
        trainer.step(loss_fn)

    opts_loop = [torch.optim.AdamW(m.parameters(), lr=opts.lr, weight_decay=opts.weight_decay) for m in nets]

    def loop():
        for m, o, sc, im in zip(nets, opts_loop, batch, images):
            o.zero_grad(set_to_none=True)
            sum(T.loss_terms(m(im, c_decoder=cell.c_decoder), sc, opts)).backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), opts.clip)
            o.step()

    return engine, loop


def _data(cell: Cell, R: int):
    g = torch.Generator().manual_seed(0)
    s = cell.spec
    T = s.tokens - (1 if s.cls else 0)
    x = torch.randn(R, cell.batch, T, s.patch_dim, generator=g) if s.patch_dim else \
        torch.randint(s.vocab, (R, cell.batch, T), generator=g)
    lm = s.head.startswith("lm")
    y = torch.randint(s.vocab if lm else s.classes, (R, cell.batch, T) if lm else (R, cell.batch), generator=g)
    return x, y


def engine_step(cell: Cell, fused: bool = True):
    """One trainer step; ``fused=False``: the loss as cross_entropy(forward) (logits materialised)."""
    R = cell.replicas
    params = models.init(cell.spec, replica_seeds(0, R))
    opt = FusedSGD(params) if cell.optimizer == "sgd" else FusedAdamW(params, weight_decay=0.05)
    lr = [0.1] * R if cell.optimizer == "sgd" else [1e-3] * R
    trainer = Trainer(params, opt, lr_table(lr, Schedule(10**6, kind="constant"), 1, dtype=torch.float32),
                      clip=cell.clip)
    x, y = _data(cell, R)

    def step():
        trainer.step_count = 0  # reuse the one-row learning-rate table
        if fused:
            trainer.step(lambda t, rec: models.loss(params, cell.spec, x, y))
        else:
            trainer.step(lambda t, rec: models.cross_entropy(models.forward(params, cell.spec, x), y))

    return step, params


def loop_step(cell: Cell, params):
    R = cell.replicas
    mods = [Encoder(cell.spec, params.replica(r)) for r in range(R)]
    if cell.optimizer == "sgd":
        opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in mods]
    else:
        opts = [torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.05) for m in mods]
    x, y = _data(cell, R)

    def step():
        for r, (m, o) in enumerate(zip(mods, opts)):
            o.zero_grad(set_to_none=True)
            out = m(x[r])
            torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y[r].reshape(-1)).backward()
            if cell.clip:
                torch.nn.utils.clip_grad_norm_(m.parameters(), cell.clip)
            o.step()

    return step


def vmap_step(cell: Cell, params):
    from torch.func import functional_call, stack_module_state, vmap

    R = cell.replicas
    mods = [Encoder(cell.spec, params.replica(r)) for r in range(R)]
    stacked, bufs = stack_module_state(mods)
    base = Encoder(cell.spec, params.replica(0)).to("meta")
    opt = torch.optim.AdamW(list(stacked.values()), lr=1e-3, weight_decay=0.05)
    x, y = _data(cell, R)

    def one(p, b, xr, yr):
        out = functional_call(base, (p, b), (xr,))
        return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), yr.reshape(-1))

    batched = vmap(one)

    def step():
        opt.zero_grad(set_to_none=True)
        batched(stacked, bufs, x, y).sum().backward()
        opt.step()

    return step


# With one thread the clock is this process's CPU time: on a machine shared with other jobs, wall time
# per step mostly measures how long the scheduler kept the process waiting.  With more threads it is
# wall time (CPU time would add up the threads).
CLOCK = {"fn": time.perf_counter, "name": "wall"}


def _time(step, seconds: float) -> float:
    """Seconds per step: run >= 2 steps and >= ``seconds``."""
    clock = CLOCK["fn"]
    n, t0 = 0, clock()
    while n < 2 or clock() - t0 < seconds:
        step()
        n += 1
    return (clock() - t0) / n


def gemm_peak(n: int = 2048, repeat: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeat):
        t = CLOCK["fn"]()
        torch.mm(a, b)
        best = min(best, CLOCK["fn"]() - t)
    return 2 * n**3 / best


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the experiments use 1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=0.6, help="minimum time per measurement")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.threads == 1:
        CLOCK.update(fn=time.process_time, name="process CPU")
    started = time.perf_counter()
    load_before = _load()
    peak = gemm_peak()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, CPU (no GPU in this run), "
          f"{CLOCK['name']} time; "
          f"load average (1, 5, 15 min) at start: {load_before}")
    rows = []
    for cell in CELLS:
        if isinstance(cell, DetrCell):
            eng, loop = detr_steps(cell)
            ways = {"engine": eng, "loop": loop}
        else:
            eng, params = engine_step(cell)
            ways = {"engine": eng, "loop": loop_step(cell, params)}
            if cell.spec.head.startswith("lm"):
                ways["unfused"] = engine_step(cell, fused=False)[0]
        if cell.vmap:
            ways["vmap"] = vmap_step(cell, params)
        for s in ways.values():
            s()  # warm up
        best = dict.fromkeys(ways, float("inf"))
        for _ in range(args.rounds):
            peak = max(peak, gemm_peak(repeat=1))
            for name, s in ways.items():
                best[name] = min(best[name], _time(s, args.seconds))
        rows.append((cell, best))
    print(f"fp32 GEMM peak (torch.mm 2048^3, best in this run, {torch.get_num_threads()} thread(s)): "
          f"{peak / 1e9:.1f} GFLOP/s")
    print(f"{'experiment':19s} {'cell':10s} {'shape':33s} {'R':>2s} {'opt':5s} {'engine ms':>9s} {'loop ms':>8s} "
          f"{'speed-up':>8s} {'bound':>6s} {'GFLOP/s':>7s} {'of peak':>7s} {'unfused ms':>10s} {'vmap ms':>8s}")
    large, small = [], []
    for cell, best in rows:
        if isinstance(cell, DetrCell):
            flops = detr_flops(cell)
            shape = f"L=3 d=64 Q=30 N=64 B={cell.batch} " + ("O+C" if cell.c_decoder else "O")
        else:
            s = cell.spec
            flops = models.flops_per_step(s, cell.batch, cell.replicas)
            shape = f"L={s.depth} d={s.block.width} T={s.tokens} B={cell.batch}" + (f" V={s.vocab}" if s.vocab else "")
        rate = flops / best["engine"]
        frac, speed = rate / peak, best["loop"] / best["engine"]
        bound = best["loop"] * peak / flops
        if cell.size in ("largest", "smallest"):
            (large if cell.size == "largest" else small).append((frac, speed))
        extra = "".join(f" {best[k] * 1e3:{w}.1f}" if k in best else f" {'-':>{w}s}" for k, w in (("unfused", 10),
                                                                                                  ("vmap", 8)))
        print(f"{cell.experiment:19s} {cell.size:10s} {shape:33s} {cell.replicas:2d} {cell.optimizer:5s} "
              f"{best['engine'] * 1e3:9.1f} {best['loop'] * 1e3:8.1f} {speed:7.2f}x {bound:5.1f}x "
              f"{rate / 1e9:7.1f} {frac:7.1%}{extra}")
    print(f"total benchmark time {time.perf_counter() - started:.0f} s; load average at start {load_before}, "
          f"at end {_load()}")
    print(f"bench_engine: min_peak_fraction_large={min(f for f, _ in large):.3f} "
          f"min_speedup_small={min(s for _, s in small):.2f}")


if __name__ == "__main__":
    main()
