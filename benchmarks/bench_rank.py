"""Rank of an n x n matrix over Z_p: FLINT (what the rank sweep uses) against two baselines.

Usage: python benchmarks/bench_rank.py [--n 2000] [--sympy-sizes 200,400] [--numpy-n N]

* flint:  python-flint ``nmod_mat(...).rank()``, timed as conversion (numpy -> Python ints ->
          nmod_mat) plus elimination; the acceptance target is <= 2 s at n = 2000.
* numpy:  ``rank_mod_p_numpy``, plain Gaussian elimination with one vectorised rank-1 update
          per pivot, on the same matrix (or its leading --numpy-n block, extrapolated by n^3).
* sympy:  ``DomainMatrix(..., GF(p)).rank()`` on the leading blocks given by --sympy-sizes;
          pure-Python elimination is far too slow at n = 2000, so its time there is extrapolated
          from those sizes with the fitted exponent (printed, and labelled "extrapolated").

Also (ratios against a baseline measured in the same run):

* row-by-row copy into ``nmod_mat`` (what ``rank_mod_p`` does above ``LIST_LIMIT`` entries, to keep
  memory at 16 bytes an entry) against the one-list conversion;
* the depth-2 grid evaluator (tables over atoms, per-tuple cost independent of d_x) against the
  general layer-by-layer readout, at N = 6, d_x = 12 (``--tuples``).

All three rank engines are asserted to give the same rank where they run on the same block.  Timings on a
shared machine are upper bounds: rerun on an idle one before quoting.

``--part grid``: whole cells of the rank sweep (``seprank.grid_rank``, N = 2 with the sweep's closed-form
hint, one N = 4 and one N = 6 cell), timed in process CPU seconds (robust to other jobs on a shared
machine) three ways in the same process:

* old:     the code at ``--baseline`` (a git revision, default the commit before the grid reuse),
           loaded from git into a private package: every K rebuilt, atom tables rebuilt per chunk;
* rebuild: this code with ``reuse=False`` (every K rebuilt; the evaluator speed-ups only);
* new:     this code (the largest grid kept: smaller K a submatrix, larger K only its new entries).

Each cell asserts the same rank and (K, rank) history on all three, and prints the FLINT share of the
new path.  The last line is ``bench_rank: min_speedup=<x> median_speedup=<y>`` (old / new).

``--part points``: random points (``dynamics.depth_width.points``): the L = 2 pair formula against the
generic evaluator on the same pairs, and whole N = 6 cells on a template grid against random points.

``--part scaling``: FLINT conversion + rank CPU seconds on random full-rank n x n matrices at
``--scaling-sizes``, extrapolated as n^3 to 12000 and 16000, with ``modular.matrix_bytes`` memory.

``--part project``: a projection, not a measurement.  Runs ``rank_sweep.sweep_family`` over the
experiment's default grid (N = 2, 4, 6; widths and depths of ``experiments/depth_width_rank.py``;
three (prime, seed) pairs) with ``_Grid.rank`` replaced by a cost model: the rank at K templates is
min(smaller side, r), with r the proven N = 2 rank C(d + m_L, d) times ``--rank-factor`` for N = 4 and
6 (an assumption: the committed N = 4, L = 2 ranks are 1.8-2x the N = 2 ones); each grid costs
``--us-per-entry`` CPU microseconds per evaluated entry (only new entries, as with reuse) and each
rank ``--flint-alpha`` x rows x cols x rank seconds (conversion included).  The
width-equivalence search is not counted.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dynamics.depth_width.modular import P1, matrix_bytes, rank_mod_p_numpy

BASELINE = "4e45480"  # the last commit before the grid reuse and the once-per-grid atom tables
GRID_CELLS = [(d, 2, 2) for d in range(8, 14)] + [(8, 2, 4), (5, 2, 6)]  # (d_x, L, N), H = 1, no residual


def flint_rank(M: np.ndarray, p: int) -> tuple[int, float, float, float]:
    """(rank, conversion wall s, elimination wall s, total CPU s of this process)."""
    import flint

    c0 = time.process_time()
    t0 = time.perf_counter()
    F = flint.nmod_mat(M.tolist(), p)
    t1 = time.perf_counter()
    r = F.rank()
    return int(r), t1 - t0, time.perf_counter() - t1, time.process_time() - c0


def sympy_rank(M: np.ndarray, p: int) -> tuple[int, float]:
    from sympy import GF
    from sympy.polys.matrices import DomainMatrix

    K = GF(p)
    t0 = time.perf_counter()
    dM = DomainMatrix([[K(int(x)) for x in row] for row in M.tolist()], M.shape, K)
    return int(dM.rank()), time.perf_counter() - t0


def bench_depth2(p: int, T: int) -> None:
    from dynamics.depth_width.network import LinearAttentionNet

    rng = np.random.default_rng(1)
    net = LinearAttentionNet.random(rng, 12, 2, 1, False, p)
    templates = rng.integers(0, p, size=(40, 12), dtype=np.int64)
    idx = rng.integers(0, 40, size=(T, 6))
    t0 = time.perf_counter()
    fast = net.evaluate_grid(templates, idx)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = net.evaluate(templates[idx])
    t_slow = time.perf_counter() - t0
    assert (fast == slow).all()
    print(f"grid    depth 2, N=6, d_x=12, {T} tuples: atom tables {t_fast * 1e6 / T:.2f} us/tuple, layer by layer "
          f"{t_slow * 1e6 / T:.2f} us/tuple  ratio = {t_slow / t_fast:.1f}x")


def bench_points(p: int, pairs: int, cells: list[tuple[int, int]]) -> None:
    """Random points (``dynamics.depth_width.points``): the L = 2 pair formula against the generic
    evaluator on the same pairs (N = 6, d_x = 17), then whole N = 6 cells, template grid against random
    points, in process CPU seconds (each ratio measured in this run)."""
    from dynamics.depth_width.points import RandomPoints, point_rank
    from dynamics.depth_width.seprank import RankSpec, grid_rank

    g = RandomPoints(RankSpec(17, 2, 1, 6, False), p, 0, max_side=4000, max_bytes=2**31, threads=1)
    rows, cols = np.arange(max(1, pairs // 2000)), np.arange(2000)
    pairs = len(rows) * len(cols)
    c0 = time.process_time()
    fast = g.block(rows, cols).ravel()
    t_fast = time.process_time() - c0
    r, c = np.repeat(rows, len(cols)), np.tile(cols, len(rows))
    c0 = time.process_time()
    slow = g.net.evaluate(np.concatenate([g.XA[r], g.XB[c]], axis=1))
    t_slow = time.process_time() - c0
    assert (fast == slow).all()
    print(f"points  L=2, N=6, d_x=17, {pairs} pairs: block formula {t_fast * 1e6 / pairs:.2f} us/pair, generic "
          f"evaluate {t_slow * 1e6 / pairs:.2f} us/tuple  ratio = {t_slow / t_fast:.1f}x")
    for d, side in cells:
        spec = RankSpec(d, 2, 1, 6, False)
        c0 = time.process_time()
        grid = grid_rank(spec, p, 0, max_side=side)
        t_grid = time.process_time() - c0
        c0 = time.process_time()
        pts = point_rank(spec, p, 0, max_side=side, threads=1)
        t_pts = time.process_time() - c0
        print(f"points  N=6 d_x={d} L=2, max_side {side}: grid rank {grid.rank} ({'exact' if grid.converged else 'lower bound'}, "
              f"{t_grid:.1f} s CPU), random points rank {pts.rank} ({'exact' if pts.converged else 'lower bound'}, "
              f"{t_pts:.1f} s CPU)  grid/points = {t_grid / t_pts:.1f}x")


def load_baseline(rev: str):
    """The seprank module of git revision ``rev`` (with its network and modular), imported as a
    private package so that it runs beside this checkout's code in one process."""
    root = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="bench_rank_"))
    pkg = tmp / "_baseline_dynamics"
    (pkg / "depth_width").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("from dynamics.errors import *  # noqa: F403\n")
    (pkg / "depth_width" / "__init__.py").write_text("")
    for name in ("seprank", "network", "modular"):
        src = subprocess.run(["git", "-C", str(root), "show", f"{rev}:dynamics/depth_width/{name}.py"],
                             check=True, capture_output=True, text=True).stdout
        (pkg / "depth_width" / f"{name}.py").write_text(src)
    sys.path.insert(0, str(tmp))
    return importlib.import_module("_baseline_dynamics.depth_width.seprank")


def bench_grid(baseline: str, max_side: int) -> None:
    from dynamics.depth_width import seprank
    from dynamics.depth_width.theory import n2_rank

    old = load_baseline(baseline)
    flint_cpu = [0.0]
    rank_mod_p = seprank.rank_mod_p

    def timed_rank(M, p):
        c0 = time.process_time()
        r = rank_mod_p(M, p)
        flint_cpu[0] += time.process_time() - c0
        return r

    seprank.rank_mod_p = timed_rank
    speedups = []
    print(f"grid cells (H=1, no residual, p={P1}, seed 0, max_side={max_side}); CPU s of this process; "
          f"old = git {baseline}")
    print(f"{'N':>2} {'L':>2} {'d_x':>3} {'rank':>5} {'K history':<24} {'old':>8} {'rebuild':>8} {'new':>8} "
          f"{'(flint)':>8} {'old/new':>8} {'rebuild/new':>11}")
    for d, L, N in GRID_CELLS:
        hint = float(n2_rank(d, L)) if N == 2 else None
        times, results = [], []
        for how in ("old", "rebuild", "new"):
            c0 = time.process_time()
            flint_cpu[0] = 0.0
            if how == "old":
                res = old.grid_rank(old.RankSpec(d, L, 1, N, False), P1, 0, hint=hint, max_side=max_side)
            else:
                res = seprank.grid_rank(seprank.RankSpec(d, L, 1, N, False), P1, 0, hint=hint,
                                        max_side=max_side, reuse=how == "new")
            times.append(time.process_time() - c0)
            results.append((res.rank, res.history, res.converged))
        assert results[0] == results[1] == results[2], results
        speedups.append(times[0] / times[2])
        hist = ",".join(str(k) for k, _ in results[0][1])
        print(f"{N:>2} {L:>2} {d:>3} {results[0][0]:>5} {hist:<24} {times[0]:>8.2f} {times[1]:>8.2f} "
              f"{times[2]:>8.2f} {flint_cpu[0]:>8.2f} {times[0] / times[2]:>7.2f}x {times[1] / times[2]:>10.2f}x")
    seprank.rank_mod_p = rank_mod_p
    print(f"bench_rank: min_speedup={min(speedups):.2f} median_speedup={statistics.median(speedups):.2f}")


def bench_scaling(sizes: list[int], p: int) -> None:
    """FLINT CPU seconds (conversion + elimination) at each n, and the n^3 extrapolation."""
    from dynamics.depth_width.modular import rank_mod_p

    rng = np.random.default_rng(0)
    per = []
    for n in sizes:
        M = rng.integers(0, p, size=(n, n), dtype=np.int64)
        c0 = time.process_time()
        r = rank_mod_p(M, p)
        cpu = time.process_time() - c0
        per.append(cpu / n**3)
        print(f"scaling flint n={n} rank={r} {cpu:.2f} s CPU (rank_mod_p: conversion + elimination); "
              f"memory {matrix_bytes(n, n) / 2**30:.2f} GiB (modular.matrix_bytes)")
    for n in (12000, 14000, 16000):
        print(f"scaling flint n={n}: {per[-1] * n**3:.0f} s CPU (n^3 from n={sizes[-1]}; "
              f"{per[0] * n**3:.0f} s from n={sizes[0]}), memory {matrix_bytes(n, n) / 2**30:.2f} GiB "
              f"+ a kept grid of up to {8 * n * n / 2**30:.2f} GiB")


def bench_project(us_per_entry: dict[int, float], alpha: float, factor: dict[int, float]) -> None:
    from dynamics.depth_width import rank_sweep, seprank
    from dynamics.depth_width.theory import n2_rank
    from dynamics.experiments import depth_width_rank as X

    cost = {"build": 0.0, "flint": 0.0}

    def fake_rank(g, K: int) -> int:
        sp = g.spec
        rows, cols = seprank.grid_shape(K, sp.n_a, sp.n_b)
        old = getattr(g, "modelled_kept", 0)  # the largest K built for this grid so far
        if K > old:
            o_rows, o_cols = seprank.grid_shape(old, sp.n_a, sp.n_b) if old else (0, 0)
            cost["build"] += (rows * cols - o_rows * o_cols) * us_per_entry[sp.positions] * 1e-6
            g.modelled_kept = K
        r = min(rows, cols, int(factor.get(sp.positions, 1.0) * n2_rank(sp.d_x, sp.depth)))
        cost["flint"] += alpha * rows * cols * r  # elimination stops after r pivots
        g.history.append((K, r))
        return r

    real = seprank._Grid.rank
    seprank._Grid.rank = fake_rank
    try:
        cfg = X.RankConfig()
        total = 0.0
        for N in X.FIT_POSITIONS:
            cost.update(build=0.0, flint=0.0)
            rows = rank_sweep.sweep_family(cfg.widths, cfg.depths, cfg.heads, N, cfg.residual, cfg.pairs(),
                                           cfg.max_side, start=cfg.start_slack, confirm=cfg.confirm_slack)
            n_eval = sum(1 for r in rows if r["templates"])
            total += cost["build"] + cost["flint"]
            print(f"project N={N}: {n_eval} grid_rank calls, build {cost['build'] / 60:.1f} CPU-min, "
                  f"flint {cost['flint'] / 60:.1f} CPU-min (model, not measured)")
        print(f"project total: {total / 60:.1f} CPU-min; on 2 cores with --workers 2 the largest family sets the wall")
    finally:
        seprank._Grid.rank = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--p", type=int, default=P1)
    ap.add_argument("--numpy-n", type=int, default=0, help="numpy baseline size (0 = n, the same matrix)")
    ap.add_argument("--sympy-sizes", default="200,400")
    ap.add_argument("--tuples", type=int, default=20000, help="grid tuples for the depth-2 evaluator comparison")
    ap.add_argument("--part", choices=("flint", "grid", "scaling", "project", "points", "all"), default="all",
                    help="flint: rank engines at --n; grid: whole cells old vs new; scaling: FLINT at --scaling-sizes; "
                         "points: random points against the generic evaluator and against template grids")
    ap.add_argument("--pairs", type=int, default=20000, help="points: pairs for the evaluator comparison")
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the old grid path")
    ap.add_argument("--max-side", type=int, default=6000, help="grid limit of the cells (the experiment's)")
    ap.add_argument("--scaling-sizes", default="2000,4000")
    ap.add_argument("--us-per-entry", default="2:0.3,4:0.6,6:1.4",
                    help="project: build CPU microseconds per grid entry by N (measured by --part grid)")
    ap.add_argument("--flint-alpha", type=float, default=2e-10,
                    help="project: FLINT CPU seconds per rows*cols*rank (measured by --part grid)")
    ap.add_argument("--rank-factor", default="4:2,6:2", help="project: assumed rank over the N = 2 rank, by N")
    args = ap.parse_args()
    if args.part == "project":
        kv = [dict((int(k), float(v)) for k, v in (x.split(":") for x in a.split(",")))
              for a in (args.us_per_entry, args.rank_factor)]
        bench_project(kv[0], args.flint_alpha, kv[1])
    if args.part in ("scaling", "all"):
        bench_scaling([int(s) for s in args.scaling_sizes.split(",") if s], args.p)
    if args.part in ("flint", "all"):
        bench_flint(args)
    if args.part in ("grid", "all"):
        bench_grid(args.baseline, args.max_side)
    if args.part in ("points", "all"):
        bench_points(args.p, args.pairs, [(5, 2000), (6, 3000)])


def bench_flint(args) -> None:
    n, p = args.n, args.p
    M = np.random.default_rng(0).integers(0, p, size=(n, n), dtype=np.int64)

    r_f, conv, elim, cpu = min((flint_rank(M, p) for _ in range(3)), key=lambda x: x[1] + x[2])
    t_flint = conv + elim
    print(f"n={n} p={p}")
    print(f"flint   rank={r_f}  {t_flint:.3f} s wall (conversion {conv:.3f} s + elimination {elim:.3f} s), "
          f"{cpu:.3f} s CPU  [target <= 2 s wall: {'met' if t_flint <= 2 else 'NOT met'}; "
          f"CPU time is what an idle core would take]")

    from dynamics.depth_width import modular

    t0 = time.perf_counter()
    limit, modular.LIST_LIMIT = modular.LIST_LIMIT, 0
    try:
        r_rows = modular.rank_mod_p(M, p)
    finally:
        modular.LIST_LIMIT = limit
    t_rows = time.perf_counter() - t0
    assert r_rows == r_f
    print(f"flint   row-by-row copy: {t_rows:.3f} s wall (copy {t_rows - elim:.3f} s)  ratio to one list = "
          f"{(t_rows - elim) / conv:.2f}x copy time, memory 16 instead of 52 bytes an entry")
    bench_depth2(p, args.tuples)

    m = args.numpy_n or n
    t0, c0 = time.perf_counter(), time.process_time()
    r_np = rank_mod_p_numpy(M[:m, :m], p)
    t_np, c_np = time.perf_counter() - t0, time.process_time() - c0
    assert r_np == flint_rank(M[:m, :m], p)[0]
    t_np_n = t_np * (n / m) ** 3
    label = "measured" if m == n else f"measured at n={m}, x(n/{m})^3 extrapolated"
    print(f"numpy   rank={r_np} (n={m})  {t_np:.2f} s wall, {c_np:.2f} s CPU -> at n={n}: {t_np_n:.1f} s "
          f"({label})  ratio numpy/flint = {t_np_n / t_flint:.0f}x wall, {c_np * (n / m) ** 3 / cpu:.0f}x CPU")

    sizes = [int(s) for s in args.sympy_sizes.split(",") if s]
    times = []
    for s in sizes:
        r_s, t_s = sympy_rank(M[:s, :s], p)
        assert r_s == flint_rank(M[:s, :s], p)[0]
        times.append(t_s)
        print(f"sympy   rank={r_s} (n={s})  {t_s:.2f} s (measured)")
    if len(sizes) >= 2:
        k = np.polyfit(np.log(sizes), np.log(times), 1)[0]
    else:
        k = 3.0
    t_sym = times[-1] * (n / sizes[-1]) ** k
    how = "measured" if sizes[-1] == n else f"extrapolated from n={sizes[-1]} with fitted exponent {k:.2f}"
    print(f"sympy   at n={n}: {t_sym:.0f} s ({how})  ratio sympy/flint = {t_sym / t_flint:.0f}x")


if __name__ == "__main__":
    main()
