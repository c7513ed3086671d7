"""Gather versus disperse in DETR decoders (DAC-DETR, Hu et al., NeurIPS 2023).

Modules:

- :mod:`~dynamics.detr.analytic`: a numpy particle model in the plane: cross-attention as a
  soft-assignment (mean-shift) step toward keys, self-attention as averaging (untrained) or
  repulsion (learned duplicate suppression); queries per object within a radius after every sublayer.
- :mod:`~dynamics.detr.boxes`: box formats, batched IoU and generalised IoU.
- :mod:`~dynamics.detr.scenes`: synthetic images with 1-6 axis-aligned boxes on a small canvas.
- :mod:`~dynamics.detr.assign`: one-to-one Hungarian matching and the DAC-DETR one-to-many rule.
- :mod:`~dynamics.detr.model`: a toy DETR with an O-decoder (SA -> CA -> FFN) and an auxiliary
  C-decoder (CA -> FFN, sharing CA, FFN and heads), with per-sublayer probes.
- :mod:`~dynamics.detr.losses`: focal classification, L1 and GIoU box losses for both decoders.
- :mod:`~dynamics.detr.train`: the training loop (AdamW, seeded data stream).
- :mod:`~dynamics.detr.metrics`: queries per object above an IoU threshold, COCO-style AP.

Nothing here imports matplotlib, the CLI or the run store.
"""
