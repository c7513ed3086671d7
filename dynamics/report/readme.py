"""Refresh the result blocks in README.md from ``results/``.

A block is ``<!-- results: PATH -->`` ... ``<!-- /results -->``; its body is replaced by the file at
``PATH`` (relative to the repository root), so the README's tables always match the committed results.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError
from ..sweep.store import atomic_write_text

BLOCK = re.compile(r"(<!-- results: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def refresh(readme: Path) -> list[str]:
    """Rewrite every block in ``readme``; returns the paths that were included."""
    if not readme.exists():
        raise UserError(f"{readme} does not exist")
    root = readme.parent
    text = readme.read_text()
    used: list[str] = []

    def fill(m: re.Match) -> str:
        path = root / m["path"]
        used.append(m["path"])
        body = path.read_text() if path.exists() else f"_(missing: run the experiment to create `{m['path']}`)_\n"
        return m.group(1) + body + m.group(4)

    new = BLOCK.sub(fill, text)
    if new != text:
        atomic_write_text(readme, new)
    return used
