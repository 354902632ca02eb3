"""The linear estimator: per-feature noise, the screened and confirmed structure search, and the
masked factorization (docs/structure.md)."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Mapping

import numpy as np

from .. import layout as Y
from .. import linear as L
from .. import structure as ST
from ..lattice import Lattice, Node, node_label
from ..blas import one_blas_thread
from .base import Estimator, check_given_ranks, plain, register, resolve_device

AUTO_STANDARDIZE_RATIO = 20.0
#: Small-sample resample confirmation (see ``LinearEstimator._resample_confirm``): at most this many
#: samples, this many subsamples of this fraction, and a node kept when found in this share of them.
RESAMPLE_CONFIRM_MAX_N = 1000
RESAMPLE_CONFIRM = 16
RESAMPLE_FRACTION = 0.8
RESAMPLE_KEEP = 0.85
#: ... or 8 (and no second batch) when the two half folds have already confirmed but disagreed.
RESAMPLE_CONFIRM_AFTER_FOLDS = 8
#: The resamples replace weak half folds (see ``FOLD_MAX_RHO2``) only up to this much work
#: (samples x features^2; each resample is a whole search): 40 x 141 and 438 x 66 are far below,
#: 800 x 649 (32 searches of 1-3 s) is above and keeps the folds.
RESAMPLE_ONLY_MAX_WORK = 5e7
#: Half folds confirm only where their canonical-correlation edge (Wachter's, for the two largest
#: reduced blocks in half the rows, with the search's 25 % margin) stays below this squared
#: correlation; else the resamples alone confirm. At n = 40 with 8 + 8 components in 20 rows the
#: edge is 0.96: a canonical correlation of 0.98 went unseen and the shared node was dropped.
FOLD_MAX_RHO2 = 0.3
#: A searched node found in at least this share of the first subsamples, but not all, gets a
#: second batch of ``RESAMPLE_CONFIRM`` before it is kept or dropped.
RESAMPLE_AMBIGUOUS = 0.6
#: Refit each feature's noise variance with the refined loadings (feature-space fits).
PSI_REFIT = True
#: Up to this many features in all, the noise step after the covariance pass runs on one BLAS
#: thread too (its eigendecompositions are per modality; the structure search and the refinement
#: always run on one thread).
ONE_THREAD_MAX_D = 2000


def _variance_ratio(var: np.ndarray) -> float:
    """max / min of the positive feature variances of one modality."""
    v = var[var > 1e-12]
    return float(v.max() / v.min()) if v.size else 1.0


#: In-memory data with more features than this many times its samples take the sample-space
#: path (no D x D matrix): at D = 15,000 and n = 2,000 the covariance pass alone took 6 minutes.
SAMPLE_SPACE_RATIO = 1.0


def _sample_space(data) -> bool:
    """Whether ``data`` is in memory and has more features in all than samples."""
    if not (hasattr(data, "X") and hasattr(data, "observed") and hasattr(data, "ids")):
        return False
    n = int(np.asarray(data.observed).shape[0])
    D = sum(int(np.asarray(data.X[m]).shape[1]) for m in data.modalities)
    return D > SAMPLE_SPACE_RATIO * n and D > 500


def _folds_have_power(qdims: Mapping[str, int], folds) -> bool:
    """Whether the half folds can confirm a shared factor of the reduced space ``qdims``: the
    null edge of their largest pair test stays below ``FOLD_MAX_RHO2`` (see there)."""
    q = sorted((int(v) for v in qdims.values()), reverse=True)
    if len(q) < 2:
        return True
    n_f = min(int(np.min(np.diag(f.counts))) for f in folds)
    if n_f <= q[0] + q[1]:
        return False
    return L.wachter_edge(q[0] / n_f, q[1] / n_f) * 1.25 <= FOLD_MAX_RHO2


def _folds_disagree(confirm: Mapping | None, ranks: Mapping[Node, int]) -> bool:
    """Whether the two fold searches changed a shared rank or found a shared node the whole data
    did not: the structure is uncertain there, and worth resampling (clean structures are left
    alone, at no cost). Private nodes are not confirmed by the folds, so they do not count."""
    if not confirm:
        return False
    found = {node_label(n) for n, r in ranks.items() if r > 0}
    return bool(confirm.get("changed")) or any("+" in lab and lab not in found
                                               for f in confirm.get("folds", []) for lab in f)


@register
class LinearEstimator(Estimator):
    """``x = mean + scale * (W z + e)``, ``z ~ N(0, I)``, ``e ~ N(0, diag(psi))``, W supported on
    the lattice: one streamed covariance pass, then everything on sufficient statistics."""

    name = "linear"
    has_structure_search = True

    def fit(self, model, data, callback: L.Callback | None, y=None) -> None:
        if y is not None:
            raise ValueError("y is only used by the contrastive estimator's supervised head; the linear "
                             "estimator is unsupervised (use evaluate_prediction for outcomes).")
        self._run(model, data, callback)

    def search_structure(self, model, data) -> dict[Node, int]:
        return self._run(model, data, None, structure_only=True, resample=False)

    def progress_bar(self, model, data):
        from ..progress import fit_bar

        return fit_bar(model, data, "linear")

    def dump(self, model) -> tuple[dict, dict[str, np.ndarray]]:
        psi = getattr(model, "psi_", None)
        return {}, ({"psi": psi} if psi is not None else {})

    def restore(self, model, meta, arrays) -> None:
        if "psi" in arrays:
            model.psi_ = arrays["psi"]

    def _run(self, model, data, callback: L.Callback | None, structure_only: bool = False, resample: bool = True):
        """The fit (structure search, then refinement); ``structure_only``: the ranks alone;
        ``resample``: small-sample resample confirmation (off in the resamples themselves)."""
        with contextlib.ExitStack() as stack:
            return self._run_in(stack, model, data, callback, structure_only, resample)

    def _run_in(self, stack: contextlib.ExitStack, model, data, callback: L.Callback | None, structure_only: bool,
                resample: bool):
        """:meth:`_run`; BLAS goes to one thread (``stack``) once the statistics are summed."""
        t0 = time.perf_counter()
        dev = resolve_device(model.device)
        mods = list(data.modalities)
        lat = model._resolve_lattice(mods)
        fixed = model._resolve_ranks(lat)
        timings: dict[str, float] = {}
        check_given_ranks(fixed, {m: len(data.feature_names[m]) for m in mods})
        auto = any(v is None for v in fixed.values())
        # Ranks the user fixed must fit in the reduced space whatever the data say.
        need = {m: sum(int(v) for nd, v in fixed.items() if v and m in nd) for m in mods}
        if _sample_space(data):
            prep = self._prepare_wide(model, data, need, auto, callback, timings)
        else:
            prep = self._prepare(model, data, need, auto, dev, callback, timings, stack)
        # Everything from here works on small matrices (reduced statistics, the refinement's
        # products): one BLAS thread (see blas.py; a no-op for another BLAS).
        stack.enter_context(one_blas_thread())
        red, dims = prep["red"], prep["dims"]
        t2 = time.perf_counter()
        search: dict[str, Any] = {"reduced_dims": dict(red.stats.dims)}
        if prep["wide"]:
            search["sample_space"] = True
        peel, ranks, lat_s, fixed_s = self._search(red, red.stats, lat, fixed, auto, search, callback)
        small = prep["n_samples"] <= RESAMPLE_CONFIRM_MAX_N and hasattr(data, "subset")
        # Cheap small data whose half folds cannot confirm: the resamples alone confirm.
        weak_folds = (small and prep["folds"] is not None and not _folds_have_power(red.stats.dims, prep["folds"])
                      and prep["n_samples"] * sum(dims.values()) ** 2 <= RESAMPLE_ONLY_MAX_WORK)
        if prep["folds"] is not None and not weak_folds:
            ranks, search["confirm"] = ST.confirm_ranks(red, prep["folds"], lat_s, fixed_s, ranks, projected=True)
        elif weak_folds:
            search["confirm"] = {"skipped": "the half folds are too small for the reduced space"}
        timings["ranks"] = time.perf_counter() - t2
        if (resample and auto and len(mods) > 1 and small
                and (weak_folds or _folds_disagree(search.get("confirm"), ranks))):
            ranks, search["resample"] = (
                self._resample_confirm(model, data, lat, fixed, ranks, RESAMPLE_CONFIRM, second=True) if weak_folds
                else self._resample_confirm(model, data, lat, fixed, ranks, RESAMPLE_CONFIRM_AFTER_FOLDS, second=False))
        if structure_only:
            return ranks

        nodes = [n for n in lat.nodes if ranks[n] > 0]
        t3 = time.perf_counter()
        psi = prep["psi"]
        if prep["wide"]:
            # Sample space: refine in the reduced coordinates (the loadings of a d >> n block lie
            # in its leading components anyway) and lift; no D x D matrix is ever formed.
            rd = red.stats.dims
            B0 = {(m, nd): peel.loadings[nd][loc][:, : ranks[nd]]
                  for nd in nodes for m, loc in Y.block_slices(nd, rd).items()}
            res = L.masked_factorization(red.stats.cov - np.eye(sum(rd.values())),
                                         Y.stack_loadings(B0, mods, rd, nodes, ranks),
                                         Y.support_mask(mods, rd, nodes, ranks), device=dev, tol=model.tol,
                                         max_iter=model.max_iter, callback=callback)
            blocks = Y.split_loadings(res.W, mods, rd, nodes, ranks)
            Ww = Y.stack_loadings({k: red.basis[k[0]] @ B for k, B in blocks.items()}, mods, dims, nodes, ranks)
        else:
            lifted = ST.lift_loadings(red, {n: B for n, B in peel.loadings.items() if ranks[n] > 0}, dims)
            init = {(m, node): lifted[node][local][:, : ranks[node]]
                    for node in nodes for m, local in Y.block_slices(node, dims).items()}
            W0 = Y.stack_loadings(init, mods, dims, nodes, ranks)
            # Refinement in whitened units (noise 1 in every feature): least squares there is the
            # factor-analysis weighting for the Psi found above (refitted below with the loadings).
            res = L.masked_factorization(prep["cov_w"] - np.eye(sum(dims.values())), W0,
                                         Y.support_mask(mods, dims, nodes, ranks), device=dev, tol=model.tol,
                                         max_iter=model.max_iter, callback=callback)
            Ww = res.W
        W = Ww * np.sqrt(psi)[:, None]
        if PSI_REFIT:
            # Psi refitted with the loadings (the factor-analysis update of the diagonal,
            # psi_i = S_ii - (W W^T)_ii in transformed units). The search's psi came from each block
            # alone (one variance per block where d >= n); the refined loadings account for every
            # node's share of each feature. Held-out log-likelihood per sample: nutrimouse
            # -2453 -> -8.4, COVID serology -98.9 -> -79.1, a simulated M = 5 case unchanged.
            psi = np.clip(prep["diag_t"] - np.sum(W**2, axis=1), ST.PSI_FLOOR * prep["diag_t"], prep["diag_t"])
        # The PCA-like basis inside each node (factor 1 explains the most variance): the model is
        # unchanged, and transform()'s scores become orthonormal coordinates of each node's part.
        W = Y.canonical_rotation(W, [n for n in nodes for _ in range(ranks[n])])
        timings["refine"] = time.perf_counter() - t3
        timings["total"] = time.perf_counter() - t0

        sl = Y.block_slices(mods, dims)
        model.modalities_ = mods
        model.lattice_ = lat
        model.dims_ = dims
        model.feature_names_ = {m: list(data.feature_names[m]) for m in mods}
        model.mean_ = prep["mean"]
        model.scale_ = prep["scale"]
        model.standardized_ = bool(prep["do_std"])
        # How files were cleaned (columns, one-hot levels, imputation means), so that new samples
        # can be loaded the same way: load_modalities(..., preprocessing=model.preprocessing_).
        model.preprocessing_ = (getattr(data, "report", None) or {}).get("preprocessing")
        model.noise_var_ = {m: float(np.mean(psi[sl[m]])) for m in mods}
        model.psi_ = psi  # (D,) noise variance per feature, transformed units
        model.ranks_ = ranks
        model.nodes_ = nodes
        model.W_ = W  # (D, R) in transformed units
        model.objective_ = res.objective
        model.n_iter_ = res.n_iter
        model.converged_ = res.converged
        model.objective_history_ = res.history
        model.total_var_ = prep["total_var"]
        model.n_samples_ = prep["n_samples"]
        model.counts_ = prep["counts"]
        search["seconds"] = {k: round(v, 4) for k, v in timings.items()}
        search["refine"] = {"iterations": res.n_iter, "converged": res.converged}
        # Plain JSON types: the diagnostics are saved with the model and must read back equal.
        model.rank_diagnostics_ = plain(dict(peel.diagnostics) | {"search": search})
        model.timings_ = timings
        model.device_ = str(dev)
        model.signal_rank_ = prep["signal_rank"]
        if callback is not None:
            callback("done", {"objective": res.objective, "n_iter": res.n_iter, "converged": res.converged,
                              # Flat numbers: a run's event log keeps scalars only.
                              **{f"seconds_{k}": round(v, 4) for k, v in timings.items()},
                              **{f"candidates_{k}": v for k, v in (search.get("candidates") or {}).items()}})
        return None

    @staticmethod
    def _scale(model, var: np.ndarray, mods, sl) -> tuple[np.ndarray, bool]:
        """The per-feature scale of ``x -> (x - mean) / scale`` from the feature variances."""
        scale = np.ones(var.shape[0])
        if model.standardize == "auto":
            do_std = any(_variance_ratio(var[sl[m]]) > AUTO_STANDARDIZE_RATIO for m in mods)
        elif isinstance(model.standardize, (bool, np.bool_)):
            do_std = bool(model.standardize)
        else:
            raise ValueError(f"standardize must be 'auto', True or False, got {model.standardize!r}.")
        if do_std:
            sd = np.sqrt(var)
            scale = np.where(sd > 1e-12, sd, 1.0)
        if model.balance_modalities:
            for m in mods:
                tot = float(np.sum(var[sl[m]] / scale[sl[m]] ** 2))
                scale[sl[m]] *= math.sqrt(max(tot, 1e-300))
        return scale, do_std

    @staticmethod
    def _search(red: ST.Reduced, red_stats: L.CovStats, lat: Lattice, fixed: Mapping[Node, int | None], auto: bool,
                search: dict | None = None, callback: L.Callback | None = None):
        """The structure search on reduced statistics ``red_stats`` (``red.stats`` or a fold of it):
        the pair screen, then the peeling of the candidates it leaves.
        Returns ``(peel, ranks over lat, screened lattice, its fixed ranks)``; fills ``search``."""
        search = {} if search is None else search
        lat_s, fixed_s = lat, fixed
        if auto and len(lat.modalities) > 1:
            pairs = ST.pair_counts(red_stats, tw_floor=True)
            keep = [n for n, v in fixed.items() if v is not None and v > 0]
            lat_s, bound = ST.screen_lattice(lat, pairs, keep)
            fixed_s = {n: fixed[n] for n in lat_s.nodes}
            search["pairs"] = {f"{a}+{b}": v for (a, b), v in pairs.items()}
            search["candidates"] = {"tested": len(lat_s.nodes), "of": len(lat.nodes)}
        n_tested = len(lat_s.nodes)

        def peel_events(stage: str, info: dict) -> None:
            # Every "ranks" event says how many candidates the screen left (progress counts them).
            callback(stage, {**info, "of": n_tested} if stage == "ranks" else info)

        peel = ST.peel_reduced(red, red_stats, lat_s, fixed_s, callback=peel_events if callback else None)
        ranks = {n: int(peel.ranks.get(n, 0)) for n in lat.nodes}
        return peel, ranks, lat_s, fixed_s

    def _prepare(self, model, data, need, auto, dev, callback, timings,
                 stack: contextlib.ExitStack | None = None) -> dict:
        """Feature space: one covariance pass (D x D statistics), noise per feature, whitening,
        reduction to each modality's leading components, and the two folds in those coordinates."""
        t0 = time.perf_counter()
        mods = list(data.modalities)
        # Two row folds from the same pass (same flops) for the out-of-sample confirmation.
        if hasattr(data, "covariance_stats"):
            # A source that computes its own statistics (e.g. per partition on a Dask cluster).
            stats = data.covariance_stats(chunk_size=model.chunk_size, device=dev, callback=callback, folds=auto)
        else:
            stats = L.covariance_stats(data, chunk_size=model.chunk_size, device=dev, callback=callback, folds=auto)
        timings["covariance"] = time.perf_counter() - t0
        if stack is not None and sum(stats.dims.values()) <= ONE_THREAD_MAX_D:
            # The noise step's per-modality eigendecompositions are small too.
            stack.enter_context(one_blas_thread())
        dims = stats.dims
        sl = stats.offsets
        D = sum(dims.values())
        scale, do_std = self._scale(model, np.maximum(np.diag(stats.cov), 0), mods, sl)

        def transformed(s: L.CovStats) -> L.CovStats:
            return L.CovStats(mods, dims, s.mean, s.cov / scale[:, None] / scale[None, :], s.counts, s.n_samples)

        stats_t = transformed(stats)
        cov = stats_t.cov
        t1 = time.perf_counter()
        # One noise variance per feature (diagonal Psi): real features are heteroscedastic, and one
        # level per modality turns every feature's extra variance into a "factor".
        psi = np.empty(D)
        signal_rank: dict[str, int] = {}
        for j, m in enumerate(mods):
            psi[sl[m]], signal_rank[m] = ST.feature_noise(cov[sl[m], sl[m]], int(stats.counts[j, j]))
        if callback is not None:
            callback("noise", {"noise_var": {m: float(np.mean(psi[sl[m]])) for m in mods}})
        timings["noise"] = time.perf_counter() - t1
        stats_w = ST.whiten_stats(stats_t, psi)
        # Every structure test runs on each modality's leading whitened principal components.
        red = ST.reduce_stats(stats_w, need=need)
        folds = None
        if stats.folds is not None and all(f is not None for f in stats.folds):
            folds = [ST.project_stats(red, ST.whiten_stats(transformed(f), psi)) for f in stats.folds]
        return {"wide": False, "red": red, "folds": folds, "dims": dims, "psi": psi, "signal_rank": signal_rank,
                "diag_t": np.diag(cov).copy(),
                "mean": stats.mean, "scale": scale, "do_std": do_std, "cov_w": stats_w.cov,
                "total_var": {m: float(np.trace(cov[sl[m], sl[m]])) for m in mods},
                "n_samples": stats.n_samples, "counts": stats.counts}

    def _prepare_wide(self, model, data, need, auto, callback, timings) -> dict:
        """Sample space (in-memory data with more features than samples): the same steps without
        any D x D matrix. Each modality's standardized rows give its noise (per feature when
        d_m < n_m, from the d_m x d_m block; one Marchenko-Pastur variance otherwise, from the
        n_m x n_m Gram matrix) and, once whitened, its leading right singular vectors; the
        pairwise-complete statistics (and folds) of those component scores are the reduced
        statistics, exactly what projecting the full ones would give."""
        t0 = time.perf_counter()
        mods = list(data.modalities)
        obs = np.asarray(data.observed, dtype=bool)
        dims = {m: int(np.asarray(data.X[m]).shape[1]) for m in mods}
        sl = Y.block_slices(mods, dims)
        D = sum(dims.values())
        mean, var = np.zeros(D), np.zeros(D)
        for j, m in enumerate(mods):
            rows = np.asarray(data.X[m][obs[:, j]], dtype=np.float64)
            if rows.shape[0] < 2:
                raise ValueError(f"Modality {m!r} is observed in {rows.shape[0]} sample(s); at least 2 are needed.")
            if not np.isfinite(rows).all():
                raise ValueError(f"Modality {m!r} has a missing or non-finite value in an observed row.")
            mean[sl[m]] = rows.mean(axis=0)
            var[sl[m]] = rows.var(axis=0)
        scale, do_std = self._scale(model, var, mods, sl)
        timings["covariance"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        psi = np.empty(D)
        signal_rank: dict[str, int] = {}
        basis: dict[str, np.ndarray] = {}
        qdims: dict[str, int] = {}
        scores: dict[str, np.ndarray] = {}
        n_all = obs.shape[0]
        total_var = {}
        # Many small eigendecompositions (the noise step): two contending BLAS threads made them
        # 20-70x slower on a busy machine (17 s instead of 1 s for a 640-row subsample of mfeat).
        small = max(min(int(obs[:, j].sum()), dims[m]) for j, m in enumerate(mods)) <= ONE_THREAD_MAX_D
        for j, m in enumerate(mods):
            rows = obs[:, j]
            n = int(rows.sum())
            d = dims[m]
            Z = (np.asarray(data.X[m][rows], dtype=np.float64) - mean[sl[m]]) / scale[sl[m]]
            Z -= Z.mean(axis=0)
            total_var[m] = float(np.sum(Z * Z) / n)
            gram = None
            if d < n:
                A = Z.T @ Z / n
                with one_blas_thread(small):
                    psi[sl[m]], signal_rank[m] = ST.feature_noise(A, n)
            else:
                G = Z @ Z.T / n
                lam_g, U_g = np.linalg.eigh((G + G.T) / 2)
                lam_g, U_g = lam_g[::-1], U_g[:, ::-1]
                lam = np.concatenate([lam_g, np.zeros(max(d - n, 0))])
                sigma2, signal_rank[m] = L.noise_from_eigenvalues(lam, n)
                diag = var[sl[m]] / scale[sl[m]] ** 2
                typical = float(np.mean(diag[diag > 0])) if np.any(diag > 0) else 1.0
                psi[sl[m]] = np.clip(np.full(d, sigma2), ST.PSI_FLOOR * np.maximum(diag, 1e-8 * typical),
                                     np.maximum(diag, 1e-8 * typical))
                p0 = float(psi[sl[m]][0])
                if np.all(psi[sl[m]] == p0):
                    gram = (lam_g / p0, U_g)  # one variance for the block: whitening only rescales G
            Zw = Z / np.sqrt(psi[sl[m]])
            # Leading right singular vectors of Zw from the smaller Gram matrix (one eigh of
            # min(n, d)^2; an SVD of the n x d block costs more and is not needed).
            if n < d:
                if gram is not None:
                    lam_w, U = gram
                else:
                    lam_w, U = np.linalg.eigh(Zw @ Zw.T / n)
                    lam_w, U = lam_w[::-1], U[:, ::-1]
            else:
                A = Zw.T @ Zw / n
                with one_blas_thread(small):
                    lam_w, V = np.linalg.eigh(A)
                lam_w, V = lam_w[::-1], V[:, ::-1]
            k0 = int(np.sum(lam_w > L.mp_edge(d / n)))
            q = max(1, min(k0 + ST.extra_pcs(n), d, max(n // 5, 2)), min(int(need.get(m, 0)), d, min(n, d)))
            if n < d:
                lam_q = np.maximum(lam_w[:q], 1e-12 * max(float(lam_w[0]), 1e-300))
                V = (Zw.T @ U[:, :q]) / np.sqrt(n * lam_q)[None, :]
                # Re-orthonormalize: directions with ~0 variance come out with rounding noise.
                V = np.linalg.qr(V)[0]
            basis[m], qdims[m] = V[:, :q], q
            T = np.zeros((n_all, q))
            T[rows] = Zw @ basis[m]
            scores[m] = T
        if callback is not None:
            callback("noise", {"noise_var": {m: float(np.mean(psi[sl[m]])) for m in mods}})
        timings["noise"] = time.perf_counter() - t1
        from ..data import MultimodalData

        X_red = {m: np.where(obs[:, [j]], scores[m], np.nan) for j, m in enumerate(mods)}
        src = MultimodalData(X_red, ids=np.asarray(data.ids), feature_names={m: [f"pc{i}" for i in range(qdims[m])]
                                                                               for m in mods})
        st = L.covariance_stats(src, folds=auto)
        red_stats = L.CovStats(mods, qdims, np.zeros(sum(qdims.values())), st.cov, st.counts, st.n_samples)
        red = ST.Reduced(red_stats, basis, {m: 1.0 for m in mods}, dict(dims))
        folds = None
        if st.folds is not None and all(f is not None for f in st.folds):
            folds = [L.CovStats(mods, qdims, np.zeros(sum(qdims.values())), f.cov, f.counts, f.n_samples)
                     for f in st.folds]
        counts = obs.T.astype(np.int64) @ obs.astype(np.int64)
        return {"wide": True, "red": red, "folds": folds, "dims": dims, "psi": psi, "signal_rank": signal_rank,
                "diag_t": var / scale**2,
                "mean": mean, "scale": scale, "do_std": do_std, "total_var": total_var,
                "n_samples": int(n_all), "counts": counts}

    def _resample_confirm(self, model, data, lat: Lattice, fixed: Mapping[Node, int | None],
                          ranks: dict[Node, int], count: int = RESAMPLE_CONFIRM,
                          second: bool = True) -> tuple[dict[Node, int], dict]:
        """Small samples: keep a searched node only if the search finds it again on most of
        ``RESAMPLE_CONFIRM`` random subsamples of ``RESAMPLE_FRACTION`` of the rows.

        Below ~1,000 samples the fold confirmation leaves weak nodes that come and go between
        subsamples (on 438 sera, four one-factor nodes found in 10-60 % of resamples); a node is
        only worth showing if ``HCL.stability`` will find it. The subsample searches are the plain
        search (no resampling of their own), as ``HCL.stability`` runs it.
        """
        rng = np.random.default_rng(0 if model.random_state is None else model.random_state)
        n = len(data)
        k = max(int(round(RESAMPLE_FRACTION * n)), 2)
        clone = type(model)(**{**model.get_params(), "lattice": lat})
        hits = {node: 0 for node in ranks}
        searched = [nd for nd, r in ranks.items() if r > 0 and fixed.get(nd) is None]
        done = 0

        def batch(count: int) -> None:
            nonlocal done
            for _ in range(count):
                rows = np.sort(rng.choice(n, size=k, replace=False))
                done += 1
                try:
                    r_sub = self._run(clone, data.subset(rows), None, structure_only=True, resample=False)
                except ValueError:  # a subsample without enough rows for a modality pair: no evidence
                    continue
                for node in hits:
                    hits[node] += int(r_sub.get(node, 0) > 0)

        batch(count)
        # A node found in most but not all subsamples is decided on twice as many: 14 of 16 passes
        # a node found in 80 % of subsamples one time in three, 28 of 32 one time in seven.
        if second and any(RESAMPLE_AMBIGUOUS * done <= hits[nd] < done for nd in searched):
            batch(count)
        need = int(np.ceil(RESAMPLE_KEEP * done))
        out = dict(ranks)
        dropped = []
        for node in searched:
            if hits[node] < need:
                out[node] = 0
                dropped.append(node_label(node))
        return out, {"resamples": done, "fraction": RESAMPLE_FRACTION, "need": need,
                     "found": {node_label(nd): h for nd, h in hits.items() if ranks[nd] > 0}, "dropped": dropped}
