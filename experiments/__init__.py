"""The experiment registry: name -> module.  Modules are imported only when used.

Each module defines ``EXPERIMENT`` (a :class:`dynamics.experiment.Experiment`).
"""

from __future__ import annotations

import difflib
import importlib

from dynamics.errors import UserError

REGISTRY = {
    "depth-width-rank": "experiments.depth_width_rank",
    "depth-width-theory": "experiments.depth_width_theory",
    "depth-width-budget": "experiments.depth_width_budget",
    "rank-collapse": "experiments.rank_collapse",
    "dacdetr-gather": "experiments.dacdetr_gather",
    "wikitext-attention": "experiments.wikitext_attention",
    "scan-snap-wikitext": "experiments.scan_snap_wikitext",
    "scan-snap-fig4": "experiments.scan_snap_fig4",
    "scan-snap-fig6": "experiments.scan_snap_fig6",
    "scan-snap-theory": "experiments.scan_snap_theory",
    "scan-snap-phase": "experiments.scan_snap_phase",
    "scan-snap-closed-forms": "experiments.scan_snap_closed_forms",
    "deepvit-collapse": "experiments.deepvit_collapse",
    "joma-invariant": "experiments.joma_invariant",
    "joma-attention": "experiments.joma_attention",
    "joma-fig4": "experiments.joma_fig4",
    "joma-hier": "experiments.joma_hier",
    "joma-wikitext": "experiments.joma_wikitext",
}


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str):
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; see `dynamics list`"
        raise UserError(f"unknown experiment {name!r}{hint}")
    return importlib.import_module(REGISTRY[name]).EXPERIMENT
