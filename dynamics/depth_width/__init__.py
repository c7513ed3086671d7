"""Width versus depth in self-attention (Levine et al. 2020 and related results).

Modules: ``modular`` (exact Z_p arithmetic and rank), ``network`` (the softmax-, LayerNorm- and
ReLU-free network Levine et al. analyse), ``seprank`` (grid-tensor separation rank),
``theory`` (closed forms and related bounds), ``transformer`` / ``tasks`` / ``train`` (the
fixed-budget softmax-transformer sweeps).
"""
