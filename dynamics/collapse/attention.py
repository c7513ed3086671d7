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
    """softmax(q k^T / (sqrt(d_h) tau)) for q, k (..., T, d_h) -> (..., T, T)."""
    scale = q.shape[-1] ** -0.5 / temperature
    return torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, dim=-1)


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


def batch_norm_heads(C: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor,
                     running_var: torch.Tensor, train: bool, momentum: float = 0.1,
                     eps: float = 1e-5) -> torch.Tensor:
    """BatchNorm2d with heads as channels, per run: statistics over (images, i, j).

    C (R, B, H, T, T); gamma, beta, running_mean, running_var (R, H).  In training mode the batch
    statistics normalise (biased variance) and the running estimates are updated in place with
    PyTorch's rule (unbiased variance, ``momentum``), so one run matches ``nn.BatchNorm2d`` exactly.
    """
    if train:
        flat = C.transpose(1, 2).flatten(2)  # (R, H, B*T*T): reducing a contiguous axis is much faster
        var, mean = torch.var_mean(flat, dim=-1, unbiased=False)
        n = flat.shape[-1]
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            running_var.mul_(1 - momentum).add_(var.detach() * (n / max(n - 1, 1)), alpha=momentum)
    else:
        mean, var = running_mean, running_var
    shape = (C.shape[0], 1, C.shape[2], 1, 1)
    return (C - mean.view(shape)) * torch.rsqrt(var.view(shape) + eps) * gamma.view(shape) + beta.view(shape)


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
    if attention in MIXES_HEADS:
        E = mix_heads(E, w["theta"], w["theta_b"])
    if attention in NORMALISES:
        E = batch_norm_heads(E, w["bn_g"], w["bn_b"], bn_mean, bn_var, train)
        if transform_scale:
            E = E * head_dim ** -0.5
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
