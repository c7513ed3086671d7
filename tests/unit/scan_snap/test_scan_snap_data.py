import numpy as np
import pytest
import torch

from dynamics.errors import UserError
from dynamics.runtime import torch_generator
from dynamics.scan_snap.data import Sampler, SyntheticSpec, build_classes


@pytest.mark.parametrize("num_last,nnext,M", [(2, 1, 34), (1, 2, 33), (3, 2, 79), (5, 2, 125), (10, 2, 240)])
def test_vocabulary_size_matches_the_paper(num_last, nnext, M):
    assert build_classes(SyntheticSpec(num_last=num_last, num_next_per_last=nnext)).M == M


def test_syn_small_probabilities_and_roles():
    cl = build_classes(SyntheticSpec())
    np.testing.assert_allclose(cl.probs.sum(1), 1.0)
    np.testing.assert_allclose(cl.probs[0, :10], 1 / 15.5)  # common tokens, normalised by 15.5
    np.testing.assert_allclose(cl.probs[0, 10:20], np.linspace(0.1, 1, 10) / 15.5)
    assert cl.common[:10].all() and not cl.common[10:].any()
    assert cl.distinct[0, 10:20].all() and cl.distinct[1, 20:30].all() and cl.distinct.sum() == 20
    assert list(cl.query) == [30, 31] and list(cl.next) == [32, 33]


def test_per_query_common_tokens_are_common_only_with_several_next_tokens():
    shared = build_classes(SyntheticSpec(num_last=2, num_next_per_last=2, num_common_per_last=3))
    a = 10  # first per-query common token of query 0
    assert shared.common[a] and shared.probs[0, a] > 0 and shared.probs[1, a] > 0 and shared.probs[2, a] == 0
    alone = build_classes(SyntheticSpec(num_last=2, num_next_per_last=1, num_common_per_last=3))
    assert alone.distinct[0, a]  # |Omega(l)| = 1: distinct by the paper's definition


def test_sampler_shapes_and_frequencies():
    cl = build_classes(SyntheticSpec())
    x, y = Sampler(cl).sample(4000, 65, torch_generator(0, 0, "t"))
    assert x.shape == (4000, 65) and y.shape == (4000,)
    cls = (y - 32).numpy()
    assert set(np.unique(x[:, -1].numpy())) == {30, 31}
    np.testing.assert_array_equal(x[:, -1].numpy(), cl.query[cls])
    for n in range(2):
        keys = x[cls == n, :-1].numpy().ravel()
        freq = np.bincount(keys, minlength=cl.M) / keys.size
        se = np.sqrt(cl.probs[n] * (1 - cl.probs[n]) / keys.size)
        assert np.all(np.abs(freq - cl.probs[n]) <= 5 * se + 1e-12)  # 5 standard errors
    assert abs(cls.mean() - 0.5) < 5 * 0.5 / np.sqrt(len(cls))


def test_sampler_is_reproducible_per_seed_and_stream():
    cl = build_classes(SyntheticSpec())
    a = Sampler(cl).sample(8, 16, torch_generator(0, 3, "data"))[0]
    b = Sampler(cl).sample(8, 16, torch_generator(0, 3, "data"))[0]
    c = Sampler(cl).sample(8, 16, torch_generator(0, 4, "data"))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kw,msg", [
    ({"num_last": 0}, "num_last"),
    ({"unique_unnormalized_min": 2.0}, "inconsistent sizes"),
    ({"num_common": 0, "num_unique_per_next": 0}, "inconsistent sizes"),
])
def test_bad_specs(kw, msg):
    with pytest.raises(UserError, match=msg):
        SyntheticSpec(**kw)
