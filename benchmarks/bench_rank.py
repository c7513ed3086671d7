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
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dynamics.depth_width.modular import P1, rank_mod_p_numpy


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--p", type=int, default=P1)
    ap.add_argument("--numpy-n", type=int, default=0, help="numpy baseline size (0 = n, the same matrix)")
    ap.add_argument("--sympy-sizes", default="200,400")
    ap.add_argument("--tuples", type=int, default=20000, help="grid tuples for the depth-2 evaluator comparison")
    args = ap.parse_args()
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
