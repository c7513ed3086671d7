"""Attention collapse across depth (Zhou et al. 2021, DeepViT) and its mechanisms.

Modules::

    metrics         cross-layer attention similarity M^{p,q}_{h,t} (DeepViT Eq. 2), similarity ratios,
                    similar-block counts, attention entropy, row identity, token residual
    attention       softmax attention and its variants: re-attention (1x1 conv over heads + BatchNorm),
                    temperature, attention dropping; the exact DC-removal identity of re-attention's BN
    vit             a pre-LN vision transformer batched along a leading run axis (seeds train together)
    data            scikit-learn's 8x8 digits and a synthetic "majority glyph" task, as patch tokens
    train           batched AdamW training, evaluation and attention probes

Dong et al.'s pure-attention rank collapse is :mod:`dynamics.rank_collapse` (the one simulator).
"""
