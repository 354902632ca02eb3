"""The linear estimator: per-feature noise, the screened and confirmed structure search, and the
masked factorization (docs/structure.md)."""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import numpy as np

from .. import layout as Y
from .. import linear as L
from .. import structure as ST
from ..lattice import Lattice, Node, node_label
from .base import Estimator, check_given_ranks, plain, register, resolve_device

AUTO_STANDARDIZE_RATIO = 20.0
#: Small-sample resample confirmation (see ``LinearEstimator._resample_confirm``): at most this many
#: samples, this many subsamples of this fraction, and a node kept when found in this share of them.
RESAMPLE_CONFIRM_MAX_N = 1000
RESAMPLE_CONFIRM = 8
RESAMPLE_FRACTION = 0.8
RESAMPLE_KEEP = 0.85


def _variance_ratio(var: np.ndarray) -> float:
    """max / min of the positive feature variances of one modality."""
    v = var[var > 1e-12]
    return float(v.max() / v.min()) if v.size else 1.0


def _folds_disagree(confirm: Mapping | None, ranks: Mapping[Node, int]) -> bool:
    """Whether the two fold searches changed a shared rank or found a shared node the whole data
    did not: the structure is uncertain there, and worth resampling (clean structures are left
    alone, at no cost). Private nodes are not confirmed by the folds, so they do not count."""
    if not confirm:
        return False
    found = {node_label(n) for n, r in ranks.items() if r > 0}
    return bool(confirm.get("changed")) or any("+" in lab and lab not in found
                                               for f in confirm.get("folds", []) for lab in f)


class _ProgressBar:
    """A tqdm bar over the fit's stages (covariance pass, ranks per node, refinement)."""

    def __init__(self, n_nodes: int):
        from tqdm.auto import tqdm

        self.n_nodes = max(n_nodes, 1)
        self.bar = tqdm(total=100, desc="HCL fit", unit="%")
        self.done = 0.0
        self.nodes_seen = 0

    def _to(self, value: float, stage: str) -> None:
        value = min(100.0, max(value, self.done))
        if value > self.done:
            self.bar.update(value - self.done)
            self.done = value
        self.bar.set_postfix_str(stage, refresh=False)

    def update(self, stage: str, info: Mapping[str, Any]) -> None:
        if stage == "covariance":
            n = info.get("n_samples") or 0
            self._to(40.0 * (info.get("rows", 0) / n if n else 1.0), "covariance")
        elif stage == "noise":
            self._to(45.0, "noise")
        elif stage == "ranks":
            self.nodes_seen += 1
            self._to(45.0 + 25.0 * self.nodes_seen / self.n_nodes, "ranks")
        elif stage == "refine":
            self._to(70.0 + 29.0 * min(1.0, math.log1p(info.get("iteration", 0)) / math.log1p(200)), "refine")
        elif stage == "done":
            self._to(100.0, "done")

    def close(self) -> None:
        self.bar.close()


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

    def progress_bar(self, model, data) -> _ProgressBar:
        return _ProgressBar(len(model._resolve_lattice(list(data.modalities)).nodes))

    def dump(self, model) -> tuple[dict, dict[str, np.ndarray]]:
        psi = getattr(model, "psi_", None)
        return {}, ({"psi": psi} if psi is not None else {})

    def restore(self, model, meta, arrays) -> None:
        if "psi" in arrays:
            model.psi_ = arrays["psi"]

    def _run(self, model, data, callback: L.Callback | None, structure_only: bool = False, resample: bool = True):
        """The fit (structure search, then refinement); ``structure_only``: the ranks alone;
        ``resample``: small-sample resample confirmation (off in the resamples themselves)."""
        t0 = time.perf_counter()
        dev = resolve_device(model.device)
        mods = list(data.modalities)
        lat = model._resolve_lattice(mods)
        fixed = model._resolve_ranks(lat)
        timings: dict[str, float] = {}

        check_given_ranks(fixed, {m: len(data.feature_names[m]) for m in mods})
        auto = any(v is None for v in fixed.values())
        # Two row folds from the same pass (same flops) for the out-of-sample confirmation.
        if hasattr(data, "covariance_stats"):
            # A source that computes its own statistics (e.g. per partition on a Dask cluster).
            stats = data.covariance_stats(chunk_size=model.chunk_size, device=dev, callback=callback, folds=auto)
        else:
            stats = L.covariance_stats(data, chunk_size=model.chunk_size, device=dev, callback=callback, folds=auto)
        timings["covariance"] = time.perf_counter() - t0
        dims = stats.dims
        sl = stats.offsets
        D = sum(dims.values())
        # The transform x -> (x - mean) / scale; scale is per feature.
        scale = np.ones(D)
        var = np.maximum(np.diag(stats.cov), 0)
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
                tot = float(np.sum(np.diag(stats.cov)[sl[m]] / scale[sl[m]] ** 2))
                scale[sl[m]] *= math.sqrt(max(tot, 1e-300))

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
        noise = {m: float(np.mean(psi[sl[m]])) for m in mods}
        if callback is not None:
            callback("noise", {"noise_var": dict(noise)})
        timings["noise"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        stats_w = ST.whiten_stats(stats_t, psi)
        # Every structure test runs on each modality's leading whitened principal components.
        # Ranks the user fixed must fit in the reduced space whatever the data say.
        need = {m: sum(int(v) for nd, v in fixed.items() if v and m in nd) for m in mods}
        red = ST.reduce_stats(stats_w, need=need)
        search: dict[str, Any] = {"reduced_dims": dict(red.stats.dims)}
        folds_w = None
        if stats.folds is not None and all(f is not None for f in stats.folds):
            folds_w = [ST.whiten_stats(transformed(f), psi) for f in stats.folds]
        lat_s, fixed_s = lat, fixed
        if auto and len(mods) > 1:
            pairs = ST.pair_counts(red.stats, tw_floor=True)
            keep = [n for n, v in fixed.items() if v is not None and v > 0]
            lat_s, bound = ST.screen_lattice(lat, pairs, keep)
            fixed_s = {n: fixed[n] for n in lat_s.nodes}
            search["pairs"] = {f"{a}+{b}": v for (a, b), v in pairs.items()}
            search["candidates"] = {"tested": len(lat_s.nodes), "of": len(lat.nodes)}
        peel = ST.peel_reduced(red, red.stats, lat_s, fixed_s, callback=callback)
        ranks = {n: int(peel.ranks.get(n, 0)) for n in lat.nodes}
        if folds_w is not None:
            ranks, search["confirm"] = ST.confirm_ranks(red, folds_w, lat_s, fixed_s, ranks)
        timings["ranks"] = time.perf_counter() - t2
        if (resample and auto and len(mods) > 1 and hasattr(data, "subset")
                and stats.n_samples <= RESAMPLE_CONFIRM_MAX_N and _folds_disagree(search.get("confirm"), ranks)):
            ranks, search["resample"] = self._resample_confirm(model, data, lat, fixed, ranks)
        if structure_only:
            return ranks
        lifted = ST.lift_loadings(red, {n: B for n, B in peel.loadings.items() if ranks[n] > 0}, dims)

        nodes = [n for n in lat.nodes if ranks[n] > 0]
        mask = Y.support_mask(mods, dims, nodes, ranks)
        init = {(m, node): lifted[node][local][:, : ranks[node]]
                for node in nodes for m, local in Y.block_slices(node, dims).items()}
        W0 = Y.stack_loadings(init, mods, dims, nodes, ranks)
        t3 = time.perf_counter()
        # Refinement in whitened units (noise 1 in every feature): least squares there is the
        # factor-analysis weighting for the Psi found above (Psi itself is not refitted).
        res = L.masked_factorization(stats_w.cov - np.eye(D), W0, mask, device=dev, tol=model.tol,
                                     max_iter=model.max_iter, callback=callback)
        W = res.W * np.sqrt(psi)[:, None]
        # The PCA-like basis inside each node (factor 1 explains the most variance): the model is
        # unchanged, and transform()'s scores become orthonormal coordinates of each node's part.
        W = Y.canonical_rotation(W, [n for n in nodes for _ in range(ranks[n])])
        timings["refine"] = time.perf_counter() - t3
        timings["total"] = time.perf_counter() - t0

        model.modalities_ = mods
        model.lattice_ = lat
        model.dims_ = dims
        model.feature_names_ = {m: list(data.feature_names[m]) for m in mods}
        model.mean_ = stats.mean
        model.scale_ = scale
        model.standardized_ = bool(do_std)
        # How files were cleaned (columns, one-hot levels, imputation means), so that new samples
        # can be loaded the same way: load_modalities(..., preprocessing=model.preprocessing_).
        model.preprocessing_ = (getattr(data, "report", None) or {}).get("preprocessing")
        model.noise_var_ = noise
        model.psi_ = psi  # (D,) noise variance per feature, transformed units
        model.ranks_ = ranks
        model.nodes_ = nodes
        model.W_ = W  # (D, R) in transformed units
        model.objective_ = res.objective
        model.n_iter_ = res.n_iter
        model.converged_ = res.converged
        model.objective_history_ = res.history
        model.total_var_ = {m: float(np.trace(cov[sl[m], sl[m]])) for m in mods}
        model.n_samples_ = stats.n_samples
        model.counts_ = stats.counts
        search["seconds"] = {k: round(v, 4) for k, v in timings.items()}
        search["refine"] = {"iterations": res.n_iter, "converged": res.converged}
        # Plain JSON types: the diagnostics are saved with the model and must read back equal.
        model.rank_diagnostics_ = plain(dict(peel.diagnostics) | {"search": search})
        model.timings_ = timings
        model.device_ = str(dev)
        model.signal_rank_ = signal_rank
        if callback is not None:
            callback("done", {"objective": res.objective, "n_iter": res.n_iter, "converged": res.converged,
                              # Flat numbers: the run log (metrics.jsonl) keeps scalars only.
                              **{f"seconds_{k}": round(v, 4) for k, v in timings.items()},
                              **{f"candidates_{k}": v for k, v in (search.get("candidates") or {}).items()}})
        return None

    def _resample_confirm(self, model, data, lat: Lattice, fixed: Mapping[Node, int | None],
                          ranks: dict[Node, int]) -> tuple[dict[Node, int], dict]:
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
        for _ in range(RESAMPLE_CONFIRM):
            rows = np.sort(rng.choice(n, size=k, replace=False))
            try:
                r_sub = self._run(clone, data.subset(rows), None, structure_only=True, resample=False)
            except ValueError:  # a subsample without enough rows for a modality pair: no evidence
                continue
            for node in hits:
                hits[node] += int(r_sub.get(node, 0) > 0)
        need = int(np.ceil(RESAMPLE_KEEP * RESAMPLE_CONFIRM))
        out = dict(ranks)
        dropped = []
        for node, r in ranks.items():
            if r > 0 and fixed.get(node) is None and hits[node] < need:
                out[node] = 0
                dropped.append(node_label(node))
        return out, {"resamples": RESAMPLE_CONFIRM, "fraction": RESAMPLE_FRACTION, "need": need,
                     "found": {node_label(nd): h for nd, h in hits.items() if ranks[nd] > 0}, "dropped": dropped}
