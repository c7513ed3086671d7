"""The exact rank sweep over widths and depths for one (heads, positions, residual) family.

Order: depth L outer, width d_x inner, so each cell can use what is already known:

* hint (where the template growth starts): the largest of r(d_x, L-1)^2 / r(d_x, L-2) (ln-rank
  increments do not shrink with depth in either regime of Levine et al.), r(d_x - H, L) and
  r(d_x - H, L)^2 / r(d_x - 2H, L) (log-linear in d_x; the measured ranks are log-concave in d_x,
  so this overestimates);
* not computed: when that hint already reaches the largest grid the cell is skipped as
  "predicted too large" (an estimate: its rank is left empty, never filled in);
* certified "does not fit": the generic rank never falls when d_x grows (a width-d network with
  zero-padded weights computes the width-(d-H) network on the first d-H input coordinates, and
  generic templates project to generic templates), and with residual connections it never falls
  when L grows (zero the last layer).  A cell whose widest measured narrower neighbour (or, with
  residual, the cell one layer shallower) filled the largest grid is recorded as a lower bound
  without being evaluated.

Every exact rank is measured with the first (prime, seed) pair, growing the templates until the
rank stops; the other pairs are then measured on the smaller of the two grids that agreed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from .points import choose_points, largest_points, point_rank
from .seprank import MAX_SIDE, RankResult, RankSpec, grid_rank, grid_shape, largest_grid, validate
from .theory import n2_rank


@dataclasses.dataclass(frozen=True)
class Cell:
    """What is known about one (d_x, L) after the sweep: rank is exact when status == "exact",
    a lower bound when status starts with "lower bound"."""

    d_x: int
    depth: int
    rank: int
    status: str


def max_rank(spec: RankSpec, max_side: int, points: str = "grid", max_bytes: float = 4 * 2**30) -> int:
    """The largest smaller-side of a grid (or random-point matrix) that fits: ranks at or above it
    cannot be resolved."""
    if points == "random":
        return largest_points(max_side, max_bytes)
    return min(largest_grid(spec.positions, max_side)[1:])


def ranker(kind: str) -> Callable[..., RankResult]:
    """The rank measurement for a point kind: :func:`.points.point_rank` ("random") or
    :func:`.seprank.grid_rank` ("grid"); both take the same arguments and certify the same way."""
    return point_rank if kind == "random" else grid_rank


def matrix_side(spec: RankSpec, kind: str, K: int) -> int:
    """The smaller matrix side at size K: K random points a side, or the deduplicated K-template grid's."""
    return K if kind == "random" else min(grid_shape(K, spec.n_a, spec.n_b))


def sweep_family(widths: Sequence[int], depths: Sequence[int], heads: int, positions: int, residual: bool,
                 pairs: Sequence[tuple[int, int]], max_side: int = MAX_SIDE, input_rank: int = 0,
                 on_row: Callable[[dict], None] | None = None, start: float = 1.2,
                 confirm: float = 1.1, max_bytes: float = 4 * 2**30,
                 first_hint: float | None = None,
                 on_step: Callable[[RankSpec, int, int], None] | None = None,
                 points: str = "grid") -> list[dict]:
    """Rows (one per cell and (prime, seed) pair) for every width divisible by ``heads``.

    ``first_hint``: the expected rank of a cell that no measured cell (and, for N = 2, no closed
    form) predicts -- in practice the first cell of a one-cell profile.  It only sets where the
    template growth starts (the cost), never the rank: a rank is exact only when two template
    counts agree below both matrix sides.  ``max_bytes`` bounds each grid's memory
    (:func:`seprank.grid_bytes`).  ``on_step(spec, K, rank)`` is called after each main-run grid is
    ranked (progress inside a cell that may take many minutes).  ``points="random"`` ranks m x m
    matrices at independent random points (:func:`.points.point_rank`; ``templates`` then counts
    points per side) instead of template grids; ``"auto"`` chooses per cell
    (:func:`.points.choose_points`), and the row's ``points`` says which was used.

    Row keys: d_x, L, heads, positions, residual, input_rank, points, prime, seed, templates,
    prev_templates, rank, status, role ("main" or "cross-check"), seconds.
    """
    rows: list[dict] = []
    known: dict[tuple[int, int], Cell] = {}
    widths = [d for d in sorted(widths) if d % heads == 0]
    for L in sorted(depths):
        for d in widths:
            spec = RankSpec(d, L, heads, positions, residual, min(input_rank, d) if input_rank else 0)
            kind = choose_points(spec, points)
            validate(spec, max_side, max_bytes, kind)
            limit = max_rank(spec, max_side, kind, max_bytes)
            base = dict(d_x=d, L=L, heads=heads, positions=positions, residual=residual,
                        input_rank=spec.input_rank, points=kind)

            def unmeasured(known_rank: int, rank: int, status: str, base=base, d=d, L=L) -> None:
                """Record a cell that is not evaluated: a certified lower bound or a prediction."""
                known[(d, L)] = Cell(d, L, known_rank, status)
                row = base | dict(prime=pairs[0][0], seed=pairs[0][1], templates=0, prev_templates=0,
                                  rank=rank, status=status, role="main", seconds=0.0)
                rows.append(row)
                if on_row:
                    on_row(row)

            skip = _certified_too_large(known, d, L, heads, residual, limit)
            if skip is not None:
                unmeasured(skip[0], skip[0], skip[1])
                continue
            narrower = _widest_narrower(known, d, L, heads)
            if narrower is not None and narrower.status.startswith("not computed"):
                # The rank never falls with d_x, so a cell wider than one predicted too large is too.
                unmeasured(limit, -1, f"not computed: rank >= rank(d_x={narrower.d_x}), predicted >= {limit} "
                                      "(largest grid)")
                continue
            hint = _hint(known, d, L, heads)
            if hint is None:
                hint = first_hint
            if positions == 2 and not input_rank:
                # the proven N = 2 upper bound (theory.n2_rank, docs/depth_width.md) caps the guess
                bound = float(n2_rank(d, L))
                hint = bound if hint is None else min(hint, bound)
            if hint is not None and hint >= limit:
                # Not evaluated: the extrapolated rank already exceeds the largest grid (an estimate,
                # not a certificate, so the rank column stays empty).
                unmeasured(limit, -1, f"not computed: predicted rank {hint:.0f} >= {limit} (largest grid)")
                continue
            t0 = time.perf_counter()
            step = (lambda K, r, spec=spec: on_step(spec, K, r)) if on_step else None
            rank_fn = ranker(kind)
            res = rank_fn(spec, *pairs[0], hint=hint, max_side=max_side, start=start, confirm=confirm,
                          max_bytes=max_bytes, on_step=step)
            what = "random points" if kind == "random" else "templates"
            if res.converged:
                status = "exact"
            elif res.rank >= matrix_side(spec, kind, res.templates):
                status = f"lower bound: grid of {res.templates} {what} is full rank"
            else:
                status = f"lower bound: rank still growing at the largest grid ({res.templates} {what})"
            known[(d, L)] = Cell(d, L, res.rank, status)
            row = base | dict(prime=res.prime, seed=res.seed, templates=res.templates,
                              prev_templates=res.prev_templates, rank=res.rank, status=status, role="main",
                              seconds=round(time.perf_counter() - t0, 3))
            rows.append(row)
            if on_row:
                on_row(row)
            if not res.converged:
                continue
            K_c = res.prev_templates  # the smaller of the two grids that agreed on the rank
            for prime, seed in pairs[1:]:
                t0 = time.perf_counter()
                other = rank_fn(spec, prime, seed, fixed=K_c, max_side=max_side, max_bytes=max_bytes)
                row = base | dict(prime=prime, seed=seed, templates=K_c, prev_templates=K_c, rank=other.rank,
                                  status="exact" if other.rank < matrix_side(spec, kind, K_c)
                                  else "lower bound: full rank", role="cross-check",
                                  seconds=round(time.perf_counter() - t0, 3))
                rows.append(row)
                if on_row:
                    on_row(row)
    return rows


def _hint(known: dict, d: int, L: int, heads: int) -> float | None:
    """Expected rank: ln-rank increments in L do not shrink, and the rank does not fall in d_x."""
    guesses = []
    r1 = known.get((d, L - 1))
    r2 = known.get((d, L - 2))
    if r1 is not None and r1.status != "exact":
        return float(r1.rank)  # depth L-1 already reached (or was predicted to reach) the largest grid
    if r1 is not None:
        prev = r2.rank if (r2 is not None and r2.status == "exact") else 1  # depth 0: f = <w, x^0>, rank 1
        guesses.append(r1.rank**2 / prev)
    left = known.get((d - heads, L))
    if left is not None:
        guesses.append(left.rank)
        left2 = known.get((d - 2 * heads, L))
        if left.status == "exact" and left2 is not None and left2.status == "exact":
            guesses.append(left.rank**2 / left2.rank)  # log-linear extrapolation in d_x
    return max(guesses) if guesses else None


def _widest_narrower(known: dict, d: int, L: int, heads: int) -> Cell | None:
    """The widest measured (or predicted) cell d' < d at depth L with d - d' a multiple of H."""
    narrower = [w for (w, depth) in known if depth == L and w < d and (d - w) % heads == 0]
    return known.get((max(narrower), L)) if narrower else None


def _certified_too_large(known: dict, d: int, L: int, heads: int, residual: bool, limit: int):
    """(lower bound, status) when a smaller neighbour already reached the largest grid, else None.

    The width neighbour is the widest measured d' < d at the same depth (not only d - H: the default
    widths jump from 20 to 24, 32, 48, 64); the rank never falls from d' to d by the zero-padding
    argument in the module docstring, applied (d - d')/H times."""
    left = _widest_narrower(known, d, L, heads)
    if left is not None and left.status.startswith("lower bound") and left.rank >= limit:
        return left.rank, f"lower bound: rank(d_x={left.d_x}) >= {left.rank} and rank grows with d_x"
    below = known.get((d, L - 1))
    if residual and below is not None and below.status.startswith("lower bound") and below.rank >= limit:
        return below.rank, f"lower bound: rank(L={L - 1}) >= {below.rank} and rank grows with L (residual)"
    return None
