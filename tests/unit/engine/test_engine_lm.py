"""The engine's replica LM equals dynamics.scan_snap.lm.TransformerLM given the same weights (logits, attention,
content logits), so the wikitext-attention port measures the same model."""

from __future__ import annotations

import pytest
import torch

from dynamics.engine import ReplicaParams, models
from dynamics.scan_snap.lm import (
    LMSpec,
    TransformerLM,
    attention_entropy,
    replica_attention,
    replica_eval,
    replica_spec,
    replica_token_logits,
)


def _as_replicas(model: TransformerLM) -> ReplicaParams:
    def per_layer(get):  # the engine stacks the blocks' tensors on a leading layer axis
        return torch.stack([get(b) for b in model.blocks])

    t = {"tok": model.embed.weight, "qkv_w": per_layer(lambda b: b.qkv.weight.T),
         "qkv_b": per_layer(lambda b: b.qkv.bias), "proj_w": per_layer(lambda b: b.out.weight.T),
         "proj_b": per_layer(lambda b: b.out.bias), "head_w": model.decoder.weight.T, "head_b": model.decoder.bias}
    if model.spec.norm != "none":
        t.update({"ln1_g": per_layer(lambda b: b.norm1.weight), "ln1_b": per_layer(lambda b: b.norm1.bias)})
    if model.spec.norm == "pre":
        t.update({"norm_g": model.final_norm.weight, "norm_b": model.final_norm.bias})
    return ReplicaParams.from_tensors({n: v.detach()[None].double() for n, v in t.items()}, lambda n, v: False)


@pytest.mark.parametrize("norm, n_layers", [("post", 1), ("pre", 1), ("none", 1), ("post", 3), ("pre", 3)])
def test_replica_lm_equals_transformer_lm(norm, n_layers):
    torch.manual_seed(0)
    spec = LMSpec(vocab=13, d_model=8, n_heads=2, norm=norm, max_len=7, n_layers=n_layers)
    model = TransformerLM(spec).double().eval()
    params = _as_replicas(model)
    x = torch.randint(13, (3, 7))
    with torch.no_grad():
        ours = models.forward(params, replica_spec(spec), x[None], train=False)[0]
        assert torch.allclose(ours, model(x), atol=1e-12)
        maps = model.attention(x)
        for k in range(n_layers):
            assert torch.allclose(replica_attention(params, spec, x, layer=k)[0], maps[k], atol=1e-12)
        # per-layer entropy and loss of the evaluation helper, against the reference module
        H, loss = replica_eval(params, spec, x, x)
        assert H.shape == (1, n_layers)
        assert torch.allclose(H[0], torch.stack([attention_entropy(a).mean() for a in maps]), atol=1e-12)
        assert torch.allclose(loss[0], model.loss(x, x), atol=1e-12)
        q = torch.tensor([1, 4])
        assert torch.allclose(replica_token_logits(params, spec, q)[0], model.token_logits(q), atol=1e-12)
