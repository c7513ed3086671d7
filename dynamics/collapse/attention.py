"""Attention maps and the variants DeepViT compares, batched along a leading run axis.

Maps have shape (R, B, H, T, T): runs, images, heads, queries i, keys j.

Variants (Zhou et al. 2021, Sec. 4 and official ``models/layers.py``):

    vanilla        A = softmax(q k^T / sqrt(d_h))
    temperature    A = softmax(q k^T / (sqrt(d_h) tau)); tau < 1 sharpens the maps
    drop           A = dropout_p(softmax(...)) in training (entries zeroed, survivors scaled 1/(1-p))
    reattn         A' = BN(Theta^T A + b) * s   (re-attention: Theta is the official 1x1 Conv2d over
                   heads, with bias b; BN is BatchNorm2d with heads as channels; s = d_h^{-1/2} when
                   ``transform_scale`` else 1)
    reattn-nonorm  A' = Theta^T A + b (head mixing only; ablation)
    bn-only        A' = BN(A) (Theta = I, no mixing; ablation)

Exact identity of re-attention's BatchNorm (derivation in ``docs/deepvit.md``; the reference notes
call it A5): every softmax row sums to 1, so every map A_h of every image has mean exactly 1/T over
(i, j).  The conv output C_g = sum_h Theta_gh A_h + b_g then has per-image mean sum_h Theta_gh / T + b_g,
the same for every image, so the batch mean BN subtracts equals it and

    BN(C)_g = gamma_g * [sum_h Theta_gh (A_h - 11^T / T)]_g / sqrt(sigma_g^2 + eps) + beta_g,

i.e. each output map's uniform (DC) component is exactly beta_g, for every image, whatever the
input: the part of attention that averages all tokens (the low-pass part that drives over-smoothing,
Wang et al. 2022) is removed and replaced by a learned constant.  This holds with batch statistics
(training mode); with running statistics it holds only up to how far the running mean lags the
current Theta and b.  Attention dropping before the conv breaks row-stochasticity and the identity.
"""

from __future__ import annotations

import torch

VARIANTS = ("vanilla", "reattn", "reattn-nonorm", "bn-only", "temperature", "drop")
MIXES_HEADS = {"reattn", "reattn-nonorm"}
NORMALISES = {"reattn", "bn-only"}


def softmax_maps(q: torch.Tensor, k: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(q k^T / (sqrt(d_h) tau)) for q, k (..., T, d_h) -> (..., T, T).

    The scale multiplies q (T x d_h entries) rather than the scores (T x T): with T = 17 and d_h = 4 that
    is a quarter of the pass, forward and backward.  When the scale is a power of two (d_h = 4, tau = 1)
    the two orders give the same bits (tested), so committed runs stay reproducible."""
    scale = q.shape[-1] ** -0.5 / temperature
    return torch.softmax(torch.matmul(q * scale, k.transpose(-1, -2)), dim=-1)


def drop_entries(A: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout on attention entries (DeepViT's "attention dropping" baseline)."""
    if p <= 0:
        return A
    keep = torch.rand(A.shape, generator=generator, device=A.device, dtype=A.dtype) >= p
    return A * keep / (1.0 - p)


def mix_heads(A: torch.Tensor, theta: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The official 1x1 Conv2d over heads: C[r,b,g] = sum_h theta[r,g,h] A[r,b,h] + bias[r,g].

    A (R, B, H, T, T); theta (R, H_out, H_in) (Conv2d weight without its 1x1 kernel axes); bias (R, H).
    """
    return torch.einsum("rgh,rbhij->rbgij", theta, A) + bias[:, None, :, None, None]


def normalised_mix(A: torch.Tensor, theta: torch.Tensor | None, bias: torch.Tensor | None, gamma: torch.Tensor,
                   beta: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, train: bool, *,
                   scale: float = 1.0, momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """Re-attention's map BN(Theta A + b) * scale, BatchNorm2d with heads as channels (statistics over
    (images, i, j)), per run; ``theta=None`` is BN(A) * scale (``bn-only``).

    A (R, B, H, T, T); theta (R, H_out, H_in) (the Conv2d weight without its 1x1 kernel axes); bias,
    gamma, beta, running_mean, running_var (R, H).  In training mode the batch statistics normalise
    (biased variance) and the running estimates are updated in place with PyTorch's rule (unbiased
    variance, ``momentum``), so one run matches ``nn.Conv2d`` + ``nn.BatchNorm2d`` (tested).

    Computed folded: with s_g = gamma_g scale / sqrt(var_g + eps), the output is (s Theta) A +
    s (b - mean) + beta scale, so BN costs no pass over the (R, B, H, T, T) maps of its own.  The
    conv output's statistics come from the heads' (H x H) second moments: mean_g = Theta_g m + b_g and
    var_g = Theta_g Cov Theta_g^T, with m and Cov of A - 1/T (an exact shift that keeps float32 from
    cancelling: softmax maps sit near 1/T).
    """
    shift = 1.0 / A.shape[-1]
    Ac = A - shift
    if train:
        flat = Ac.transpose(1, 2).flatten(2)  # (R, H, n)
        n = flat.shape[-1]
        if theta is None:
            var, m = torch.var_mean(flat, dim=-1, unbiased=False)
            mean = m + shift
        else:
            m = flat.mean(-1)
            cov = torch.bmm(flat, flat.transpose(1, 2)) / n - m[:, :, None] * m[:, None, :]
            mean = torch.einsum("rgh,rh->rg", theta, m + shift) + bias
            var = torch.einsum("rgh,rhk,rgk->rg", theta, cov, theta).clamp(min=0.0)
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            running_var.mul_(1 - momentum).add_(var.detach() * (n / max(n - 1, 1)), alpha=momentum)
    else:
        mean, var = running_mean, running_var
    s = gamma * scale * torch.rsqrt(var + eps)  # (R, H)
    # output = s * (Theta (Ac + shift) + b - mean) + beta scale = (s Theta) Ac + offset
    if theta is None:
        offset = s * (shift - mean) + beta * scale
        return torch.addcmul(offset[:, None, :, None, None], Ac, s[:, None, :, None, None])
    mixed = theta * s[:, :, None]
    offset = s * (shift * theta.sum(-1) + bias - mean) + beta * scale
    return torch.einsum("rgh,rbhij->rbgij", mixed, Ac) + offset[:, None, :, None, None]


def effective_maps(A: torch.Tensor, attention: str, w: dict, bn_mean: torch.Tensor | None,
                   bn_var: torch.Tensor | None, train: bool, *, drop: float = 0.0,
                   generator: torch.Generator | None = None, transform_scale: bool = False,
                   head_dim: int = 1) -> torch.Tensor:
    """The maps that multiply V for each DeepViT variant, from the softmax maps A (R, B, H, T, T):
    attention dropping (training only), re-attention's head mixing Theta, and its BatchNorm over heads
    (Zhou et al. 2021, Eq. 5: Re-Attention(Q, K, V) = Norm(Theta^T softmax(QK^T / sqrt(d))) V).
    ``w`` holds theta, theta_b, bn_g, bn_b for the variants that use them."""
    E = A
    if attention == "drop" and train:
        E = drop_entries(A, drop, generator)
    if attention in NORMALISES:
        mixes = attention in MIXES_HEADS
        return normalised_mix(E, w["theta"] if mixes else None, w["theta_b"] if mixes else None, w["bn_g"],
                              w["bn_b"], bn_mean, bn_var, train, scale=head_dim ** -0.5 if transform_scale else 1.0)
    if attention in MIXES_HEADS:
        E = mix_heads(E, w["theta"], w["theta_b"])
    return E


def reattention_closed_form(A: torch.Tensor, theta: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                            eps: float = 1e-5) -> torch.Tensor:
    """The identity above, evaluated without BN's mean: gamma Theta^T(A - 11^T/T) / sqrt(sigma^2 + eps) + beta.

    sigma_g^2 is the mean square of the centred mixture over (images, i, j), which equals BN's biased
    batch variance when the identity holds.  A (R, B, H, T, T) must be row-stochastic.
    """
    T = A.shape[-1]
    centred = torch.einsum("rgh,rbhij->rbgij", theta, A - 1.0 / T)
    var = (centred ** 2).mean((1, 3, 4))
    shape = (A.shape[0], 1, A.shape[2], 1, 1)
    return centred * torch.rsqrt(var.view(shape) + eps) * gamma.view(shape) + beta.view(shape)
