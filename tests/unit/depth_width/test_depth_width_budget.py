"""The replica transformer, its parameter count, the tasks and the training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynamics.depth_width.tasks import lm_eval_windows, lm_windows, ses_batch
from dynamics.depth_width.train import TrainSpec, schedule, ses_task, train
from dynamics.depth_width.transformer import ReplicaTransformer, nonembedding_params, width_for_budget
from dynamics.engine import FusedAdamW, ReplicaParams


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one torch thread is fastest, and more spin on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model(R=2, L=2, d=8, classes=5, causal=False, vocab=4, tokens=8, seed=0):
    return ReplicaTransformer(R, vocab, tokens, L, d, 2, classes, causal, torch.Generator().manual_seed(seed))


def test_nonembedding_count_matches_parameters():
    m = model(R=3, L=3, d=10)
    embed = {"tok", "pos", "lnf_w", "lnf_b", "head", "head_b"}
    n = sum(p.numel() for name, p in m.named_parameters() if name not in embed) // 3
    assert n == nonembedding_params(3, 10) == m.nonembedding()


def test_width_for_budget():
    d = width_for_budget(8000, 2, 2)
    assert d % 2 == 0 and abs(nonembedding_params(2, d) - 8000) <= abs(nonembedding_params(2, d + 2) - 8000)
    assert width_for_budget(32000, 6, 2) == 20


def test_causal_attention_ignores_the_future():
    m = model(R=1, classes=0, causal=True, vocab=10)
    x = torch.randint(10, (1, 1, 8), generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[..., 5] = (y[..., 5] + 1) % 10
    a, b = m(x), m(y)
    assert torch.allclose(a[..., :5, :], b[..., :5, :]) and not torch.allclose(a[..., 5:, :], b[..., 5:, :])


def test_replicas_are_independent():
    m = model(R=2)
    x, _ = ses_batch((2, 4), 4, 4, torch.Generator().manual_seed(2))
    m(x)[0].sum().backward()
    assert m.qkv.grad[1].abs().max() == 0 and m.qkv.grad[0].abs().max() > 0


def test_ses_labels_count_agreements():
    x, y = ses_batch((500,), 4, 4, torch.Generator().manual_seed(3))
    assert ((x[:, :4] == x[:, 4:]).sum(1) == y).all()
    assert set(y.tolist()) == set(range(5))


def test_lm_windows_are_shifted_targets():
    ids = np.arange(1000)
    x, y = lm_windows(ids, (2, 3), 16, torch.Generator().manual_seed(4))
    assert x.shape == (2, 3, 16) and (y == x + 1).all()
    xe, ye = lm_eval_windows(ids, 16, 200)
    assert xe.shape == (12, 16) and (ye == xe + 1).all()


def test_lr_schedule():
    spec = TrainSpec(100, 4, (1.0,), 10, 10)
    factor = schedule(spec).factor
    assert factor(0) == pytest.approx(0.1) and factor(10) == pytest.approx(1.0)
    assert factor(99) == pytest.approx(0.1, abs=0.01)


def test_replica_adamw_matches_torch_adamw_per_replica():
    """Replica r with learning rate lr_r takes exactly torch.optim.AdamW's step with lr_r."""
    torch.manual_seed(0)
    p0 = torch.randn(2, 3, 4, 5)
    ref = [torch.nn.Parameter(p0[r].clone()) for r in range(2)]
    flat = ReplicaParams.from_tensors({"w": p0}, lambda n, t: True)
    p = flat["w"]
    lrs = torch.tensor([1e-2, 3e-3])
    opt = FusedAdamW(flat, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    refs = [torch.optim.AdamW([q], lr=float(lrs[r]), betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
            for r, q in enumerate(ref)]
    for _ in range(3):
        g = torch.randn(2, 3, 4, 5)
        p.grad.copy_(g)
        opt.step(lrs, torch.ones(2, dtype=torch.bool))
        for r in range(2):
            ref[r].grad = g[r].clone()
            refs[r].step()
    for r in range(2):
        assert torch.allclose(p.detach()[r], ref[r].detach(), atol=1e-6)


def test_training_fits_a_fixed_batch():
    """The loop (per-replica clipping, schedule, evaluation) drives the loss down on one repeated batch."""
    m = model(R=2, L=1, d=16)
    x, y = ses_batch((2, 32), 4, 4, torch.Generator().manual_seed(5))

    def evaluate(mod):
        with torch.no_grad():
            logits = mod(x)
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), y.reshape(-1), reduction="none")
            loss = ce.reshape(2, -1).mean(1)
            return loss, loss

    start = evaluate(m)[0]
    res = train(m, lambda step: (x, y), evaluate, TrainSpec(24, 32, (1e-2,), 4, 12))
    assert res.curve_test.shape == (2, 2) and (res.diverged < 0).all()
    assert (res.test_loss < start.numpy() - 0.2).all()


def test_ses_task_shapes():
    sample, evaluate = ses_task(4, 4, 8, 2, 64, 0)
    x, y = sample(0)
    assert x.shape == (2, 8, 8) and y.shape == (2, 8)
    val, test = evaluate(model(R=2))
    assert val.shape == test.shape == (2,) and not torch.allclose(val, test)
