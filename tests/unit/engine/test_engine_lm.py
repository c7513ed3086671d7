"""The engine's replica LM equals dynamics.scan_snap.lm.TransformerLM given the same weights (logits, attention,
content logits), so the wikitext-attention port measures the same model."""

from __future__ import annotations

import pytest
import torch

from dynamics.engine import ReplicaParams, models
from dynamics.scan_snap.lm import (
    LMSpec,
    TransformerLM,
    replica_attention,
    replica_spec,
    replica_token_logits,
)


def _as_replicas(model: TransformerLM) -> ReplicaParams:
    b = model.blocks[0]
    t = {"tok": model.embed.weight, "qkv_w": b.qkv.weight.T[None], "qkv_b": b.qkv.bias[None],
         "proj_w": b.out.weight.T[None], "proj_b": b.out.bias[None], "head_w": model.decoder.weight.T,
         "head_b": model.decoder.bias}
    if model.spec.norm != "none":
        t.update({"ln1_g": b.norm1.weight[None], "ln1_b": b.norm1.bias[None]})
    if model.spec.norm == "pre":
        t.update({"norm_g": model.final_norm.weight, "norm_b": model.final_norm.bias})
    return ReplicaParams.from_tensors({n: v.detach()[None].double() for n, v in t.items()}, lambda n, v: False)


@pytest.mark.parametrize("norm", ["post", "pre", "none"])
def test_replica_lm_equals_transformer_lm(norm):
    torch.manual_seed(0)
    spec = LMSpec(vocab=13, d_model=8, n_heads=2, norm=norm, max_len=7)
    model = TransformerLM(spec).double().eval()
    params = _as_replicas(model)
    x = torch.randint(13, (3, 7))
    with torch.no_grad():
        ours = models.forward(params, replica_spec(spec), x[None], train=False)[0]
        assert torch.allclose(ours, model(x), atol=1e-12)
        assert torch.allclose(replica_attention(params, spec, x)[0], model.attention(x)[0], atol=1e-12)
        q = torch.tensor([1, 4])
        assert torch.allclose(replica_token_logits(params, spec, q)[0], model.token_logits(q), atol=1e-12)
