"""Figures: built as plain ``matplotlib.figure.Figure`` objects and saved reproducibly.

Importing this module changes no global state: it selects no backend and edits no rcParams, so a
notebook keeps its inline figures.  Experiments build figures with :func:`subplots` (a Figure that
pyplot does not track, so nothing accumulates in a global figure list) and return them in a dict
``{name: Figure}``; :func:`render` applies the package's style while they are drawn, and :func:`save`
writes a PNG with the "Software" metadata removed and no timestamp, so an unchanged figure is
byte-identical across reruns and does not churn git.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

STYLE = {"figure.dpi": 100, "savefig.dpi": 120, "font.size": 9, "axes.titlesize": 9, "svg.hashsalt": "dynamics"}


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, layout=None, **kw):
    """``(Figure, axes)`` like ``pyplot.subplots``, without registering the figure with pyplot."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kw)


def render(plot: Callable[..., Mapping[str, Figure]], *args: Any) -> dict[str, Figure]:
    """Call an experiment's ``plot(*args)`` under the package style; returns its figures by name."""
    with matplotlib.rc_context(STYLE):
        figs = plot(*args)
    bad = [k for k, v in figs.items() if not isinstance(v, Figure)]
    if bad:
        raise TypeError(f"plot() must return {{name: Figure}}; got non-figures for {bad}")
    return dict(figs)


def png_bytes(fig: Figure) -> bytes:
    with matplotlib.rc_context(STYLE):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically; returns the path."""
    from ..sweep.store import atomic_write_bytes

    atomic_write_bytes(Path(path), png_bytes(fig))
    return Path(path)


def save_all(figs: Mapping[str, Figure], directory: Path) -> list[Path]:
    return [save(fig, Path(directory) / f"{name}.png") for name, fig in figs.items()]
