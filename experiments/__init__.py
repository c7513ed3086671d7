"""The experiment registry: name -> module.  Modules are imported only when used.

Each module defines ``EXPERIMENT`` (a :class:`dynamics.experiment.Experiment`).  The folder lives at
the top of the repository but installs as ``dynamics.experiments`` (setuptools ``package-dir``), so a
user's own ``experiments`` module cannot shadow it; modules are found relative to this package.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import types

from dynamics.errors import UserError

REGISTRY = {
    "depth-width-rank": ".depth_width_rank",
    "depth-width-theory": ".depth_width_theory",
    "depth-width-budget": ".depth_width_budget",
    "depth-width-bytes": ".depth_width_bytes",
    "depth-width-trained": ".depth_width_trained",
    "rank-collapse": ".rank_collapse",
    "dacdetr-gather": ".dacdetr_gather",
    "wikitext-attention": ".wikitext_attention",
    "scan-snap-wikitext": ".scan_snap_wikitext",
    "scan-snap-fig4": ".scan_snap_fig4",
    "scan-snap-fig6": ".scan_snap_fig6",
    "scan-snap-theory": ".scan_snap_theory",
    "scan-snap-phase": ".scan_snap_phase",
    "scan-snap-closed-forms": ".scan_snap_closed_forms",
    "scan-snap-finite-t": ".scan_snap_finite_t",
    "scan-snap-t0-law": ".scan_snap_t0_law",
    "scan-snap-fig5": ".scan_snap_fig5",
    "scan-snap-fig11-12": ".scan_snap_fig11_12",
    "scan-snap-wikitext-resampled": ".scan_snap_wikitext_resampled",
    "scan-snap-wikitext-windows": ".scan_snap_wikitext_windows",
    "deepvit-collapse": ".deepvit_collapse",
    "joma-invariant": ".joma_invariant",
    "joma-attention": ".joma_attention",
    "joma-fig4": ".joma_fig4",
    "joma-hier": ".joma_hier",
    "joma-table1": ".joma_table1",
    "joma-wikitext": ".joma_wikitext",
}


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str):
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else "; see `dynamics list`"
        raise UserError(f"unknown experiment {name!r}{hint}")
    return importlib.import_module(REGISTRY[name], __name__).EXPERIMENT


class _Registry(types.ModuleType):
    """This package, callable: ``dynamics.experiments()`` lists the names (the Python API's entry)."""

    def __call__(self) -> list[str]:
        return names()


sys.modules[__name__].__class__ = _Registry
