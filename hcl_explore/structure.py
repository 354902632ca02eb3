"""Structure search of the linear estimator: per-feature noise, pair screening of the candidate
lattice, and out-of-sample confirmation of every kept factor (see ``docs/structure.md``).

The pieces, each a pure function of second-order statistics:

- :func:`feature_noise` - one noise variance per feature (diagonal Psi, as in factor analysis),
  fitted so that the Psi-whitened block's bulk follows the Marchenko-Pastur law with unit variance
  while the signal eigenvalues above the edge are explained by spikes. Rank tests then run on the
  whitened blocks, where a heteroscedastic feature is no longer an extra "factor".
- :func:`pair_counts` / :func:`screen_lattice` - one canonical-correlation test per modality pair
  (M(M-1)/2 in all). A factor of node S correlates every pair inside S, so a node is a candidate
  only when every pair inside it is supported, and its rank is bounded by the weakest pair.
- :func:`confirm_structure` - cross-fitted held-out Gaussian likelihood on two row folds in a
  reduced space (each modality's leading whitened principal components): a factor is kept only if
  removing it lowers the held-out likelihood, and a factor is moved to another node (up, down, or
  two factors merged into their union) when that raises it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np

from . import layout as Y
from . import linear as L
from .lattice import Lattice, Node

#: Floor of a feature's noise variance, as a share of its total variance (Heywood cases: a feature
#: almost entirely explained by the factors would otherwise dominate every whitened test).
PSI_FLOOR = 0.02
#: A block whose signal rank is at least this share of its features is "dense": the regression
#: estimate's correction for the factors the other features cannot predict is then too rough
#: (psi spread +-25 % around a homoscedastic truth with 13 factors in 26 features), so psi is
#: polished by the maximum-likelihood factor-analysis fixed point with that many factors.
FA_POLISH_SHARE = 0.2
#: A whitened spike with this share of its eigenvector on one feature is that feature's own excess
#: variance, not a factor (:func:`_delocalize`).
LOCAL_SHARE = 0.6


def feature_noise(S: np.ndarray, n: int, margin: float = 0.1, max_iter: int = 12,
                  tol: float = 5e-3) -> tuple[np.ndarray, int]:
    """Per-feature noise variances of one modality and its signal rank.

    Three regimes. ``d < n / 2``: each feature's regression on the others
    (:func:`_regression_noise`). ``d >= n``: one variance for the block from its Marchenko-Pastur
    bulk (per-feature variances are not identifiable there). Between the two, the factor-analysis
    fixed point: whiten the block by the current ``psi``; the scalar ``sigma^2`` of the whitened
    bulk (Marchenko-Pastur median, :func:`linear.estimate_noise`) rescales ``psi``; the ``k``
    eigenvalues above the edge are debiased to population spikes ``l_j`` and their eigenvectors
    corrected for the sample-eigenvector inconsistency (``E v_ij^2 = c_j^2 u_ij^2 + (1 - c_j^2) / d``);
    then ``psi_i = S_ii - psi_i sum_j l_j u_ij^2`` (the factor-analysis fixed point), floored at
    ``PSI_FLOOR * S_ii``; stops when ``psi`` moves less than ``tol`` (relative). The first and the
    last regime's variances are then shrunk toward their mean (:func:`_shrink`) and rescaled so
    the whitened bulk has unit variance.

    Parameters
    ----------
    S : ndarray (d, d)
        The modality's covariance block.
    n : int
        Samples behind it.

    Returns
    -------
    psi : ndarray (d,)
        Noise variance per feature; the ``psi``-whitened bulk has unit variance.
    k : int
        Eigenvalues of the whitened block above the noise edge (the modality's signal rank).
    """
    S = (S + S.T) / 2
    d = S.shape[0]
    raw = np.diag(S).copy()
    # A (near-)constant feature must not be whitened by a vanishing noise variance: every floor is
    # relative to the modality's typical feature variance.
    typical = float(np.mean(raw[raw > 0])) if np.any(raw > 0) else 1.0
    diag = np.maximum(raw, 1e-8 * typical)
    if d < 2:
        return diag * 0.5, 0
    gamma = d / max(n, 1)
    wide = d > n + 20

    def spectrum(psi: np.ndarray, vectors: bool):
        s = 1.0 / np.sqrt(psi)
        St = S * s[:, None] * s[None, :]
        if wide:
            lam_top, V = L.cov_eigh(St, n)
            lam = np.zeros(d)
            lam[: lam_top.size] = lam_top
            return lam, V
        if vectors:
            lam, V = np.linalg.eigh(St)
            return lam[::-1], V[:, ::-1]
        return np.sort(np.linalg.eigvalsh(St))[::-1], None

    if d < 0.5 * n:
        psi = _regression_noise(S, n, diag, spectrum, margin)
        sigma2, k = L.noise_from_eigenvalues(spectrum(psi, False)[0], n, margin)
        if FA_POLISH_SHARE is not None and k >= FA_POLISH_SHARE * d and d >= 4:
            psi = _ml_polish(S, psi * sigma2, k, diag)
            sigma2, k = L.noise_from_eigenvalues(spectrum(psi, False)[0], n, margin)
        psi = _shrink(psi, n, k)
        if d < 20:
            # Too few eigenvalues for a bulk: the regression estimate stands on its own.
            return np.clip(psi, PSI_FLOOR * diag, diag), k
        sigma2 = L.noise_from_eigenvalues(spectrum(psi, False)[0], n, margin)[0]
        psi = _delocalize(psi * sigma2, diag, n, margin, spectrum)
        return _settle(psi, diag, n, margin, spectrum)
    if d >= n:
        # More features than samples: d per-feature variances cannot be told from d spikes (the
        # fixed point overfits them to the floor and every whitened direction becomes a factor);
        # one variance for the block, from its Marchenko-Pastur bulk, is what the data support.
        sigma2, k = L.estimate_noise(S, n, margin)
        return np.clip(np.full(d, sigma2), PSI_FLOOR * diag, diag), k
    psi = diag.copy()
    k = 0
    for it in range(max_iter):
        lam, V = spectrum(psi, True)
        sigma2, k = L.noise_from_eigenvalues(lam, n, margin)
        psi = psi * sigma2
        if k == 0:
            # No spike: the whole variance is noise, whatever the bulk median said.
            psi_new = diag
        else:
            ell = np.maximum(L.debias_spike(lam[:k] / sigma2, gamma), 1e-6)
            c2 = np.clip((1.0 - gamma / ell**2) / (1.0 + gamma / ell), 0.05, 1.0)
            u2 = np.maximum(V[:, :k] ** 2 - (1.0 - c2) / d, 0.0) / c2
            psi_new = diag - psi * (u2 @ ell)
        psi_new = np.clip(psi_new, PSI_FLOOR * diag, diag)
        change = float(np.max(np.abs(psi_new - psi) / diag))
        # Half steps once the count settles: the fixed point can flip a spike at the edge in and
        # out; averaging damps that two-cycle.
        psi = psi_new if it < 3 else 0.5 * (psi + psi_new)
        if change < tol:
            break
    psi = _shrink(psi, n, k)
    sigma2, k = L.noise_from_eigenvalues(spectrum(psi, False)[0], n, margin)
    return _settle(psi * sigma2, diag, n, margin, spectrum)


def _delocalize(psi: np.ndarray, diag: np.ndarray, n: int, margin: float, spectrum,
                max_rounds: int = 10) -> np.ndarray:
    """Raise the noise variance of a feature that a whitened spike sits on alone.

    A spike whose eigenvector puts at least ``LOCAL_SHARE`` of its weight on one feature is that
    feature's own excess variance: a factor loading on a single feature is not identifiable from
    its noise (factor analysis absorbs it into psi), and it is what an underestimated psi_i looks
    like after whitening (heteroscedastic noise, one feature at 0.77x its true variance made a
    spurious private factor at 1.25 against a bulk edge of 1.13). Spikes of factors spread over
    the features put at most 0.2-0.4 on any one of them at d = 24. One feature per round:
    ``psi_i *= 1 + (lam / sigma^2 - 1) v_i^2`` brings that direction down into the bulk.
    """
    psi = psi.copy()
    for _ in range(max_rounds):
        lam, V = spectrum(psi, True)
        sigma2, k = L.noise_from_eigenvalues(lam, n, margin)
        if k == 0 or V is None:
            break
        w = V[:, :k] ** 2
        i, j = np.unravel_index(int(np.argmax(w)), w.shape)
        if w[i, j] < LOCAL_SHARE:
            break
        psi[i] = min(psi[i] * (1.0 + (lam[j] / sigma2 - 1.0) * w[i, j]), diag[i])
    return psi


def _ml_polish(S: np.ndarray, psi: np.ndarray, k: int, diag: np.ndarray, max_iter: int = 50,
               tol: float = 1e-3) -> np.ndarray:
    """The maximum-likelihood factor-analysis fixed point with ``k`` factors, from ``psi`` (d,):
    ``Lambda = Psi^{1/2} V_k (Lambda_k - 1)^{1/2}`` from the top eigenpairs of the whitened block,
    then ``psi = diag(S - Lambda Lambda^T)`` (the iteration of scikit-learn's ``FactorAnalysis``).
    With ``d`` fixed it is consistent as n grows; used where the block is dense in factors. The
    step count is capped: psi's quantiles do not move after 30 steps at a 0.1 % tolerance (13
    factors in 26 features, 22 in 62), and each step is a full d x d eigendecomposition."""
    for _ in range(max_iter):
        sp = np.sqrt(psi)
        lam, V = np.linalg.eigh(S / sp[:, None] / sp[None, :])
        lam, V = lam[::-1][:k], V[:, ::-1][:, :k]
        load2 = psi * ((V**2) @ np.maximum(lam - 1.0, 0.0))
        new = np.clip(diag - load2, PSI_FLOOR * diag, diag)
        change = float(np.max(np.abs(new - psi) / diag))
        psi = new
        if change < tol:
            break
    return psi


def _shrink(psi: np.ndarray, n: int, k: int) -> np.ndarray:
    """Shrink per-feature noise variances toward their mean by as much of their spread as their
    own sampling error explains (empirical Bayes, James-Stein style).

    Each ``psi_i`` is estimated with variance about ``2 psi_i^2 / (n - k)``. At n = 40 that is most
    of the spread between features even when the noise is homoscedastic, and the spread then
    makes the whitened bulk's top eigenvalues look like factors; at n = 10^4 almost nothing is
    shrunk and heteroscedastic features keep their own variances.
    """
    if psi.size < 3:
        return psi
    mu = float(np.mean(psi))
    dev = psi - mu
    spread = float(np.mean(dev**2))
    if spread <= 0:
        return psi
    sampling = float(np.mean(2.0 * psi**2 / max(n - k, 1)))
    return mu + (1.0 - min(1.0, sampling / spread)) * dev


def _settle(psi: np.ndarray, diag: np.ndarray, n: int, margin: float, spectrum) -> tuple[np.ndarray, int]:
    """Clamp noise variances into ``[PSI_FLOOR * S_ii, S_ii]`` after the bulk rescaling and count
    the whitened block's spikes with them."""
    psi = np.clip(psi, PSI_FLOOR * diag, diag)
    return psi, L.noise_from_eigenvalues(spectrum(psi, False)[0], n, margin)[1]


def _regression_noise(S: np.ndarray, n: int, diag: np.ndarray, spectrum, margin: float,
                      rounds: int = 2) -> np.ndarray:
    """Noise variances from each feature's regression on all the others (d < n / 2).

    The residual variance of feature i given the rest is ``1 / (S^-1)_ii``, times ``n / (n - d + 1)``
    for the degrees of freedom the regression used. It exceeds ``psi_i`` by the part of the
    factors the other features cannot predict, ``sum_j w_ij^2 / (1 + l_j)`` for a factor of
    whitened spike ``l_j``: large only for weak factors, whose share of any one feature is small.
    That part is removed with the spikes of the whitened block (two rounds). Unlike the
    factor-analysis fixed point, no step can trade a feature's noise for a spurious spike.
    """
    d = S.shape[0]
    try:
        P = np.linalg.inv(S)
        res = n / max(n - d + 1, 1) / np.maximum(np.diag(P), 1e-300)
    except np.linalg.LinAlgError:
        res = diag.copy()
    res = np.clip(res, PSI_FLOOR * diag, diag)
    psi = res.copy()
    gamma = d / max(n, 1)
    for _ in range(rounds):
        lam, V = spectrum(psi, True)
        sigma2, k = L.noise_from_eigenvalues(lam, n, margin)
        if k == 0:
            break
        ell = np.maximum(L.debias_spike(lam[:k] / sigma2, gamma), 1e-6)
        c2 = np.clip((1.0 - gamma / ell**2) / (1.0 + gamma / ell), 0.05, 1.0)
        u2 = np.maximum(V[:, :k] ** 2 - (1.0 - c2) / d, 0.0) / c2
        psi = np.clip(res - psi * sigma2 * (u2 @ (ell / (1.0 + ell))), PSI_FLOOR * diag, diag)
    return psi


def whiten_stats(stats: L.CovStats, psi: np.ndarray) -> L.CovStats:
    """``stats`` with every feature divided by its noise standard deviation: covariance
    ``Psi^{-1/2} S Psi^{-1/2}`` (D, D), noise variance 1 in every feature. Canonical correlations
    are unchanged; eigenvalue tests become valid for heteroscedastic noise."""
    w = 1.0 / np.sqrt(psi)
    return L.CovStats(stats.modalities, stats.dims, stats.mean, stats.cov * w[:, None] * w[None, :],
                      stats.counts, stats.n_samples)


def pair_counts(stats: L.CovStats, signal_rank: Mapping[str, int] | None = None,
                margin_cca: float = 0.25, tw_floor: bool = False) -> dict[tuple[str, str], dict]:
    """One canonical-correlation test per modality pair, and per pair and third modality.

    Returns ``{(a, b): {"count": c, "rho2": [...], "threshold": t, "without": {m: h}}}``:

    - ``c`` canonical correlations of a and b above Wachter's edge (times ``1 + margin_cca``; with a
      Tracy-Widom floor in a reduced space or where a modality is wide). A factor of node S
      correlates every pair inside S, so ``c_ab`` counts the factors of nodes holding a and b.
    - ``h = without[m]``: the same count after removing from a and from b the directions they
      share with modality m, i.e. the factors of nodes holding a and b but not m.

    M(M-1)/2 pair tests and M(M-1)(M-2)/2 conditional ones, each on two blocks: no test grows with
    the 2^M candidates.
    """
    noise = {m: 1.0 for m in stats.modalities}
    pe = L._Peeler(stats, noise, 0.1, margin_cca, signal_rank, tw_floor)
    mods = list(stats.modalities)

    def count(a: str, b: str, Ua, Ub) -> tuple[int, np.ndarray, float]:
        rho2, da, db = pe._pair_cca(a, b, Ua, Ub)
        thr = pe.cca_threshold(da, db, pe._n((a, b)), reduced=pe.wide[a] or pe.wide[b])
        return int(np.sum(rho2 > thr)), rho2, float(thr)

    out = {}
    for a, b in combinations(mods, 2):
        c, rho2, thr = count(a, b, None, None)
        without = {}
        for m in mods:
            if m in (a, b):
                continue
            if c == 0:
                without[m] = 0
                continue
            Ua = pe.shared_subspace(a, (m,))[0]
            Ub = pe.shared_subspace(b, (m,))[0]
            without[m] = count(a, b, Ua, Ub)[0] if (Ua is not None or Ub is not None) else c
        out[(a, b)] = {"count": c, "rho2": rho2[: c + 3].round(5).tolist(), "threshold": thr, "without": without}
    return out


def screen_lattice(lattice: Lattice, counts: Mapping[tuple[str, str], Mapping],
                   keep: Sequence[Node] = ()) -> tuple[Lattice, dict[Node, int]]:
    """The candidates the pair tests support.

    A factor of node S correlates every pair ``a, b`` inside S, and it does so without any
    modality ``m`` outside S. So S (two or more modalities) stays only when for every pair inside
    it ``c_ab > 0`` and, for every ``m`` not in S, ``h_ab(m) > 0`` (:func:`pair_counts`). Private
    nodes and ``keep`` always stay. Returns the screened lattice and each node's rank bound (the
    smallest such count; -1 for private nodes).
    """
    def entry(a: str, b: str) -> Mapping:
        return counts[(a, b)] if (a, b) in counts else counts[(b, a)]

    keep = set(keep)
    nodes, bound = [], {}
    for node in lattice.nodes:
        if len(node) == 1:
            nodes.append(node)
            bound[node] = -1
            continue
        inside = set(node)
        outside = [m for m in lattice.modalities if m not in inside]
        b = None
        for x, y in combinations(node, 2):
            e = entry(x, y)
            v = min([int(e["count"])] + [int(e["without"].get(m, e["count"])) for m in outside])
            b = v if b is None else min(b, v)
            if b == 0:
                break
        if b > 0 or node in keep:
            nodes.append(node)
            bound[node] = int(b)
    return Lattice(lattice.modalities, nodes), bound


#: Principal components a modality keeps in the reduced space beyond those above its bare
#: Marchenko-Pastur edge: a factor near the detection limit is spread over the first components
#: past its own, and each extra component costs the canonical-correlation tests only 1 / n.
EXTRA_PCS = 4
#: ... but one extra component per this many samples at most: at n = 40 four extra components per
#: modality raise the canonical-correlation edge more than they gather of a weak factor (two
#: shared factors at 2x the limit, n = 40-60: the second was found in 4 of 6 cases, not 0).
EXTRA_PCS_PER_N = 100


def extra_pcs(n: int) -> int:
    """Principal components beyond the bare edge a modality observed in ``n`` samples keeps."""
    return int(min(EXTRA_PCS, max(0, int(n) // EXTRA_PCS_PER_N)))


@dataclass
class Reduced:
    """A whitened data set seen through each modality's leading principal components.

    ``stats.cov`` (Q, Q) holds ``V_a^T S~_ab V_b`` where ``S~`` is the Psi-whitened covariance and
    ``V_m`` (d_m, q_m) the top eigenvectors of ``S~_mm``; ``basis[m] = V_m``. In these coordinates the
    noise is about the identity and every structure test costs O(Q^3), whatever the d_m.
    """

    stats: L.CovStats
    basis: dict[str, np.ndarray]
    noise: dict[str, float] = field(default_factory=dict)
    full_dims: dict[str, int] = field(default_factory=dict)


def reduce_stats(stats_w: L.CovStats, extra: int | None = None, need: Mapping[str, int] | None = None) -> Reduced:
    """Reduce whitened statistics to ``q_m`` = (eigenvalues above the bare noise edge) + ``extra``
    (default :func:`extra_pcs`) principal components per modality (at most d_m and n_m / 5, but never fewer than ``need[m]``,
    the factors the user fixed in nodes holding m).

    The noise variance stays 1 in these coordinates (``noise``); the private test must compare
    with the largest-eigenvalue law of all d_m features (``full_dims``), since the components were
    selected out of them.
    """
    sl = stats_w.offsets
    basis, noise, dims = {}, {}, {}
    for j, m in enumerate(stats_w.modalities):
        n = int(stats_w.counts[j, j])
        d = stats_w.dims[m]
        A = stats_w.cov[sl[m], sl[m]]
        if d > n + 20:
            lam, V = L.cov_eigh(A, n)
        else:
            lam, V = np.linalg.eigh((A + A.T) / 2)
            lam, V = lam[::-1], V[:, ::-1]
        k0 = int(np.sum(lam > L.mp_edge(d / n)))
        # At most n / 5 components: canonical correlations between blocks whose sizes approach n
        # are 1 whatever the truth (and noise estimates of d > n blocks are crude).
        q = max(1, min(k0 + (extra_pcs(n) if extra is None else extra), d, max(n // 5, 2)), min(int((need or {}).get(m, 0)), d))
        basis[m], dims[m] = V[:, :q], q
        noise[m] = 1.0
    return Reduced(_project(basis, dims, stats_w), basis, noise, dict(stats_w.dims))


def lift_loadings(red: Reduced, loadings: Mapping[Node, np.ndarray], dims: Mapping[str, int]) -> dict[Node, np.ndarray]:
    """Node loadings found in the reduced space, (sum_{m in S} q_m, r), mapped back to whitened
    feature space, (sum_{m in S} d_m, r): ``V_m B_m`` per modality."""
    out = {}
    for node, B in loadings.items():
        src = Y.block_slices(node, red.stats.dims)
        out[node] = np.concatenate([red.basis[m] @ B[src[m]] for m in node], axis=0)
    return out


def _project(basis: Mapping[str, np.ndarray], dims: Mapping[str, int], stats_w: L.CovStats) -> L.CovStats:
    """``stats_w`` in the coordinates ``basis`` (``V_a^T S_ab V_b`` per block), (Q, Q)."""
    sl = stats_w.offsets
    mods = list(stats_w.modalities)
    cov = np.block([[basis[a].T @ stats_w.cov[sl[a], sl[b]] @ basis[b] for b in mods] for a in mods])
    return L.CovStats(mods, dict(dims), np.zeros(cov.shape[0]), (cov + cov.T) / 2, stats_w.counts,
                      stats_w.n_samples)


def project_stats(red: Reduced, stats_w: L.CovStats) -> L.CovStats:
    """Whitened statistics of other rows (a fold) in ``red``'s reduced coordinates, (Q, Q)."""
    return _project(red.basis, red.stats.dims, stats_w)


def peel_reduced(red: Reduced, stats: L.CovStats, lattice: Lattice, fixed: Mapping[Node, int | None],
                 callback=None) -> L.PeelResult:
    """The lattice peeling (:func:`linear.peel`) on reduced statistics ``stats`` (all rows or a
    fold): unit noise, Tracy-Widom floors, private counts against all d_m features."""
    return L.peel(stats, red.noise, lattice, fixed, callback=callback, tw_floor=True,
                  signal_rank=dict(stats.dims), private_dims=red.full_dims)


#: How the two fold searches confirm a node's rank found on all rows (see :func:`confirm_ranks`):
#: ``"min"`` keeps a shared factor only when both folds find it too (on the simulated grid as exact
#: as no confirmation, and it removes most one-factor nodes of real data that come and go between
#: subsamples); ``"median"`` when one fold does; ``"none"`` skips the check.
CONFIRM_RULE = "min"


def confirm_ranks(red: Reduced, folds_w: Sequence[L.CovStats], lattice: Lattice,
                  fixed: Mapping[Node, int | None], ranks: Mapping[Node, int],
                  projected: bool = False) -> tuple[dict[Node, int], dict]:
    """Out-of-sample confirmation of the ranks found on all rows.

    The structure search is rerun on each of two disjoint row folds (same reduced coordinates);
    a shared node keeps the rank found on all rows only as far as the folds find it too
    (``CONFIRM_RULE``). Nodes whose rank was given are left alone. ``folds_w``: whitened fold
    statistics, or (``projected=True``) fold statistics already in ``red``'s coordinates.
    """
    info: dict = {"folds": []}
    fold_ranks = []
    for fw in folds_w:
        pr = peel_reduced(red, fw if projected else project_stats(red, fw), lattice, fixed)
        fr = {n: int(pr.ranks.get(n, 0)) for n in ranks}
        fold_ranks.append(fr)
        info["folds"].append({"+".join(n): r for n, r in fr.items() if r > 0})
    out = dict(ranks)
    for node in ranks:
        if fixed.get(node) is not None or len(node) < 2:
            continue
        trio = sorted([ranks[node], fold_ranks[0][node], fold_ranks[1][node]])
        if CONFIRM_RULE == "min":
            out[node] = trio[0]
        elif CONFIRM_RULE == "median":
            # Never above the all-rows rank: a node seen only in the folds has no loadings.
            out[node] = min(trio[1], ranks[node])
    info["changed"] = {"+".join(n): [ranks[n], out[n]] for n in ranks if out[n] != ranks[n]}
    return out, info
