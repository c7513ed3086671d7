"""Saving matplotlib figures reproducibly.

PNGs are written with the "Software" metadata removed and no timestamp, so an unchanged figure is
byte-identical across reruns and does not churn git.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the project machines
import matplotlib.pyplot as plt  # noqa: E402

from ..sweep.store import atomic_write_bytes  # noqa: E402

plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 120, "font.size": 9, "axes.titlesize": 9,
                     "svg.hashsalt": "dynamics"})


def save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
