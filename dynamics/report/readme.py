"""Refresh the result blocks in README.md from ``results/``.

A block is ``<!-- results: PATH -->`` ... ``<!-- /results -->``; its body is replaced by the file at
``PATH``, so the README's tables always match the committed results.  ``PATH`` is relative to the
README's directory and must name a regular file under its ``results/`` directory: absolute paths,
``..``, and symbolic links that lead outside ``results/`` are refused, so a README marker cannot pull a
system file into a commit.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from ..errors import UserError
from ..sweep.store import atomic_write_text

BLOCK = re.compile(r"(<!-- results: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)
MAX_BYTES = 1 << 20  # a result block is a table or a summary, never megabytes


def resolve(root: Path, name: str) -> Path:
    """The file a marker names, checked to lie under ``root/results``; a UserError otherwise."""
    rel = PurePosixPath(name)
    results = (root / "results").resolve()
    if rel.is_absolute() or "\\" in name or ".." in rel.parts or not rel.parts or rel.parts[0] != "results":
        raise UserError(f"README marker {name!r}: only files under results/ can be included")
    path = (root / rel).resolve()
    if results not in path.parents:
        raise UserError(f"README marker {name!r}: resolves outside results/ (a symbolic link?)")
    return path


def refresh(readme: Path) -> list[str]:
    """Rewrite every block in ``readme``; returns the paths that were included.  Every marker is
    checked before the README is written."""
    if not readme.is_file():
        raise UserError(f"{readme} does not exist")
    root = readme.parent
    try:
        text = readme.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{readme}: cannot read ({exc})") from None
    used: list[str] = []

    def fill(m: re.Match) -> str:
        path = resolve(root, m["path"])
        used.append(m["path"])
        if path.is_file():
            if path.stat().st_size > MAX_BYTES:
                raise UserError(f"{m['path']}: larger than {MAX_BYTES} bytes; not a result block")
            try:
                body = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"{m['path']}: cannot read ({exc})") from None
        elif path.exists():
            raise UserError(f"README marker {m['path']!r}: not a regular file")
        else:
            body = f"_(missing: run the experiment to create `{m['path']}`)_\n"
        return m.group(1) + body + m.group(4)

    new = BLOCK.sub(fill, text)
    if new != text:
        atomic_write_text(readme, new)
    return used
