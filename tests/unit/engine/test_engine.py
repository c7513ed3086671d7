"""The replica engine: a replica trained in a batch equals it trained alone; the batched forward
equals a per-replica nn.Module; a diverged replica is frozen alone; recording; CPU vs CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynamics.engine import (
    FusedAdamW,
    FusedSGD,
    Precision,
    Schedule,
    Trainer,
    lr_table,
    models,
    replica_seeds,
)
from dynamics.engine.ops import BlockSpec
from dynamics.engine.params import backward, generator
from dynamics.engine.reference import Encoder

F64 = torch.float64

SPECS = {
    "vit-pre-ln": models.EncoderSpec(BlockSpec(8, 2, hidden=16, norm="pre"), depth=2, tokens=5, patch_dim=3,
                                      cls=True, head="cls", classes=4),
    "lm-post-ln-causal": models.EncoderSpec(BlockSpec(8, 1, norm="post", causal=True), depth=1, tokens=6, vocab=11,
                                            pos="none", head="lm", final_norm=False, init="torch"),
    "classifier-mean": models.EncoderSpec(BlockSpec(8, 2, hidden=32, norm="pre", act="relu"), depth=2, tokens=6,
                                          vocab=5, head="mean", classes=3, init="gpt2"),
    "lm-tied-mlp": models.EncoderSpec(BlockSpec(8, 2, hidden=16, norm="post", causal=True), depth=2, tokens=6,
                                      vocab=9, head="lm_tied", pos="sinusoidal"),
}


def _inputs(spec, seeds, B, step):
    """Replica r's batch at ``step`` from its own data generator: (R, B, ...) inputs and targets."""
    xs, ys = [], []
    for ss in seeds:
        g = generator(ss, f"data-{step}")
        T = spec.tokens - (1 if spec.cls else 0)
        x = torch.randn(B, T, spec.patch_dim, generator=g, dtype=F64) if spec.patch_dim else \
            torch.randint(spec.vocab, (B, T), generator=g)
        n_out = spec.vocab if spec.head.startswith("lm") else spec.classes
        y = torch.randint(n_out, (B, T) if spec.head.startswith("lm") else (B,), generator=g)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_batched_forward_equals_per_replica_module(name):
    spec = SPECS[name]
    seeds = replica_seeds(3, 3)
    params = models.init(spec, seeds, F64)
    x, _ = _inputs(spec, seeds, 4, 0)
    with torch.no_grad():
        out = models.forward(params, spec, x)
        for r in range(3):
            ref = Encoder(spec, params.replica(r))(x[r])
            assert torch.allclose(out[r], ref, atol=1e-12, rtol=0), (name, r, (out[r] - ref).abs().max())


def _train(spec, seeds, lrs, opt_kind, steps=12, clip=0.5, inject=None):
    params = models.init(spec, seeds, F64)
    if opt_kind == "adamw":
        opt = FusedAdamW(params, weight_decay=0.1)
    else:
        opt = FusedSGD(params, momentum=0.9, weight_decay=0.01)
    table = lr_table(lrs, Schedule(steps, warmup=3, floor=0.1), steps)
    trainer = Trainer(params, opt, table, clip=clip)
    snaps = []
    for t in range(steps):
        x, y = _inputs(spec, seeds, 4, t)

        def loss_fn(step, rec, x=x, y=y):
            loss = models.cross_entropy(models.forward(params, spec, x, rec=rec), y)
            return inject(step, loss) if inject else loss

        trainer.step(loss_fn)
        snaps.append(params.data.detach().clone())
    return params, trainer, snaps


@pytest.mark.parametrize("opt_kind", ["adamw", "sgd"])
@pytest.mark.parametrize("name", ["vit-pre-ln", "lm-post-ln-causal"])
def test_replica_in_batch_equals_replica_alone(name, opt_kind):
    """Replica 1 of 3 (own seed, own learning rate) ends bit-for-bit close to the same replica alone."""
    spec = SPECS[name]
    seeds = replica_seeds(11, 3)
    lrs = [3e-3, 1e-2, 3e-2] if opt_kind == "adamw" else [0.05, 0.1, 0.2]
    batched, _, _ = _train(spec, seeds, lrs, opt_kind)
    alone, _, _ = _train(spec, seeds[1:2], lrs[1:2], opt_kind)
    moved = (batched.data[1] - models.init(spec, seeds[1:2], F64).data[0]).abs().max()
    assert moved > 1e-3  # the replica did train
    assert torch.allclose(batched.data[1], alone.data[0], atol=1e-10, rtol=0), (batched.data[1] - alone.data[0]).abs().max()


@pytest.mark.parametrize("opt_kind", ["adamw", "sgd"])
def test_kept_replicas_continue_as_if_nothing_left(opt_kind):
    """Trainer.keep: after step 6 only replicas 2 and 0 (in that order) train on; they end exactly where
    they end in the full program (optimiser state, learning-rate columns and step counts carried over)."""
    spec = SPECS["vit-pre-ln"]
    seeds = replica_seeds(4, 3)
    lrs = [3e-3, 1e-2, 3e-2] if opt_kind == "adamw" else [0.05, 0.1, 0.2]
    full, _, _ = _train(spec, seeds, lrs, opt_kind)
    params = models.init(spec, seeds, F64)
    opt = FusedAdamW(params, weight_decay=0.1) if opt_kind == "adamw" else FusedSGD(params, momentum=0.9,
                                                                                    weight_decay=0.01)
    trainer = Trainer(params, opt, lr_table(lrs, Schedule(12, warmup=3, floor=0.1), 12), clip=0.5)
    rows = [0, 1, 2]
    for t in range(12):
        if t == 6:
            rows = [2, 0]
            trainer.keep(torch.tensor(rows))
            assert trainer.params.R == 2 and trainer.lr.shape == (12, 2) and trainer.active.shape == (2,)
        x, y = _inputs(spec, [seeds[r] for r in rows], 4, t)
        p = trainer.params
        trainer.step(lambda step, rec, x=x, y=y, p=p: models.cross_entropy(models.forward(p, spec, x), y))
    assert torch.equal(trainer.params.data, full.data[[2, 0]])
    assert trainer.params.P_decay == full.P_decay and trainer.params.offsets == full.offsets


def test_fused_adamw_matches_torch_adamw():
    """One replica: FusedAdamW (no decay, constant lr) equals nn.Module + torch.optim.AdamW."""
    spec = SPECS["vit-pre-ln"]
    seeds = replica_seeds(5, 1)
    params = models.init(spec, seeds, F64)
    ref = Encoder(spec, params.replica(0))
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.0)
    trainer = Trainer(params, FusedAdamW(params), lr_table([1e-2], Schedule(8, kind="constant"), 8))
    for t in range(8):
        x, y = _inputs(spec, seeds, 4, t)
        trainer.step(lambda step, rec, x=x, y=y: models.cross_entropy(models.forward(params, spec, x), y))
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x[0]), y[0]).backward()
        ref_opt.step()
    with torch.no_grad():
        x, _ = _inputs(spec, seeds, 4, 99)
        assert torch.allclose(models.forward(params, spec, x)[0], ref(x[0]), atol=1e-10, rtol=0)


def test_diverged_replica_is_frozen_alone():
    """Replica 1's loss turns NaN at step 5: it stops there (parameters as after step 4), and replicas
    0 and 2 end exactly as in a run without the fault."""
    spec = SPECS["vit-pre-ln"]
    seeds = replica_seeds(2, 3)
    lrs = [1e-2] * 3

    def inject(step, loss):
        # an additive constant: its gradient is 1 for every replica, so only replica 1 sees the NaN
        return loss + torch.where((torch.arange(3) == 1) & (step >= 5), np.nan, 0.0).to(loss)

    clean, _, _ = _train(spec, seeds, lrs, "adamw")
    faulty, trainer, snaps = _train(spec, seeds, lrs, "adamw", inject=inject)
    assert trainer.diverged.tolist() == [-1, 5, -1]
    assert torch.equal(faulty.data[1], snaps[4][1])
    assert torch.equal(faulty.data[[0, 2]], clean.data[[0, 2]])
    assert torch.isfinite(faulty.data).all()


def test_records_only_at_chosen_steps():
    spec = SPECS["vit-pre-ln"]
    seeds = replica_seeds(1, 2)
    params = models.init(spec, seeds, F64)
    trainer = Trainer(params, FusedSGD(params), lr_table([0.1, 0.1], Schedule(4), 4), record_steps={0, 3})
    x, y = _inputs(spec, seeds, 4, 0)
    for _ in range(4):
        trainer.step(lambda step, rec, x=x, y=y: models.cross_entropy(models.forward(params, spec, x, rec=rec), y))
    assert sorted(trainer.records) == [0, 3]
    maps = trainer.records[0].maps
    assert maps[("attention", 1)].shape == (2, 4, 2, 5, 5)  # (R, B, H, T, T)
    assert torch.allclose(maps[("attention", 0)].sum(-1), torch.ones((), dtype=F64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_and_cuda_agree():
    """Float64 on CPU and CUDA: the same 10 AdamW steps agree to 1e-9; float32 + TF32 to 2e-2 relative
    in the losses."""
    spec = SPECS["vit-pre-ln"]
    seeds = replica_seeds(4, 3)
    out = {}
    for dev, prec in (("cpu", Precision("cpu", "float64")), ("cuda", Precision("cuda", "float64")),
                      ("tf32", Precision("cuda", "float32", tf32=True))):
        params = models.init(spec, seeds, prec.torch_dtype, prec.device)
        trainer = Trainer(params, FusedAdamW(params), lr_table([1e-2] * 3, Schedule(10), 10, device=prec.device),
                          precision=prec)
        losses = []
        for t in range(10):
            x, y = _inputs(spec, seeds, 4, t)
            x, y = x.to(prec.device, prec.torch_dtype), y.to(prec.device)
            losses.append(trainer.step(
                lambda s, r, p=params, x=x, y=y: models.cross_entropy(models.forward(p, spec, x), y)))
        out[dev] = (params.data.double().cpu(), torch.stack(losses).double().cpu())
    assert torch.allclose(out["cpu"][0], out["cuda"][0], atol=1e-9, rtol=0)
    assert torch.allclose(out["cpu"][1], out["tf32"][1], rtol=2e-2)


@pytest.mark.parametrize("variant", ["vanilla", "reattn", "temperature"])
def test_engine_vit_equals_collapse_vit(variant):
    """The engine's encoder with DeepViT's attention variants equals dynamics.collapse.vit.forward on the
    same parameters (train-mode BN statistics, running statistics updated alike)."""
    from dynamics.collapse import vit

    vspec = vit.ViTSpec(depth=2, width=8, heads=2, n_patches=4, patch_dim=3, n_classes=4, attention=variant)
    p, buf = vit.init_params(vspec, [0, 1], dtype=F64)
    espec = models.EncoderSpec(BlockSpec(8, 2, hidden=vspec.hidden, norm="pre", attention=variant,
                                         temperature=vspec.temperature), depth=2, tokens=5, patch_dim=3, cls=True,
                               head="cls", classes=4)
    ebuf = models.bn_buffers(espec, 2, F64)
    assert set(ebuf) == set(buf)
    x = torch.randn(2, 6, 4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, _ = vit.forward(p, buf, vspec, x, train=True)
        ours = models.forward(p, espec, x, train=True, buffers=ebuf)
    assert torch.allclose(ours, ref, atol=1e-12, rtol=0)
    for k in buf:
        assert torch.allclose(ebuf[k], buf[k], atol=1e-14)


def test_bf16_autocast_runs_on_cpu():
    """The autocast path (meant for CUDA) runs and trains on CPU too; parameters stay float32."""
    spec = SPECS["vit-pre-ln"]
    seeds = replica_seeds(6, 2)
    params = models.init(spec, seeds)
    trainer = Trainer(params, FusedAdamW(params), lr_table([1e-2] * 2, Schedule(5), 5),
                      precision=Precision(autocast="bf16"))
    x, y = _inputs(spec, seeds, 4, 0)
    losses = [trainer.step(lambda s, r: models.cross_entropy(models.forward(params, spec, x.float()), y))
              for _ in range(5)]
    assert params.data.dtype == torch.float32 and torch.isfinite(torch.stack(losses)).all()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_loss_equals_cross_entropy_of_forward(name):
    """models.loss (LM heads: the blockwise linear_cross_entropy) equals cross_entropy(forward) in value
    and in every parameter's gradient, float64; the LM cells use several row blocks."""
    spec = SPECS[name]
    seeds = replica_seeds(7, 3)
    x, y = _inputs(spec, seeds, 4, 0)
    grads = []
    for fn in (lambda p: models.loss(p, spec, x, y), lambda p: models.cross_entropy(models.forward(p, spec, x), y)):
        params = models.init(spec, seeds, F64)
        value = fn(params)
        params.zero_grad()
        backward(value.mul(torch.tensor([1.0, 0.0, 2.0], dtype=F64)).sum())  # per-replica upstream weights
        grads.append((value.detach(), params.grad.clone()))
    (v1, g1), (v2, g2) = grads
    assert torch.allclose(v1, v2, atol=1e-12, rtol=0) and torch.allclose(g1, g2, atol=1e-12, rtol=0)
    assert g1[1].abs().max() == 0 and g1[0].abs().max() > 0


def test_linear_cross_entropy_blocks_and_no_grad():
    """Blocks of one replica x 8 of 37 rows give the same loss and gradients; without gradients no grad work."""
    from dynamics.engine.ops import _LinearCrossEntropy, linear

    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 37, 5, dtype=F64, generator=g, requires_grad=True)
    w = torch.randn(2, 5, 23, dtype=F64, generator=g, requires_grad=True)
    b = torch.randn(2, 23, dtype=F64, generator=g, requires_grad=True)
    y = torch.randint(23, (2, 37), generator=g)
    ref = torch.nn.functional.cross_entropy(linear(h, w, b).reshape(-1, 23), y.reshape(-1), reduction="none")
    ref = ref.view(2, -1).mean(1)
    ref_grads = torch.autograd.grad(ref.sum(), (h, w, b))
    ours = _LinearCrossEntropy.apply(h, w, b, y, 8, 1)
    assert torch.allclose(ours, ref, atol=1e-12, rtol=0)
    for a, c in zip(torch.autograd.grad(ours.sum(), (h, w, b)), ref_grads):
        assert torch.allclose(a, c, atol=1e-12, rtol=0)
    with torch.no_grad():
        assert torch.allclose(_LinearCrossEntropy.apply(h, w, None, y, 8, 1),
                              torch.nn.functional.cross_entropy(linear(h, w).reshape(-1, 23), y.reshape(-1),
                                                                reduction="none").view(2, -1).mean(1))


def test_lm_loss_under_bf16_autocast():
    """Under autocast the LM loss falls back to logits + cross-entropy (the blockwise form is float32/64 only)."""
    spec = SPECS["lm-tied-mlp"]
    seeds = replica_seeds(8, 2)
    params = models.init(spec, seeds)
    trainer = Trainer(params, FusedAdamW(params), lr_table([1e-2] * 2, Schedule(3), 3),
                      precision=Precision(autocast="bf16"))
    x, y = _inputs(spec, seeds, 4, 0)
    losses = [trainer.step(lambda s, r: models.loss(params, spec, x, y)) for _ in range(3)]
    assert params.data.dtype == torch.float32 and torch.isfinite(torch.stack(losses)).all()
