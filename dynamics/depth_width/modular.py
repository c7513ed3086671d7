"""Exact arithmetic in Z_p: primality, vectorised multiply-reduce, and matrix rank mod p.

Every value is an int64 in [0, p) with p < 2^31, so a product of two values is below 2^62 and
fits in int64; sums of products are reduced before they could overflow (every 2 products for
p < 2^31, every 128 for the default primes p < 2^28).  Nothing here ever rounds: the rank of a
matrix over Z_p is the rank of its integer
lift mod p, and by Schwartz--Zippel it equals the generic real rank of a polynomial family with
probability at least 1 - deg/p (checked again on a second prime and seed by the callers).

Rank engines:

* :func:`rank_mod_p` -- python-flint's ``nmod_mat.rank`` (FLINT's blocked LU over word-size Z_p).
* :func:`rank_mod_p_numpy` -- plain Gaussian elimination with one vectorised rank-1 update per
  pivot, the baseline of ``benchmarks/bench_rank.py`` and a cross-check in the tests.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError

MAX_PRIME = 2**31  # products of two residues must fit in int64 (< 2^62)
# Default primes: the two largest below 2^28, so that 128 products sum in int64 before a reduction
# (one matmul per contraction); any prime below 2^31 works, reducing every second product.
P1 = 268_435_399
P2 = 268_435_367
LIST_LIMIT = 4_000_000  # entries: above this, rank_mod_p copies row by row instead of via one list


def is_prime(n: int) -> bool:
    """Deterministic Miller--Rabin for n < 3.3e24 (bases 2..41)."""
    n = int(n)
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for q in small:
        if n % q == 0:
            return n == q
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def check_prime(p: int) -> int:
    """``p`` as an int if it is a prime below 2^31, else a UserError (one line, exit 2)."""
    p = int(p)
    if not is_prime(p):
        raise UserError(f"modulus {p} is not prime: ranks over Z_p need a field (try {P1} or {P2})")
    if p >= MAX_PRIME:
        raise UserError(f"prime {p} is too large: products must fit in int64, so p < 2^31")
    return p


def random_residues(rng: np.random.Generator, shape, p: int) -> np.ndarray:
    """Uniform draws from Z_p as int64 (weights, templates, output vectors)."""
    return rng.integers(0, p, size=shape, dtype=np.int64)


def products_per_sum(p: int) -> int:
    """How many products of residues (each <= (p-1)^2) an int64 can sum without overflow:
    128 for p < 2^28, 2 for p < 2^31."""
    return max(1, (2**63 - 1) // (int(p) - 1) ** 2)


def mm_mod(A: np.ndarray, B: np.ndarray, p: int) -> np.ndarray:
    """(A @ B) mod p for residue arrays A (..., n, k) and B (..., k, m), exactly, with numpy's
    batched integer matmul.

    The contraction is split into blocks of :func:`products_per_sum` (p) terms, each block summed
    in int64 and reduced before the next is added, so nothing overflows for any p < 2^31; for the
    default primes (< 2^28) a contraction up to 128 long is one matmul and one reduction.
    """
    k = A.shape[-1]
    step = products_per_sum(p)
    if k <= step:
        out = A @ B
        np.remainder(out, p, out=out)
        return out
    out = None
    for s in range(0, k, step):
        part = A[..., s:s + step] @ B[..., s:s + step, :]
        np.remainder(part, p, out=part)
        out = part if out is None else out + part
    np.remainder(out, p, out=out)
    return out


def rank_mod_p(M: np.ndarray, p: int) -> int:
    """Exact rank of an integer matrix over Z_p, with FLINT's ``nmod_mat``.

    Small matrices go through one Python list (fastest); matrices above ``LIST_LIMIT`` entries are
    copied into a zero ``nmod_mat`` one row at a time, so only one row of Python ints exists at once
    (a 13000 x 13000 list would need about 6 GB; row by row is as fast per entry).
    """
    import flint

    M = np.asarray(M)
    if M.size == 0:
        return 0
    if M.size <= LIST_LIMIT:
        return int(flint.nmod_mat(np.remainder(M, p).tolist(), int(p)).rank())
    rows, cols = M.shape
    A = flint.nmod_mat(rows, cols, int(p))
    for i in range(rows):
        for j, v in enumerate(np.remainder(M[i], p).tolist()):
            A[i, j] = v
    return int(A.rank())


def rank_mod_p_numpy(M: np.ndarray, p: int) -> int:
    """Exact rank over Z_p by plain Gaussian elimination in numpy (the benchmark baseline).

    One pivot per step: find a nonzero entry in the current column, scale its row by the inverse
    (Fermat: a^(p-2)), and eliminate the column from every other remaining row with one
    vectorised rank-1 update, reduced mod p.  O(n^3) element operations, no rounding.
    """
    A = np.remainder(np.array(M, dtype=np.int64), p)
    rows, cols = A.shape
    rank = 0
    for c in range(cols):
        if rank == rows:
            break
        nz = np.flatnonzero(A[rank:, c])
        if nz.size == 0:
            continue
        piv = rank + int(nz[0])
        if piv != rank:
            A[[rank, piv]] = A[[piv, rank]]
        inv = pow(int(A[rank, c]), p - 2, p)
        A[rank, c:] = A[rank, c:] * inv % p
        below = A[rank + 1:, c].copy()
        hit = np.flatnonzero(below)
        if hit.size:
            sub = A[rank + 1 + hit, c:]
            sub -= (below[hit, None] * A[rank, c:]) % p
            np.remainder(sub, p, out=sub)
            A[rank + 1 + hit, c:] = sub
        rank += 1
    return rank


def matrix_bytes(rows: int, cols: int) -> int:
    """Peak bytes to hold and rank a rows x cols matrix: the int64 array, FLINT's own 8-byte copy
    and the second copy ``nmod_mat_rank`` eliminates on (measured: a 29929 x 15051 rank peaked at
    14.8 GB resident, about 32 bytes an entry with the kept grid of ``seprank.grid_bytes``), plus, up
    to ``LIST_LIMIT`` entries, its Python-int list (about 36 bytes an entry: an 8-byte pointer and a
    28-byte int object; larger matrices are copied row by row)."""
    n = int(rows) * int(cols)
    return n * (8 + 8 + 8) + min(n, LIST_LIMIT) * 36
