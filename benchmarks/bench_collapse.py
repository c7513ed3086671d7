"""Speed of the collapse package: seeds batched along a run axis vs. one seed at a time.

Baseline (measured in the same run): training R seeds of the ViT one after another (R = 1 each).
Batched: the same R seeds as one program with parameters (R, ...).  Also times a random-init probe
plus the similarity measurements.  Prints ms per AdamW step and the speed-up ratio.

Re-attention's map (``attention.normalised_mix``, BN folded into the head mixing) against the official
modules (``nn.Conv2d(H, H, 1)`` + ``nn.BatchNorm2d(H)``, one pair per replica in a loop), forward and
backward, at the full run's shape.

Compaction (``BracketOptions.compact``): an early-stopping bracket whose replicas stop at different
times, with stopped replicas carried frozen to the end (baseline, same run) against leaving the program
when they stop.  The records are identical (tested); the ratio is the wall time saved, to be read beside
the share of replica-steps that early stopping made unnecessary.

The full run's deepest training step (L = 16, d = 32, 15 replicas) as a share of the machine's one-thread
GEMM peak, both measured in the same run: the matrix products' FLOPs (``ViTSpec.forward_flops``) over
the step's time.  Most of the step is not GEMM work (softmax, norms, the 3840 tiny 17 x 4 products per
block), so the ratio says how far from the machine's limit the engine runs, not what a kernel could do.

The softmax maps with the 1/sqrt(d_h) scale on q (``attention.softmax_maps``) against the scale on the
(T x T) scores, forward and backward, at the full run's shape.

    .venv/bin/python benchmarks/bench_collapse.py
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from bench_engine import gemm_peak  # the benchmarks' one GEMM-peak measurement (run from benchmarks/)

from dynamics.collapse import analysis, attention, data, vit
from dynamics.collapse import converge as cv


def _time(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    torch.set_num_threads(1)
    split = data.load("digits")
    split = dataclasses.replace(split, x_val=split.x_test[:64], y_val=split.y_test[:64])  # train_bracket needs one
    seeds = [0, 1, 2]
    steps = 10
    print(f"torch threads: {torch.get_num_threads()}; digits, {steps} AdamW steps, batch 64, {len(seeds)} seeds")
    for depth, width in [(8, 32), (8, 64)]:
        spec = vit.ViTSpec(depth=depth, width=width, heads=4, n_patches=16, patch_dim=4, n_classes=10,
                           attention="reattn")
        # one learning rate, no early stop: a fixed number of AdamW steps, one validation pass at the end
        opts = cv.BracketOptions(lrs=(1e-3,), max_steps=steps, batch=64, eval_every=steps, patience=steps, patch=2)
        seq = _time(lambda: [cv.train_bracket(spec, split, [s], opts) for s in seeds])  # noqa: B023 (called within this iteration)
        bat = _time(lambda: cv.train_bracket(spec, split, seeds, opts))  # noqa: B023 (called within this iteration)
        print(f"L={depth:2d} d={width:3d} reattn: one seed at a time {seq / steps * 1e3:7.1f} ms/step, "
              f"batched {bat / steps * 1e3:7.1f} ms/step, speed-up x{seq / bat:.2f}")
    spec = vit.ViTSpec(depth=16, width=64, heads=4, n_patches=16, patch_dim=4, n_classes=10)
    params, buffers = vit.init_params(spec, list(range(6)))
    x = cv.tokens(split.x_test, 2, torch.float32, "cpu")

    def probe():
        rec = vit.probe(params, buffers, spec, x[:32], train=True)
        analysis.measure(rec, (0.5, 0.7, 0.9), 4)

    print(f"random-init probe + similarity metrics (L=16, d=64, 6 seeds, 32 images): {_time(probe):.2f} s")

    R, B, H, T = 15, 32, 8, 17  # the full run's bracket: 15 replicas, width 32 = 8 heads, 17 tokens
    g = torch.Generator().manual_seed(0)
    A = torch.softmax(torch.randn(R, B, H, T, T, generator=g), -1).requires_grad_(True)
    grad = torch.randn(R, B, H, T, T, generator=g)
    mods = [(torch.nn.Conv2d(H, H, 1), torch.nn.BatchNorm2d(H)) for _ in range(R)]
    theta = torch.stack([c.weight.detach()[:, :, 0, 0] for c, _ in mods]).requires_grad_(True)
    bias = torch.stack([c.bias.detach() for c, _ in mods]).requires_grad_(True)
    gamma, beta = torch.ones(R, H, requires_grad=True), torch.zeros(R, H, requires_grad=True)
    stats = torch.zeros(R, H), torch.ones(R, H)

    def modules():
        torch.stack([bn(conv(A[r])) for r, (conv, bn) in enumerate(mods)]).backward(grad)

    def folded():
        attention.normalised_mix(A, theta, bias, gamma, beta, *stats, train=True).backward(grad)

    base, ours = _time(lambda: [modules() for _ in range(5)]) / 5, _time(lambda: [folded() for _ in range(5)]) / 5
    print(f"re-attention map fwd+bwd ({R} replicas x {B} images, H={H}, T={T}): official modules per replica "
          f"{base * 1e3:.1f} ms, folded {ours * 1e3:.1f} ms, ratio x{base / ours:.2f}")

    # The attention core at the same shape: scaling the (T, T) scores (baseline) against scaling q (T, d_h),
    # which attention.softmax_maps does (the same bits at d_h = 4, tested).
    dh = 4
    q, k = (torch.randn(R, B, H, T, dh, generator=g).requires_grad_(True) for _ in range(2))

    def scores_scaled():
        torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * dh ** -0.5, -1).backward(grad)

    def q_scaled():
        attention.softmax_maps(q, k).backward(grad)

    # a few milliseconds each: interleave the two and take medians, so one noisy stretch hits both
    pairs = [(_time(scores_scaled, 1), _time(q_scaled, 1)) for _ in range(15)]
    base, ours = (float(np.median(x)) for x in zip(*pairs))
    print(f"softmax maps fwd+bwd ({R} x {B} x {H} maps, T={T}, d_h={dh}): scores scaled {base * 1e3:.1f} ms, "
          f"q scaled {ours * 1e3:.1f} ms (medians of 15 interleaved), ratio x{base / ours:.2f}")

    rel = data.relations(2000, 200, seed=0)
    spec = vit.ViTSpec(depth=8, width=32, heads=8, n_patches=16, patch_dim=16, n_classes=rel.n_classes,
                       attention="reattn")
    times, runs = {}, None
    for compact in (False, True):
        opts = cv.BracketOptions(lrs=(1e-3, 1e-2, 3e-2), max_steps=400, batch=32, eval_every=25, patience=2,
                                 compact=compact)
        t = time.perf_counter()
        runs = cv.train_bracket(spec, rel, [0, 1, 2], opts).runs
        times[compact] = time.perf_counter() - t
    needed = runs.stop_step.sum() / (runs.stop_step.max() * len(runs))
    print(f"early-stopping bracket (relations, L=8 d=32 reattn, 9 replicas, <= 400 steps): stopped replicas "
          f"carried {times[False]:.1f} s, compacted {times[True]:.1f} s, ratio x{times[False] / times[True]:.2f} "
          f"(replica-steps needed: {needed:.0%} of those carried)")

    # The full run's deepest bracket step against the machine's GEMM peak, both measured here on one thread:
    # a training step's matrix products (3 x ViTSpec.forward_flops per image) over its time.  20 extra steps
    # between two otherwise identical brackets isolate the training from the evaluations.
    peak = gemm_peak()
    for variant in ("vanilla", "reattn"):
        spec = vit.ViTSpec(depth=16, width=32, heads=8, n_patches=16, patch_dim=16, n_classes=rel.n_classes,
                           attention=variant)
        seconds = {}
        for n in (10, 30):
            opts = cv.BracketOptions(lrs=(1e-3, 3e-3, 1e-2), max_steps=n, batch=32, eval_every=n, patience=n)
            seconds[n] = _time(lambda: cv.train_bracket(spec, rel, list(range(5)), opts), 1)  # noqa: B023
        step = (seconds[30] - seconds[10]) / 20
        rate = 15 * 32 * 3 * spec.forward_flops() / step
        print(f"L=16 d=32 {variant} bracket step (15 replicas x 32 images): {step * 1e3:.0f} ms, "
              f"{rate / 1e9:.1f} GFLOP/s in matrix products; one-thread GEMM peak (bench_engine.gemm_peak) "
              f"{peak / 1e9:.1f} GFLOP/s; ratio x{rate / peak:.2f}")


if __name__ == "__main__":
    main()
