"""Scan and Snap (Tian, Wang, Chen, Du; NeurIPS 2023): the 1-layer Y/Z transformer and its theory.

``simulate(spec, eta_y=..., eta_z=..., seeds=..., steps=...)`` runs the batched simulator and returns a
:class:`Simulation` whose ``to_frame()`` is a tidy DataFrame of attention per step.  Submodules: data
(sequence classes), train (batched SGD/Adam), population (T -> infinity flow), theory (closed forms),
symbolic (sympy derivations), metrics (attention, entropy).  Imported lazily: no torch at import.
"""

from __future__ import annotations

__all__ = ["SyntheticSpec", "Simulation", "simulate"]


def __getattr__(name: str):
    if name in ("simulate", "Simulation"):
        from . import session as _m

        return getattr(_m, name)
    if name == "SyntheticSpec":
        from .data import SyntheticSpec

        return SyntheticSpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
