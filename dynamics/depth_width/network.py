"""The self-attention network Levine et al. analyse, evaluated exactly over Z_p.

Levine, Wies, Sharir, Bata & Shashua (NeurIPS 2020, "Limits to depth efficiencies of
self-attention"; arXiv 2006.12467 v3) remove the softmax, the LayerNorm and the ReLU from
a BERT layer; the feed-forward block is then linear and folds into W^O.  Layer l maps the N
position vectors y^{l,1..N} in R^{d_x} to

    y^{l+1,i} = [y^{l,i}] + sum_{h=1}^{H} W^{O,l,h} sum_{j=1}^{N}
                <W^{Q,l,h} y^{l,i}, W^{K,l,h} y^{l,j}> W^{V,l,h} y^{l,j}

with W^{Q,K,V} in R^{d_a x d_x}, W^O in R^{d_x x d_a}, d_a = d_x / H, y^{0,j} = x^j, and the bracketed
skip term present only with ``residual``.  The analysed output is the scalar f = <w, y^{L,0}>.  Each
layer is cubic in its input (query x key x value), so f is a polynomial of degree 3^L in x^1..x^N.

All weights and w are uniform in Z_p; :meth:`LinearAttentionNet.evaluate` computes f exactly for a
batch of inputs (T, N, d_x) with every product reduced mod p (see :mod:`.modular`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .modular import mm_mod, random_residues

# Largest Gram table over atoms (entries, all heads) the atom path builds: 1.6 GB at most, built once per
# grid and freed before the rank (at N = 2, L = 2 it is K x K, as large as the grid matrix itself).  At
# N = 2, L = 2, d_x = 21, K = 13,000 the atom path costs 0.7 us a tuple, layer by layer 7.4 us.
ATOM_TABLE = 200_000_000
PAIR_BLOCK = 1 << 22  # entries of the per-tuple Gram blocks gathered at once (32 MB)


@dataclasses.dataclass(frozen=True)
class AtomTables:
    """Tables over atoms (see :meth:`LinearAttentionNet._atom_grid`) of one template set, for layers
    2..L: gram[l - 2][h, a, b] = <W^{Q,l,h} z_a, W^{K,l,h} z_b> over that layer's A_l atoms
    (H, A_l, A_l); g[h, b] = <(W^{O,L,h})^T w, W^{V,L,h} z_b> (H, A_L); wz[b] = <w, z_b> (A_L,), only
    with residual.  All mod p.  They depend on the templates only, so one set serves every tuple."""

    gram: tuple[np.ndarray, ...]
    g: np.ndarray
    wz: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class GridTables:
    """Layer-1 quantities of a template set: scores[h, a, b] = <W^{Q,h} v^(a), W^{K,h} v^(b)>,
    values[b, h] = W^{O,h} W^{V,h} v^(b); all mod p.  atoms: the deeper layers' tables when the
    atom path evaluates this grid (:meth:`LinearAttentionNet.grid_tables` with ``positions``)."""

    scores: np.ndarray  # (H, K, K)
    values: np.ndarray  # (K, H, d_x)
    atoms: AtomTables | None = None
    readout: np.ndarray | None = None  # depth 1: (H, K), <w, values[b, h]>
    skip: np.ndarray | None = None  # depth 1 with residual: (K,), <w, v^(b)>


@dataclasses.dataclass(frozen=True)
class LinearAttentionNet:
    """Weights of an L-layer, H-head linear self-attention network over Z_p.

    Q, K, V: (L, H, d_a, d_x); O: (L, H, d_x, d_a); w: (d_x,).  All int64 in [0, p).
    """

    Q: np.ndarray
    K: np.ndarray
    V: np.ndarray
    O: np.ndarray
    w: np.ndarray
    residual: bool
    p: int

    @property
    def depth(self) -> int:
        return self.Q.shape[0]

    @property
    def heads(self) -> int:
        return self.Q.shape[1]

    @property
    def width(self) -> int:
        return self.Q.shape[3]

    @classmethod
    def random(cls, rng: np.random.Generator, d_x: int, depth: int, heads: int, residual: bool,
               p: int) -> LinearAttentionNet:
        if d_x % heads:
            raise ValueError(f"heads={heads} must divide d_x={d_x}")
        d_a = d_x // heads
        shape = (depth, heads, d_a, d_x)
        return cls(Q=random_residues(rng, shape, p), K=random_residues(rng, shape, p),
                   V=random_residues(rng, shape, p),
                   O=random_residues(rng, (depth, heads, d_x, d_a), p),
                   w=random_residues(rng, (d_x,), p), residual=residual, p=p)

    def evaluate(self, X: np.ndarray) -> np.ndarray:
        """f(x^1..x^N) = <w, y^{L,0}> mod p for a batch X (T, N, d_x) int64 -> (T,) int64."""
        Y = np.remainder(np.asarray(X, dtype=np.int64), self.p)
        return self._readout(Y, first=0)

    def evaluate_grid(self, templates: np.ndarray, idx: np.ndarray, tables: GridTables | None = None) -> np.ndarray:
        """f on template tuples: idx (T, N) indexes templates (K, d_x); returns (T,) int64.

        Layer 1 only ever sees template vectors, so its scores <W^Q v^(a), W^K v^(b)> and its
        projected values W^O W^V v^(b) are tables over templates (:meth:`grid_tables`); per tuple
        it costs N^2 H gathers and N^2 H d_x products instead of the full layer, and at L = 1 only
        N H gathers (:meth:`_single_layer_grid`).  Deeper layers run
        on atom tables (:meth:`_atom_grid`) while their Gram tables stay below ``ATOM_TABLE``
        entries, else layer by layer.  Pass ``tables`` from ``grid_tables(templates, N)`` when
        evaluating one template set in several calls: the tables are then built once.
        """
        T, N = idx.shape
        t = tables if tables is not None else self.grid_tables(templates, N)
        if self.depth == 1:
            return self._single_layer_grid(idx, t)
        if self.uses_atoms(templates.shape[0], N):
            if t.atoms is None:
                t = dataclasses.replace(t, atoms=self.atom_tables(templates, t))
            return self._atom_grid(idx, t)
        H = self.heads
        S = t.scores[:, idx[:, :, None], idx[:, None, :]]  # (H, T, N, N): S_h[k_i, k_j]
        S = S.transpose(1, 2, 0, 3).reshape(T, N, H * N)
        OV = t.values[idx].transpose(0, 2, 1, 3).reshape(T, H * N, -1)  # (T, H*N, d_x)
        Y = mm_mod(S, OV, self.p)  # y^{1,i} = sum_h sum_j S_h[i,j] W^O W^V v^(k_j)
        if self.residual:
            Y += templates[idx]
            np.remainder(Y, self.p, out=Y)
        return self._readout(Y, first=1)

    def _single_layer_grid(self, idx: np.ndarray, t: GridTables) -> np.ndarray:
        """f on template tuples idx (T, N) for L = 1 from tables alone, O(N H) a tuple:

            f = sum_h sum_j S_h[k_0, k_j] <w, W^{O,h} W^{V,h} v^(k_j)>  [+ <w, v^(k_0)>],

        the readout of :meth:`_readout` with the layer's scores and projected values looked up
        (``t.readout`` = the bracket, ``t.skip`` = the residual term; :meth:`grid_tables`)."""
        p = self.p
        f = np.zeros(idx.shape[0], dtype=np.int64)
        k0 = idx[:, 0]
        for h in range(self.heads):
            part = t.scores[h][k0[:, None], idx] * t.readout[h][idx]  # (T, N), each product < p^2
            f += (part % p).sum(axis=1) % p
        if self.residual:
            f += t.skip[k0]
        return f % p

    def uses_atoms(self, K: int, N: int) -> bool:
        """Whether :meth:`evaluate_grid` takes the atom path for K templates and N positions: depth
        >= 2, Gram tables of at most ``ATOM_TABLE`` entries, and depth 2 or N <= 4 (faster there)."""
        widest = (self.heads + int(self.residual)) ** (self.depth - 1) * K
        return self.depth > 1 and self.heads * widest**2 <= ATOM_TABLE and (self.depth == 2 or N <= 4)

    def atom_tables(self, templates: np.ndarray, t: GridTables) -> AtomTables:
        """The atom path's tables for layers 2..L (:class:`AtomTables`) from the layer-1 tables ``t``.

        Layer-1 atoms: z_1(h, k) = W^{O,1,h} W^{V,1,h} v^(k) at row h K + k (and v^(k) at row H K + k
        with residual); a layer l < L maps the A_l atoms to W^{O,l,h} W^{V,l,h} z at row h A_l + a
        (and z at row H A_l + a with residual).
        """
        p = self.p
        H = self.heads
        d_a = self.Q.shape[2]
        Z = t.values.transpose(1, 0, 2).reshape(H * templates.shape[0], -1)  # (h, k) -> W^O W^V v^(k)
        if self.residual:
            Z = np.concatenate([Z, templates % p])  # (res, k) -> v^(k)
        gram = []
        for layer in range(1, self.depth):
            qkv = mm_mod(Z, self._wqkv(layer).T, p).reshape(len(Z), 3, H, d_a)  # this layer's projections
            gram.append(mm_mod(qkv[:, 0].transpose(1, 0, 2), qkv[:, 1].transpose(1, 2, 0), p))  # (H, A, A)
            if layer == self.depth - 1:
                u = mm_mod(self._wo(layer).T, self.w[:, None], p)[:, 0].reshape(H, d_a)
                g = mm_mod(qkv[:, 2].transpose(1, 0, 2), u[:, :, None], p)[..., 0]  # (H, A)
                wz = mm_mod(Z, self.w[:, None], p)[:, 0] if self.residual else None
                return AtomTables(tuple(gram), g, wz)
            OV = [mm_mod(qkv[:, 2, h], self.O[layer, h].T, p) for h in range(H)]  # (A, d_x) each
            if self.residual:
                OV.append(Z)
            Z = np.concatenate(OV)
        raise AssertionError("unreachable: depth >= 2")

    def _atom_grid(self, idx: np.ndarray, t: GridTables) -> np.ndarray:
        """f on template tuples idx (T, N) for L >= 2 with per-tuple cost independent of d_x.

        Every y^{l,i} of a tuple is a combination of the same M_l "atom" vectors, y^{l,i} =
        sum_m c_l[i,m] z_l[atom_m], where the atoms are rows of a table over templates whose
        Gram and readout tables are ``t.atoms`` (:meth:`atom_tables`).  Layer 1: atoms
        z_1(h,k) = W^{O,1,h} W^{V,1,h} v^(k) (and v^(k) with residual), c_1[i,(h,l)] = S_h[k_i,k_l]
        (and [i = l]).  A layer l < L maps atoms to
        W^{O,l,h} W^{V,l,h} z (and z) and coefficients to

            c_{l+1}[i,(h,m)] = sum_j B_h[i,j] c_l[j,m],  B_h[i,j] = sum_{a,b} c_l[i,a] c_l[j,b] G_h[a,b],

        with the table G_h[a,b] = <W^{Q,l,h} z_a, W^{K,l,h} z_b>.  The last layer reads out

            f = sum_h sum_j B_h[0,j] (sum_b c[j,b] g_h[b])  [+ sum_a c[0,a] <w, z_a>],
            g_h[b] = <(W^{O,L,h})^T w, W^{V,L,h} z_b>.

        The atom table grows (H + [res])-fold per layer; same values as :meth:`_readout` (tested).
        """
        p = self.p
        T, N = idx.shape
        H = self.heads
        at = t.atoms
        K = t.scores.shape[-1]
        atoms = [h * K + idx for h in range(H)]
        coef = [t.scores[h][idx[:, :, None], idx[:, None, :]] for h in range(H)]  # (T, N, N): S_h[k_i, k_l]
        if self.residual:
            atoms.append(H * K + idx)
            coef.append(np.broadcast_to(np.eye(N, dtype=np.int64), (T, N, N)))
        atoms = np.concatenate(atoms, axis=1)  # (T, M) rows of the atom table
        c = np.concatenate(coef, axis=2)  # (T, N, M)
        for layer in range(1, self.depth):
            G = at.gram[layer - 1]  # (H, A, A)
            if layer == self.depth - 1:
                B = [self._pair_weights(G[h], atoms, c, 1) for h in range(H)]  # (T, 1, N)
                f = np.zeros(T, dtype=np.int64)
                for h in range(H):
                    val = self._contract(c, at.g[h][atoms])  # (T, N): sum_b c[j,b] g[b]
                    f += ((B[h][:, 0, :] * val) % p).sum(axis=1) % p
                if self.residual:
                    f += ((c[:, 0, :] * at.wz[atoms]) % p).sum(axis=1) % p
                return f % p
            B = [self._pair_weights(G[h], atoms, c, N) for h in range(H)]  # (T, N, N)
            # next atoms: W^O_h W^V_h z for each head (and z itself with residual)
            A = G.shape[-1]
            new_c = [self._mix(B[h], c) for h in range(H)]
            new_atoms = [h * A + atoms for h in range(H)]
            if self.residual:
                new_c.append(c)
                new_atoms.append(H * A + atoms)
            atoms = np.concatenate(new_atoms, axis=1)
            c = np.concatenate(new_c, axis=2)
        raise AssertionError("unreachable: depth >= 2")

    def _pair_weights(self, G: np.ndarray, atoms: np.ndarray, c: np.ndarray, n_q: int) -> np.ndarray:
        """B[i,j] = sum_{a,b} c[i,a] c[j,b] G[atom_a, atom_b] for query positions i < n_q: (T, n_q, N).

        Per tuple the M x M block of G over its atoms is gathered and B = c[:n_q] G_sub c^T is two
        small batched matmuls (:func:`.modular.mm_mod`, exact); tuples go in slices so the gathered
        blocks stay below ``PAIR_BLOCK`` entries."""
        p = self.p
        T, N, M = c.shape
        A = G.shape[0]
        Gf = G.ravel()
        out = np.empty((T, n_q, N), dtype=np.int64)
        step = max(1, PAIR_BLOCK // (M * M))
        for s in range(0, T, step):
            a = atoms[s:s + step]
            R = mm_mod(c[s:s + step, :n_q], Gf[a[:, :, None] * A + a[:, None, :]], p)  # R[i,b] = sum_a c[i,a] G[a,b]
            out[s:s + step] = mm_mod(R, c[s:s + step].transpose(0, 2, 1), p)
        return out

    def _contract(self, c: np.ndarray, v: np.ndarray) -> np.ndarray:
        """sum_b c[j,b] v[b] per tuple: c (T, N, M), v (T, M) -> (T, N)."""
        return mm_mod(c, v[:, :, None], self.p)[:, :, 0]

    def _mix(self, B: np.ndarray, c: np.ndarray) -> np.ndarray:
        """sum_j B[i,j] c[j,m]: (T, N, N) x (T, N, M) -> (T, N, M)."""
        return mm_mod(B, c, self.p)

    def grid_tables(self, templates: np.ndarray, positions: int | None = None) -> GridTables:
        """Layer-1 tables for templates (K, d_x): scores (H, K, K) and values (K, H, d_x); with
        ``positions`` N also the atom tables when :meth:`uses_atoms` (K, N)."""
        p = self.p
        _, H, d_a, d_x = self.Q.shape
        qkv = mm_mod(templates, self._wqkv(0).T, p).reshape(-1, 3, H, d_a).transpose(1, 2, 0, 3)  # (3, H, K, d_a)
        scores = mm_mod(qkv[0], np.swapaxes(qkv[1], -1, -2), p)  # (H, K, K)
        values = mm_mod(qkv[2], np.swapaxes(self.O[0], -1, -2), p).transpose(1, 0, 2)  # (K, H, d_x)
        t = GridTables(np.ascontiguousarray(scores), np.ascontiguousarray(values))
        if self.depth == 1:
            K = templates.shape[0]
            readout = mm_mod(values.reshape(K * H, d_x), self.w[:, None], p)[:, 0].reshape(K, H).T
            skip = mm_mod(templates % p, self.w[:, None], p)[:, 0] if self.residual else None
            return dataclasses.replace(t, readout=np.ascontiguousarray(readout), skip=skip)
        if positions is not None and self.uses_atoms(templates.shape[0], positions):
            t = dataclasses.replace(t, atoms=self.atom_tables(templates, t))
        return t

    def hidden(self, X: np.ndarray) -> np.ndarray:
        """All positions after all L layers, y^{L,1..N}: (T, N, d_x) int64."""
        Y = np.remainder(np.asarray(X, dtype=np.int64), self.p)
        for layer in range(self.depth):
            Y = self._layer(Y, layer, queries=slice(None))
        return Y

    # -- layers ---------------------------------------------------------------------------------
    def _wqkv(self, layer: int) -> np.ndarray:
        """W^Q, W^K, W^V of all heads stacked: (3*H*d_a, d_x)."""
        _, H, d_a, d_x = self.Q.shape
        return np.concatenate([W[layer].reshape(H * d_a, d_x) for W in (self.Q, self.K, self.V)])

    def _wo(self, layer: int) -> np.ndarray:
        """W^O of all heads side by side: (d_x, H*d_a)."""
        _, H, d_x, d_a = self.O.shape
        return self.O[layer].transpose(1, 0, 2).reshape(d_x, H * d_a)

    def _readout(self, Y: np.ndarray, first: int) -> np.ndarray:
        """Layers first..L-1 on Y (T, N, d_x); the last computes position 0 only, with w folded
        into W^O (u = W^O^T w), and returns f (T,)."""
        p = self.p
        for layer in range(first, self.depth - 1):
            Y = self._layer(Y, layer, queries=slice(None))
        Z = self._attend(Y, self.depth - 1, queries=slice(0, 1))[:, 0, :]  # (T, H*d_a)
        u = mm_mod(self._wo(self.depth - 1).T, self.w[:, None], p)  # (H*d_a, 1)
        f = mm_mod(Z, u, p)[:, 0]
        if self.residual:
            f += mm_mod(Y[:, 0, :], self.w[:, None], p)[:, 0]
            np.remainder(f, p, out=f)
        return f

    def _attend(self, Y: np.ndarray, layer: int, queries: slice, qkv: np.ndarray | None = None) -> np.ndarray:
        """Z^i = sum_j <W^Q y^i, W^K y^j> W^V y^j per head for the query positions: (T, n_q, H*d_a)."""
        p = self.p
        _, H, d_a, _ = self.Q.shape
        T, N, _ = Y.shape
        if qkv is None:
            qkv = mm_mod(Y, self._wqkv(layer).T, p)  # (T, N, 3*H*d_a)
        qkv = qkv.reshape(T, N, 3, H, d_a).transpose(2, 0, 3, 1, 4)  # (3, T, H, N, d_a)
        q, k, v = qkv[0][:, :, queries], qkv[1], qkv[2]
        S = mm_mod(q, np.swapaxes(k, -1, -2), p)  # (T, H, n_q, N): <W^Q y^i, W^K y^j>
        Z = mm_mod(S, v, p)  # (T, H, n_q, d_a)
        return Z.transpose(0, 2, 1, 3).reshape(T, -1, H * d_a)

    def _layer(self, Y: np.ndarray, layer: int, queries: slice, qkv: np.ndarray | None = None) -> np.ndarray:
        out = mm_mod(self._attend(Y, layer, queries, qkv), self._wo(layer).T, self.p)
        if self.residual:
            out += Y[:, queries]
            np.remainder(out, self.p, out=out)
        return out


def evaluate_exact(net: LinearAttentionNet, X: np.ndarray) -> np.ndarray:
    """The same network in exact Python integers (object arrays), no reduction until the end:
    an independent reference for :meth:`LinearAttentionNet.evaluate` in the tests.  (T,) ints."""
    W = {k: np.asarray(getattr(net, k), dtype=object) for k in ("Q", "K", "V", "O", "w")}
    Y = np.asarray(X, dtype=object)
    L, H = W["Q"].shape[:2]
    for layer in range(L):
        out = np.zeros_like(Y)
        for h in range(H):
            q = Y @ W["Q"][layer, h].T
            k = Y @ W["K"][layer, h].T
            v = Y @ W["V"][layer, h].T
            S = q @ np.swapaxes(k, -1, -2)  # (T, N, N)
            out = out + (S @ v) @ W["O"][layer, h].T
        Y = out + Y if net.residual else out
    return (Y[:, 0, :] @ W["w"]) % net.p
