"""Training R independent replicas of a small transformer as one tensor program.

* :mod:`.params`: parameters of all replicas in one flat (R, P) buffer with named (R, ...) views;
  per-replica seeds spawned from a ``numpy.random.SeedSequence``.
* :mod:`.ops`: batched linear maps, LayerNorm, attention (DeepViT variants, causal), encoder blocks
  (pre-/post-/no LN, MLP optional, dropout); DETR's cross-attention decoder on these ops is
  :func:`dynamics.detr.train.replica_forward`.
* :mod:`.models`: ViT / sequence classifier / causal LM stacks of those blocks.
* :mod:`.optim`: fused AdamW and SGD(momentum) over the flat buffers, per-replica learning rates and
  schedules.
* :mod:`.trainer`: the step: one backward, per-replica clipping, divergence freeze, recording at
  chosen steps, precision (device, dtype, TF32, bf16 autocast).
* :mod:`.reference`: one replica as a plain nn.Module (tests and benchmark baseline).
"""

from .optim import FusedAdamW, FusedSGD, Schedule, lr_table
from .params import ParamSpec, ReplicaParams, replica_seeds
from .trainer import Precision, Record, Trainer

__all__ = ["FusedAdamW", "FusedSGD", "ParamSpec", "Precision", "Record", "ReplicaParams", "Schedule", "Trainer",
           "lr_table", "replica_seeds"]
