"""Rank search for nonlinear modalities: drop the linear directions that are harmonics of factors.

A nonlinear map of a node's factors ``z`` also creates linear directions that carry functions of
them (``z_1^2``, ``z_1 z_2``, ``z_1^3``, products with the factors of other nodes holding the same
modalities). They are shared by the same modalities, so the linear estimator's rank search
counts them, and at large n they are significant: on 3 x 30 nonlinear features with 2 factors
per node it finds 5-9 per node (20 at 100 features). The contrastive encoders represent such
functions inside the factors' own block, so they should not get blocks of their own.

:func:`prune_harmonics` starts from a fitted linear model (its ranks are the upper bound) and
keeps, node by node, largest first (so that each node's *context* - the kept factors of the
larger nodes sharing its modalities - is known), only directions that polynomials of what is
already kept do not explain:

* **Two views of the node's block.** A shared node S, for every pair {a, b} in S: the
  posterior-mean scores of S's block from ``x_a`` alone and from ``x_b`` alone. A private node
  {a}: the same from two random halves of a's features. The two views have independent noise.
* **Deflation.** Step by step: remove from each view what degree-1..3 monomials of its own kept
  directions and its context predict (least squares), take the top canonical pair of what is
  left, and measure the share of that pair's *raw* cross-covariance the removal leaves,
  corrected for the p/n that regressing on p unrelated columns removes by chance. A new factor,
  independent of the kept ones, is left whole (measured 0.88-1.05); a harmonic mostly goes
  (0.1-0.5). The search stops at the first direction with less than ``1 - HARMONIC_SHARE`` left,
  or with a canonical correlation below ``MIN_RELATIVE_RHO`` times the node's first (weak
  higher-order remnants).
* **Presence.** In a node of three or more modalities, a direction found between two of them
  must also be predicted by each other modality's view (``PRESENCE_SHARE`` of its signal): a
  pair's own factor leaking into the larger node is set aside and the search goes on.
* The node's rank is the median over its pairs of the directions kept. Context for a private
  node comes from the *other* modalities' side of its shared nodes, so that its own noise never
  explains anything.

Measured (``hx.simulate``, n = 1,000-60,000): exact ranks on 26 of 26 data sets - nonlinear with
3, 4 or 6 modalities (the 6-modality full lattice of 63 candidates, where the linear search finds
21 nodes, 13 of them spurious), 20-200 features, noise 0.3-1.0, unequal ranks, 20-30 % missing;
and linear ones, where nothing is a polynomial of anything else and the linear ranks are kept
(the clinical and omics samples keep their exact structure).

Cost: the search reads a seeded sample of ``MAX_ROWS`` rows; a regression's polynomial columns
are capped (``MAX_FEATURES``, and n / 10) by lowering the degree; each regression is one Gram
matrix and a solve (not an SVD-based ``lstsq``), and monomials are built degree by degree. On
3 x 30 nonlinear features, n = 15,000 rows, this takes 3-4 s on one core of the busy 2-core
machine, about as long as one or two contrastive epochs (the SVD-based search on all rows took
170 s there).
"""

from __future__ import annotations

from itertools import combinations_with_replacement
from math import comb
from typing import Mapping, Sequence

import numpy as np

from .lattice import Node, node_label
from .linear import block_slices, node_columns

#: A direction is a harmonic when the polynomial of the kept directions predicts this share of
#: its canonical correlation (see the module docstring).
HARMONIC_SHARE = 0.5
#: A direction whose canonical correlation is below this share of the node's first is not a factor.
MIN_RELATIVE_RHO = 0.4
#: In a node of three or more modalities, a direction found between two of them must be seen
#: (this share of its signal predicted) by each of the others.
PRESENCE_SHARE = 0.25
#: Most polynomial columns a regression uses (the degree is lowered to stay under it).
MAX_FEATURES = 600
#: Rows used (a seeded subsample of larger data). Measured on six nonlinear data sets of n =
#: 20,000-30,000 (3 and 4 modalities, 30-100 features, 20 % missing): 8,000 rows found the true
#: ranks on all six in 1.5-4.7 s, all rows on four of six in 2.6-15 s (the search's decisions
#: are not monotone in n), 5,000 rows on five. 4,000 rows lose factors at n = 5,000.
MAX_ROWS = 8_000


def _std(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    sd = a.std(0)
    return a / np.where(sd > 1e-12, sd, 1.0)


def _poly(parts: Sequence[np.ndarray], degree: int = 3) -> np.ndarray | None:
    """All monomials of degree 1 to ``degree`` of the columns of ``parts`` (standardized) side by side.

    The degree is lowered while the monomials would exceed ``min(MAX_FEATURES, n / 10)`` columns
    (many modalities or small n), so that a regression on them never fits noise."""
    cols = [p for p in parts if p is not None and p.shape[1]]
    if not cols:
        return None
    B = _std(np.concatenate(cols, axis=1))
    n, k = B.shape
    cap = min(MAX_FEATURES, n // 10)
    while degree > 1 and sum(comb(k + d - 1, d) for d in range(1, degree + 1)) > cap:
        degree -= 1
    # Degree by degree, each monomial as one product of a lower-degree monomial and a column
    # (no (n, monomials, degree) intermediate): same columns, same order as
    # combinations_with_replacement.
    feats = [B]
    prev, prev_idx = B, [(i,) for i in range(k)]
    for deg in range(2, degree + 1):
        idx = list(combinations_with_replacement(range(k), deg))
        pos = {t: j for j, t in enumerate(prev_idx)}
        lower = np.fromiter((pos[t[:-1]] for t in idx), dtype=np.intp, count=len(idx))
        last = np.fromiter((t[-1] for t in idx), dtype=np.intp, count=len(idx))
        cur = prev[:, lower] * B[:, last]
        feats.append(cur)
        prev, prev_idx = cur, idx
    # Not standardized again: least squares does not depend on the columns' scales, and the
    # monomials of standardized columns are of order one (the ridge of _ls_residual is relative).
    return np.concatenate(feats, axis=1)


def _ls_residual(Y: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``Y`` centred, minus its least-squares fit on ``Q`` and a constant.

    Through the normal equations of the centred ``Q`` (one ``p x p`` Gram matrix and a solve,
    with a ridge of 1e-9 of the mean diagonal against exactly collinear monomials): several
    times faster than an SVD-based ``lstsq`` of the ``n x p`` matrix, with the same residuals
    to ~1e-6 of their scale."""
    Yc = Y - Y.mean(0)
    Qc = Q - Q.mean(0)
    G = Qc.T @ Qc
    G[np.diag_indices_from(G)] += 1e-9 * max(float(np.trace(G)) / max(G.shape[0], 1), 1e-300)
    try:
        coef = np.linalg.solve(G, Qc.T @ Yc)
    except np.linalg.LinAlgError:
        coef = np.linalg.lstsq(Qc, Yc, rcond=None)[0]
    return Yc - Qc @ coef


def _r2_adj(y: np.ndarray, Q: np.ndarray | None) -> float:
    if Q is None:
        return 0.0
    n, p = Q.shape
    if n - p - 1 < 10:
        return 0.0
    res = _ls_residual(y, Q)
    r2 = 1.0 - res.var() / max(y.var(), 1e-300)
    return float(1.0 - (1.0 - r2) * (n - 1) / (n - p - 1))


def _cca(U: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical directions ``(r, r)`` of both sides (variates: ``(U - mean) @ A``, ``(V - mean) @ B``)
    and their correlations (descending)."""
    def whitener(A: np.ndarray) -> np.ndarray:
        # Directions without variance (what the residualization removed: a kept direction, up to
        # rounding) are dropped, not scaled up: whitened, their rounding errors would look like a
        # perfectly correlated pair.
        A = A - A.mean(0)
        C = A.T @ A / A.shape[0]
        lam, E = np.linalg.eigh(C + 1e-10 * np.trace(C) * np.eye(C.shape[0]))
        keep = lam > 1e-8 * max(float(lam.max()), 1e-300)
        return E[:, keep] / np.sqrt(lam[keep])

    Wu, Wv = whitener(U), whitener(V)
    Uc, Vc = U - U.mean(0), V - V.mean(0)
    P, rho, Qt = np.linalg.svd((Uc @ Wu).T @ (Vc @ Wv) / U.shape[0], full_matrices=False)
    return Wu @ P, Wv @ Qt.T, rho


def _scores(x: np.ndarray, B: np.ndarray, noise: float) -> np.ndarray:
    """Posterior-mean factor scores ``(n, R)`` of ``x`` ``(n, d)`` under ``x = B z + e``,
    ``z ~ N(0, I)``, ``e ~ N(0, noise I)`` (well defined even when d < R)."""
    s2 = max(float(noise), 1e-8)
    M = B.T @ B / s2 + np.eye(B.shape[1])
    return np.linalg.solve(M, (x @ B).T / s2).T


def _residual(S: np.ndarray, Q: np.ndarray | None) -> np.ndarray:
    """Columns of ``S`` centred, with their least-squares fit on ``Q`` (and a constant) removed."""
    if Q is None:
        return S - S.mean(0)
    return _ls_residual(S, Q)


def _test(sides: tuple[np.ndarray, np.ndarray], contexts: tuple[list[np.ndarray], list[np.ndarray]],
          others: Sequence[np.ndarray] = ()) -> dict:
    """Directions of one block shared by two views ``(n, r)`` that are not functions of the kept ones.

    Step by step: remove from each view what polynomials of its kept variates and context
    predict, take the top canonical pair of what is left, and measure the share of that pair's
    raw cross-covariance the removal leaves (``left``, corrected for chance). A new factor is
    left almost whole (``left`` near 1); a harmonic of kept factors mostly goes. Stop at the
    first direction that is explained (``left < 1 - HARMONIC_SHARE``) or weak (canonical
    correlation ``rho < MIN_RELATIVE_RHO`` times the first). ``others``: the block seen by the node's other
    modalities; a direction they do not see (a pair's factor leaking into a larger node) is set
    aside (removed linearly) and the search goes on. Returns the kept directions (as maps
    ``(r, k)`` of each view) and a per-step record.
    """
    Sa, Sb = sides[0] - sides[0].mean(0), sides[1] - sides[1].mean(0)
    r = Sa.shape[1]
    kept_a: list[np.ndarray] = []
    kept_b: list[np.ndarray] = []
    aside_a: list[np.ndarray] = []
    aside_b: list[np.ndarray] = []
    record = []
    first = None
    for _ in range(r):
        u_k = [Sa @ np.column_stack(kept_a)] if kept_a else []
        v_k = [Sb @ np.column_stack(kept_b)] if kept_b else []
        Qa = _poly(contexts[0] + u_k)
        Qb = _poly(contexts[1] + v_k)
        if aside_a:
            lin_a, lin_b = Sa @ np.column_stack(aside_a), Sb @ np.column_stack(aside_b)
            Qa = lin_a if Qa is None else np.c_[Qa, lin_a]
            Qb = lin_b if Qb is None else np.c_[Qb, lin_b]
        Ra, Rb = _residual(Sa, Qa), _residual(Sb, Qb)
        A, B, rho_left = _cca(Ra, Rb)
        da, db = A[:, 0], B[:, 0]
        u, v = Sa @ da, Sb @ db
        rho = float(np.corrcoef(u, v)[0, 1])
        first = rho if first is None else first
        # Share of the direction's cross-covariance that the polynomials leave (a ratio of
        # covariances: residualizing also removes variance, which would inflate a correlation).
        # Regressing on p unrelated columns removes about p/n of any signal: corrected for.
        n = Sa.shape[0]
        chance = (1.0 - (0 if Qa is None else Qa.shape[1] + 1) / n) * (1.0 - (0 if Qb is None else Qb.shape[1] + 1) / n)
        left = float(np.mean(Ra @ da * (Rb @ db)) / max(abs(np.mean(u * v)), 1e-300)) / max(chance, 0.05)
        w = _std(u[:, None])[:, 0] + _std(v[:, None])[:, 0]
        rr = max(abs(rho), 1e-12)
        seen = min([_r2_adj(w, _std(o)) / (2 * rr / (1 + rr)) for o in others], default=1.0)
        step = {"rho": round(rho, 4), "left": round(left, 3), "seen_by_others": round(seen, 3)}
        record.append(step)
        if rho < MIN_RELATIVE_RHO * first or left < 1.0 - HARMONIC_SHARE:
            step["kept"] = False
            break
        if seen < PRESENCE_SHARE:
            step["kept"] = False
            aside_a.append(da)
            aside_b.append(db)
            continue
        step["kept"] = True
        kept_a.append(da)
        kept_b.append(db)
    A = np.column_stack(kept_a) if kept_a else np.zeros((r, 0))
    B = np.column_stack(kept_b) if kept_b else np.zeros((r, 0))
    return {"kept": A.shape[1], "directions": (A, B), "record": record}


def prune_harmonics(lin, X: Mapping[str, np.ndarray], observed: np.ndarray,
                    seed: int | None = 0) -> tuple[dict[Node, int], dict[str, dict]]:
    """Ranks without harmonics, from a fitted linear model ``lin`` (its ranks are the upper bound).

    ``X``: ``{m: (n, d_m)}`` as given to ``lin.fit`` (NaN rows where missing), ``observed``:
    ``(n, M)`` bool. Returns ``({node: rank}, diagnostics by node label)``.
    """
    mods = list(lin.modalities_)
    sl = block_slices(mods, lin.dims_)
    cols = node_columns(lin.nodes_, lin.ranks_)
    rng = np.random.default_rng(seed)
    ranks = dict(lin.ranks_)
    diag: dict[str, dict] = {}
    seen = np.flatnonzero(observed.any(axis=1))
    base = np.sort(rng.choice(seen, MAX_ROWS, replace=False)) if seen.size > MAX_ROWS else seen
    obs = observed[base]
    # Only the sampled rows are read and standardized (a copy of at most MAX_ROWS rows); "rows"
    # below are positions among them.
    xs = {m: (np.asarray(X[m][base], dtype=np.float64) - lin.mean_[sl[m]]) / lin.scale_[sl[m]] for m in mods}

    def rows_with(ms: Sequence[str]) -> np.ndarray:
        return np.flatnonzero(obs[:, [mods.index(m) for m in ms]].all(axis=1))

    # Posterior-mean scores of every modality's nodes, once over the sampled rows (the map is
    # row-wise, so any rows' scores are these rows of it); span[m, node]: the node's columns.
    loads: dict[str, np.ndarray] = {}
    full: dict[str, np.ndarray] = {}
    span: dict[tuple[str, Node], slice] = {}
    for m in mods:
        mine = [nd for nd in lin.nodes_ if m in nd]
        loads[m] = lin.W_[sl[m], :][:, np.concatenate([np.arange(cols[nd].start, cols[nd].stop) for nd in mine])]
        full[m] = _scores(xs[m], loads[m], lin.noise_var_[m])
        start = 0
        for nd in mine:
            span[m, nd] = slice(start, start + lin.ranks_[nd])
            start += lin.ranks_[nd]

    def block_scores(m: str, node: Node, rows: np.ndarray, feats: np.ndarray | None = None) -> np.ndarray:
        if feats is None:
            return full[m][rows, span[m, node]]
        return _scores(xs[m][np.ix_(rows, feats)], loads[m][feats], lin.noise_var_[m])[:, span[m, node]]

    # Kept directions as linear maps, so that they can be evaluated on any rows: per modality m,
    # (node, direction matrix over m's scores of that node, centring) - m's own side of its shared
    # nodes; other[m] lists the partner modality's side of them.
    own: dict[str, list[tuple[str, Node, np.ndarray, np.ndarray]]] = {m: [] for m in mods}
    other: dict[str, list[tuple[str, Node, np.ndarray, np.ndarray]]] = {m: [] for m in mods}

    def context(store: list[tuple[str, Node, np.ndarray, np.ndarray]], rows: np.ndarray) -> list[np.ndarray]:
        return [(block_scores(m, nd, rows) - mu) @ D for m, nd, D, mu in store]

    for node in sorted([n for n in lin.nodes_ if ranks[n] > 0], key=len, reverse=True):
        r = ranks[node]
        info: dict = {"linear_rank": int(r)}
        if len(node) >= 2:
            counts, pairs = [], {}
            found: list[tuple[dict, str, tuple]] = []  # added to the contexts after the node: its
            # pairs see the same factors, which must not explain each other
            for i, a in enumerate(node):
                for b in node[i + 1:]:
                    rest = [m for m in node if m not in (a, b)]
                    rows = rows_with(node)
                    if rows.size < 50:  # too few samples with every modality: no presence check
                        rows, rest = rows_with((a, b)), []
                    if rows.size < 50:
                        continue
                    Sa, Sb = block_scores(a, node, rows), block_scores(b, node, rows)
                    res = _test((Sa, Sb), (context(own[a], rows), context(own[b], rows)),
                                [block_scores(m, node, rows) for m in rest])
                    counts.append(res["kept"])
                    pairs[f"{a}+{b}"] = res["record"]
                    if res["kept"]:
                        A, B = res["directions"]
                        found += [(own, a, (a, node, A, Sa.mean(0))), (own, b, (b, node, B, Sb.mean(0))),
                                  (other, a, (b, node, B, Sb.mean(0))), (other, b, (a, node, A, Sa.mean(0)))]
            for store, m, item in found:
                if not any(it[0] == item[0] and it[1] == item[1] for it in store[m]):  # one pair's view per
                    store[m].append(item)  # (modality, node): the others repeat it
            if counts:
                ranks[node] = int(np.floor(np.median(counts)))
            info["pairs"] = pairs
        else:
            m = node[0]
            partners = sorted({p for _, nd, _, _ in other[m] for p in nd if p != m} | {m}, key=mods.index)
            rows = rows_with(partners)
            store = other[m]
            if rows.size < 50:  # too few samples with the partners: test without their context
                rows, store = rows_with((m,)), []
            d = lin.dims_[m]
            if rows.size >= 50 and d >= 4:
                perm = rng.permutation(d)
                h1, h2 = np.sort(perm[: d // 2]), np.sort(perm[d // 2:])
                ctx = context(store, rows)
                res = _test((block_scores(m, node, rows, h1), block_scores(m, node, rows, h2)), (ctx, ctx))
                ranks[node] = res["kept"]
                info["halves"] = res["record"]
        info["rank"] = int(ranks[node])
        diag[node_label(node)] = info
    return ranks, diag
