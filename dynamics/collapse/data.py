"""Small image tasks as patch tokens: scikit-learn's 8x8 digits and two synthetic glyph tasks.

Both give images (N, C, S, S) in [0, 1]-ish units and integer labels; :func:`patchify` turns them into
(N, n_patches, C p^2) token inputs.  Nothing is downloaded: the digits ship inside scikit-learn.

Majority glyph (synthetic, needs global reasoning): a 16x16 canvas of 4x4 cells; three of the 16
cells hold a 4x4 glyph from ``n_glyphs`` fixed binary patterns, two of the same type a and one of a
different type b, at random cells; the label is a.  The answer depends on comparing cells that can
be anywhere in the image, so no single patch (and no local filter) decides it; chance is
1/``n_glyphs``.  Glyph intensity varies in [0.6, 1] and Gaussian pixel noise is added.

Distinct glyphs ("relations", issue 17; the task DeepViT's accuracy-vs-depth claim is tested on):
the same 16x16 canvas of 4x4 cells (one cell = one patch token), ``n_placed`` glyphs from the six
``GLYPHS`` at distinct random cells, and the label is how many *different* glyph types appear
(``min_distinct`` .. ``max_distinct``, drawn uniformly, so chance is 1 / number of classes).  The
label is a function of the equality relation between all pairs of occupied cells: it does not change
under any relabelling of the glyph types or any permutation of the cells, so no patch, no position
and no per-type detector decides it; a model has to compare patches that can be anywhere, and to
aggregate those comparisons (count the equivalence classes), which is where stacked attention blocks
can pay.  Intensity varies in [0.6, 1] per glyph and Gaussian pixel noise is added, so equality has
to be judged from shapes, not from exact pixel values.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from ..errors import UserError

DATASETS = ("digits", "glyphs", "relations", "arrows")

# Fixed 4x4 glyph patterns (1 = ink): distinct enough to separate, simple enough for 4-pixel tokens.
GLYPHS = np.array([
    [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]],  # box
    [[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0]],  # bar
    [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],  # diagonal
    [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]],  # band
    [[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]],  # cross
    [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]],  # checker
], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Split:
    """Train/test images (N, C, S, S) float32 and labels (N,) int64, plus a content hash."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    digest: str
    x_val: np.ndarray | None = None  # a validation split (model selection), when the task has one
    y_val: np.ndarray | None = None

    @property
    def image_size(self) -> int:
        return self.x_train.shape[-1]

    @property
    def channels(self) -> int:
        return self.x_train.shape[1]


def image_size(name: str) -> int:
    return {"digits": 8, "glyphs": 16, "relations": 16, "arrows": 16}[name]


def load(name: str, n_train: int = 0, n_test: int = 0, seed: int = 0) -> Split:
    """The task ``name``; ``n_train``/``n_test`` = 0 keep all digits (1347/450) or 2000/500 glyphs."""
    if name == "digits":
        return digits(n_train, n_test, seed)
    if name == "glyphs":
        return glyphs(n_train or 2000, n_test or 500, seed=seed)
    if name == "relations":
        return relations(n_train or 6000, n_test or 1000, seed=seed)
    raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _split(x, y, n_classes, n_test, n_train, seed) -> Split:
    order = np.random.default_rng(seed).permutation(len(y))
    test, train = order[:n_test], order[n_test:]
    if n_train:
        train = train[:n_train]
    x = x.astype(np.float32)
    digest = hashlib.sha256(x.tobytes() + y.astype(np.int64).tobytes()).hexdigest()[:16]
    return Split(x[train], y[train].astype(np.int64), x[test], y[test].astype(np.int64), n_classes, digest)


def digits(n_train: int = 0, n_test: int = 0, seed: int = 0) -> Split:
    """scikit-learn's 1797 8x8 handwritten digits (16 grey levels), scaled to [0, 1]; 450 held out."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - dependency of the package
        raise UserError("the digits task needs scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    x = d.images[:, None] / 16.0
    n_test = n_test or 450
    if n_train and n_train + n_test > len(x):
        raise UserError(f"digits has {len(x)} images; n_train + n_test = {n_train + n_test}")
    return _split(x, d.target, 10, n_test, n_train, seed)


def glyphs(n_train: int, n_test: int, n_glyphs: int = 4, noise: float = 0.15, seed: int = 0) -> Split:
    """The majority-glyph task (module docstring): 16x16 images, label = the glyph type shown twice."""
    if not 2 <= n_glyphs <= len(GLYPHS):
        raise UserError(f"n_glyphs must be in [2, {len(GLYPHS)}], got {n_glyphs}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x61795]))
    n = n_train + n_test
    a = rng.integers(n_glyphs, size=n)
    b = (a + rng.integers(1, n_glyphs, size=n)) % n_glyphs  # uniform over types != a
    types = np.stack([a, a, b], 1)  # (n, 3)
    cells = np.argsort(rng.random((n, 16)), axis=1)[:, :3]  # three distinct cells of the 4x4 grid
    intensity = rng.uniform(0.6, 1.0, size=(n, 3))
    grid = np.zeros((n, 16, 4, 4))
    rows = np.arange(n)[:, None]
    grid[rows, cells] = GLYPHS[types] * intensity[..., None, None]
    # (n, 4, 4 cells) x (4, 4 pixels) -> (n, 16, 16) canvas
    canvas = grid.reshape(n, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(n, 16, 16)
    canvas = canvas + noise * rng.standard_normal(canvas.shape)
    x = canvas[:, None]
    # The generator already randomises order; the split seed only fixes which samples are held out.
    return _split(x, a, n_glyphs, n_test, 0, seed)


def relations(n_train: int, n_test: int, n_val: int = 0, n_placed: int = 6, min_distinct: int = 2,
              max_distinct: int = 5, noise: float = 0.15, seed: int = 0) -> Split:
    """The distinct-glyphs task (module docstring): label = number of distinct glyph types - ``min_distinct``.

    Train, validation (``n_val``, default = ``n_test``) and test images are independent draws of one
    generator seeded by ``SeedSequence([seed, tag])``; images (N, 1, 16, 16) float32.
    """
    if not 1 <= min_distinct <= max_distinct <= min(n_placed, len(GLYPHS)) or n_placed > 16:
        raise UserError(f"need 1 <= min_distinct <= max_distinct <= min(n_placed, {len(GLYPHS)}) and n_placed <= 16, "
                        f"got {min_distinct}, {max_distinct}, {n_placed}")
    n_val = n_val or n_test
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x2E1A7]))
    n = n_train + n_val + n_test
    k = rng.integers(min_distinct, max_distinct + 1, size=n)  # distinct types per image
    chosen = np.argsort(rng.random((n, len(GLYPHS))), axis=1)  # a random order of the glyph types
    # slot s < k shows type chosen[s] (every chosen type appears once); the other slots repeat one of
    # the k chosen types at random; the slots are then shuffled over random cells
    pick = np.where(np.arange(n_placed) < k[:, None], np.arange(n_placed),
                    (rng.random((n, n_placed)) * k[:, None]).astype(np.int64))
    types = np.take_along_axis(chosen, pick, 1)  # (n, n_placed)
    cells = np.argsort(rng.random((n, 16)), axis=1)[:, :n_placed]
    intensity = rng.uniform(0.6, 1.0, size=(n, n_placed))
    grid = np.zeros((n, 16, 4, 4))
    grid[np.arange(n)[:, None], cells] = GLYPHS[types] * intensity[..., None, None]
    canvas = grid.reshape(n, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(n, 16, 16)
    x = (canvas + noise * rng.standard_normal(canvas.shape))[:, None].astype(np.float32)
    y = (k - min_distinct).astype(np.int64)
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16]
    a, b = n_train, n_train + n_val
    return Split(x[:a], y[:a], x[b:], y[b:], max_distinct - min_distinct + 1, digest, x_val=x[a:b], y_val=y[a:b])


def arrows(n_train: int, n_test: int, n_val: int = 0, hops: int = 3, noise: float = 0.15, seed: int = 0) -> Split:
    """Arrow chasing: every cell of the 4x4 grid shows one of four glyphs (box, bar, diagonal, band),
    read as a move (right, down, left, up; the grid wraps around); one cell, the start, shows its glyph
    inverted (1 - pattern).  From the start, follow ``hops`` moves; the label is the glyph of the cell
    reached (4 classes, chance 1/4).  Each hop is a routing step between patches whose address depends
    on the content of the previous one: a k-hop answer needs a chain of k lookups.
    """
    if hops < 1:
        raise UserError(f"hops must be at least 1, got {hops}")
    n_val = n_val or n_test
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA770]))
    n = n_train + n_val + n_test
    dirs = rng.integers(4, size=(n, 16))
    start = rng.integers(16, size=n)
    rows = np.arange(n)
    pos = start.copy()
    dr, dc = np.array([0, 1, 0, -1]), np.array([1, 0, -1, 0])
    for _ in range(hops):
        d = dirs[rows, pos]
        pos = ((pos // 4 + dr[d]) % 4) * 4 + (pos % 4 + dc[d]) % 4
    y = dirs[rows, pos].astype(np.int64)
    grid = GLYPHS[:4][dirs] * rng.uniform(0.6, 1.0, size=(n, 16))[..., None, None]  # (n, 16, 4, 4)
    grid[rows, start] = (1.0 - GLYPHS[:4][dirs[rows, start]]) * rng.uniform(0.6, 1.0, size=n)[:, None, None]
    canvas = grid.reshape(n, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(n, 16, 16)
    x = (canvas + noise * rng.standard_normal(canvas.shape))[:, None].astype(np.float32)
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16]
    a, b = n_train, n_train + n_val
    return Split(x[:a], y[:a], x[b:], y[b:], 4, digest, x_val=x[a:b], y_val=y[a:b])


def patchify(x: np.ndarray, patch: int) -> np.ndarray:
    """(N, C, S, S) -> (N, (S/p)^2, C p^2): non-overlapping p x p patches in row-major order."""
    N, C, S, _ = x.shape
    g = S // patch
    return x.reshape(N, C, g, patch, g, patch).transpose(0, 2, 4, 1, 3, 5).reshape(N, g * g, C * patch * patch)
