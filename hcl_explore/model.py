"""The user-facing HCL estimator (scikit-learn style: parameters in __init__, learned attributes end
in ``_``)."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from . import contrastive as C
from .harmonics import prune_harmonics
from . import linear as L
from . import structure as ST
from .data import MultimodalData
from .lattice import Lattice, Node, node_label, node_level, parse_node_label

_FORMAT_VERSION = 1
#: Files of the contrastive estimator carry this version, so that a version-1 reader refuses them
#: with "saved by a newer hcl_explore" instead of failing on unknown parameters.
_FORMAT_VERSION_CONTRASTIVE = 2
ESTIMATORS = ("linear", "contrastive")
#: Parameters of the contrastive estimator and their defaults (``get_params`` lists them only
#: when ``estimator="contrastive"``, so linear models and their files are unchanged).
CONTRASTIVE_DEFAULTS: dict[str, Any] = {
    "encoder": "mlp", "hidden": (128,), "init": "linear", "loss": "infonce", "temperature": 0.1,
    "contrast": "nested", "decorrelation": "quadratic", "rank_search": "harmonic",
    "reconstruction_weight": 1.0, "decorrelation_weight": 1.0, "supervised_weight": 1.0,
    "max_epochs": 100, "batch_size": 256, "lr": 1e-3, "weight_decay": 0.0, "val_fraction": 0.1,
    "patience": 10, "checkpoint_dir": None, "resume": False, "amp": True, "max_time": None,
}
#: The contrastive options that take one of a few values.
CONTRASTIVE_CHOICES: dict[str, tuple[str, ...]] = {
    "encoder": C.ENCODERS, "loss": C.LOSSES, "init": ("linear", "random"), "contrast": ("nested", "node"),
    "decorrelation": ("quadratic", "linear"), "rank_search": ("harmonic", "linear"),
}


#: Small-sample resample confirmation (see ``HCL._resample_confirm``): at most this many samples,
#: this many subsamples of this fraction, and a node kept when found in this share of them.
RESAMPLE_CONFIRM_MAX_N = 1000
RESAMPLE_CONFIRM = 8
RESAMPLE_FRACTION = 0.8
RESAMPLE_KEEP = 0.85


def _folds_disagree(confirm: Mapping | None, ranks: Mapping[Node, int]) -> bool:
    """Whether the two fold searches changed a shared rank or found a shared node the whole data
    did not: the structure is uncertain there, and worth resampling (clean structures are left
    alone, at no cost). Private nodes are not confirmed by the folds, so they do not count."""
    if not confirm:
        return False
    found = {node_label(n) for n, r in ranks.items() if r > 0}
    return bool(confirm.get("changed")) or any("+" in lab and lab not in found
                                               for f in confirm.get("folds", []) for lab in f)


def _as_source(data):
    """Dask collections (one dask DataFrame, or a mapping of modality -> dask DataFrame) become a
    :class:`hcl_explore.dask_source.DaskSource` (Dask imported only then); anything else as is."""
    first = next(iter(data.values()), None) if isinstance(data, Mapping) else data
    if type(first).__module__.split(".")[0] == "dask":
        from .dask_source import from_dask

        return from_dask(data)
    return data


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``/``"cuda"``/``"cuda:1"`` explicit."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available on this machine; use 'auto' or 'cpu'.")
    return dev


AUTO_STANDARDIZE_RATIO = 20.0


def _start_from_linear(module: C.HCLModule, lin: "HCL", mean: np.ndarray, scale: np.ndarray) -> None:
    """Start every encoder at the linear estimator's per-modality projection.

    For modality m with fitted loadings B_m ``(d_m, R_m)`` (its nodes' columns of ``lin.W_``, in
    the linear estimator's units), the least-squares scores of x_m alone are ``pinv(B_m) x_lin``;
    rewritten for the contrastive estimator's standardized input ``x_c`` (``mean``, ``scale``)
    this is ``pinv(B_m) diag(scale / lin.scale_) x_c`` plus a constant (the batch standardization
    of the blocks removes constants). Training then moves away from the linear solution only
    where the loss gains.
    """
    sl = L.block_slices(lin.modalities_, lin.dims_)
    cols = L.node_columns(lin.nodes_, lin.ranks_)
    for j, m in enumerate(module.spec.modalities):
        key = f"m{j}"
        if key not in module.encoders:
            continue
        blocks = module.blocks[m]
        if any(node not in cols or cols[node].stop - cols[node].start != e - s for node, s, e in blocks):
            return  # different structure (cannot happen when the ranks came from lin); keep random
        c = np.concatenate([np.arange(cols[node].start, cols[node].stop) for node, _, _ in blocks])
        B = lin.W_[sl[m], :][:, c]
        P = np.linalg.pinv(B) * (scale[sl[m]] / lin.scale_[sl[m]])[None, :]
        # Unit-variance outputs at the start, as the batch-standardized blocks will be.
        P /= np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
        module.encoders[key].set_linear(torch.as_tensor(P, dtype=torch.float32))


def _check_given_ranks(fixed: Mapping[Node, int | None], dims: Mapping[str, int]) -> None:
    """A given rank cannot exceed the features of any modality of its node, nor can the factors
    touching a modality exceed its features (the loadings would be rank-deficient)."""
    for node, r in fixed.items():
        if r is None:
            continue
        m = min(node, key=lambda k: dims[k])
        if r > dims[m]:
            raise ValueError(f"Rank {r} of node {node_label(node)} exceeds the {dims[m]} feature(s) of modality "
                             f"{m!r}; give at most {dims[m]} (or 'auto').")
    for m, d in dims.items():
        total = sum(r for node, r in fixed.items() if r is not None and m in node)
        if total > d:
            raise ValueError(f"The given ranks put {total} factors on modality {m!r}, which has {d} feature(s).")


def _plain(o: Any) -> Any:
    """``o`` as plain JSON types (numpy scalars and arrays to numbers and lists, tuple keys to
    node labels), so that a JSON round trip returns an equal object."""
    if isinstance(o, Mapping):
        return {(node_label(k) if isinstance(k, tuple) else str(k)): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, np.ndarray):
        return _plain(o.tolist())
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _variance_ratio(var: np.ndarray) -> float:
    """max / min of the positive feature variances of one modality."""
    v = var[var > 1e-12]
    return float(v.max() / v.min()) if v.size else 1.0


class _ProgressBar:
    """A tqdm bar over the fit's stages (covariance pass, ranks per node, refinement)."""

    _WEIGHT = {"covariance": 40, "noise": 5, "ranks": 25, "refine": 29, "done": 1}

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


class HCL:
    """Hierarchical contrastive learning over a candidate lattice of modality subsets.

    Parameters
    ----------
    lattice : Lattice or str or None
        Candidate lattice, or a preset name (``"full"``, ``"shared_private"``, ``"global_only"``,
        ``"pairwise"``). ``None`` = full lattice over the data's modalities.
    ranks : "auto", int, or mapping node -> int | "auto"
        Factors per node. An int applies to every node. In a mapping, nodes not named are
        ``"auto"``; 0 switches a node off.
    estimator : "linear" or "contrastive"
        ``"linear"``: the linear estimator (docs/structure.md). ``"contrastive"``: per-(modality, node)
        neural encoders trained with a structure-aware contrastive loss
        (:mod:`hcl_explore.contrastive` documents the losses exactly); for nonlinear modalities.
    device : "auto", "cpu" or "cuda"
    standardize : "auto" or bool
        Scale every feature to unit variance before fitting (loadings are reported in original
        units either way). ``"auto"`` standardizes when the features of some modality have
        variances more than ``AUTO_STANDARDIZE_RATIO`` apart (mixed units, e.g. sodium in mmol/L
        next to creatinine in mg/dL). The noise is one variance per feature either way.
    balance_modalities : bool
        Weight modalities so that each has equal total variance.
    chunk_size : int
        Rows per streamed chunk for the covariance pass.
    tol, max_iter : float, int
        Stopping rule of the masked factorization (relative objective change and gradient).
    random_state : int or None
        The linear estimator is deterministic; the contrastive one seeds its initialization, the
        validation split and the batch order with it.

    Contrastive estimator only (keyword arguments; ignored by the linear one)
    ----------------------------------------------------------------------
    encoder : "mlp" (default) or "linear"
    hidden : tuple of int
        Hidden widths of every (modality, node) encoder (``(128,)``); decoders use them reversed.
    init : "linear" (default) or "random"
        ``"linear"``: start every encoder at the linear estimator's projection (an MLP encoder
        has a linear skip path that takes it; the MLP starts at zero); ``"random"``: torch's
        default initialization.
    loss : "infonce" (default) or "paper"
    contrast : "nested" (default) or "node"
        ``"nested"``: one contrastive term per modality pair over the blocks of every shared
        node holding the pair; ``"node"``: one term per node (see :mod:`hcl_explore.contrastive`).
    rank_search : "harmonic" (default) or "linear"
        How ``ranks="auto"`` is resolved (see below).
    decorrelation : "quadratic" (default) or "linear"
        Penalize correlation between a modality's node blocks, and with ``"quadratic"`` also
        between each block and squares / products of the other blocks.
    temperature : float
        InfoNCE temperature (0.1).
    reconstruction_weight, decorrelation_weight, supervised_weight : float
        Weights of the loss terms (1.0 each); the contrastive term has weight 1.
    max_epochs, batch_size, lr, weight_decay : training (Adam) settings (100, 256, 1e-3, 0).
    val_fraction, patience : share of samples held out for early stopping (0.1) and epochs
        without improvement before stopping (10). The best epoch's weights are kept.
    checkpoint_dir, resume : write ``checkpoint.pt`` there after every epoch; ``resume=True``
        continues from it (same data, lattice, ranks and settings; ``max_epochs`` may grow).
    amp : bool
        bfloat16 autocast on CUDA (never on CPU).

    With ``estimator="contrastive"``: ``ranks`` given as ints fixes the nodes and block sizes;
    ``"auto"`` (or a mapping with ``"auto"`` entries) first fits the linear estimator. Its ranks
    over-count on nonlinear data: a nonlinear map of a node's factors also creates weaker linear
    directions (their squares, cubes and products), shared by the same modalities and significant
    at large n (3 x 30 features, n = 20,000, 2 factors per node: 5-9 found per node). With
    ``rank_search="harmonic"`` (default) those are dropped (:mod:`hcl_explore.harmonics`: a
    direction counts only if polynomials of the stronger ones do not explain it; exact on 26 of
    26 simulated data sets with 3-6 modalities, linear data left as it is); ``"linear"`` keeps
    the linear ranks. ``rank_diagnostics_["harmonics"]`` records every step. Inputs are always
    centred on the training rows and, unless ``standardize=False``, scaled to unit variance;
    ``balance_modalities``, ``tol`` and ``max_iter`` only matter for that linear rank search. ``loadings_``/``W_`` are then a linear
    approximation (least squares of each modality's standardized features on its nodes' scores,
    training rows), ``noise_var_`` is the decoder's mean squared reconstruction error per
    standardized feature (validation rows), and ``summary()``'s ``var_``/``signal_`` columns are
    computed from that approximation. ``n_iter_`` is the number of epochs, ``objective_`` the best
    monitored (validation) loss, ``objective_history_`` the training loss per epoch and
    ``val_history_`` the validation loss per epoch. ``score_error_cov`` (and hence
    ``evaluate_prediction(bias_correction=True)``) is not available.

    Attributes
    ----------
    ranks_ : dict node -> int
    loadings_ : dict (modality, node) -> ndarray (d_m, r_S), original feature units
    noise_var_ : dict modality -> float
        Mean noise variance of the modality's features (fitted, transformed units).
    psi_ : ndarray (D,)
        Noise variance of every feature (linear estimator; ``feature_noise_`` splits it per modality).
    rank_diagnostics_ : dict
        Every test of the structure search (``["search"]``: pair counts, candidates, folds, seconds).
    stability_ : DataFrame, after :meth:`stability`
    n_iter_, objective_, converged_ : refinement diagnostics
    """

    def __init__(
        self,
        lattice: Lattice | str | None = None,
        ranks: Any = "auto",
        estimator: str = "linear",
        device: str = "auto",
        standardize: bool | str = "auto",
        balance_modalities: bool = False,
        chunk_size: int = 16384,
        tol: float = 1e-10,
        max_iter: int = 5000,
        random_state: int | None = 0,
        **contrastive: Any,
    ):
        self.lattice = lattice
        self.ranks = ranks
        self.estimator = estimator
        self.device = device
        self.standardize = standardize
        self.balance_modalities = balance_modalities
        self.chunk_size = chunk_size
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        unknown = sorted(set(contrastive) - set(CONTRASTIVE_DEFAULTS))
        if unknown:
            raise TypeError(f"HCL got unexpected keyword argument(s) {unknown}; contrastive options are "
                            f"{sorted(CONTRASTIVE_DEFAULTS)}.")
        for k, v in CONTRASTIVE_DEFAULTS.items():
            setattr(self, k, contrastive.get(k, v))

    # ------------------------------------------------------------------ helpers
    def _resolve_lattice(self, modalities: list[str]) -> Lattice:
        lat = self.lattice
        if lat is None:
            return Lattice.full(modalities)
        if isinstance(lat, str):
            return Lattice.preset(lat, modalities)
        if not isinstance(lat, Lattice):
            raise ValueError(f"lattice must be a Lattice, a preset name or None, got {type(lat).__name__}.")
        if list(lat.modalities) != list(modalities):
            if set(lat.modalities) == set(modalities):
                return Lattice(modalities, lat.nodes)
            raise ValueError(
                f"Lattice modalities {list(lat.modalities)} do not match the data's {list(modalities)}."
            )
        return lat

    def _resolve_ranks(self, lat: Lattice) -> dict[Node, int | None]:
        r = self.ranks
        out: dict[Node, int | None] = {}
        if isinstance(r, str):
            if r != "auto":
                raise ValueError(f"ranks must be 'auto', an int or a dict, got {r!r}.")
            return {n: None for n in lat.nodes}
        if isinstance(r, (int, np.integer)) and not isinstance(r, bool):
            if r < 0:
                raise ValueError(f"ranks must be >= 0, got {r}.")
            return {n: int(r) for n in lat.nodes}
        if isinstance(r, Mapping):
            out = {n: None for n in lat.nodes}
            for raw, v in r.items():
                node = lat.node(parse_node_label(raw) if isinstance(raw, str) and "+" in raw else raw)
                if node not in out:
                    raise ValueError(f"ranks names node {node}, which is not in the candidate lattice.")
                if v == "auto" or v is None:
                    out[node] = None
                else:
                    try:
                        ok = isinstance(v, (int, np.integer, float, np.floating)) and not isinstance(v, bool) \
                            and float(v) == int(v) and int(v) >= 0
                    except (TypeError, ValueError, OverflowError):
                        ok = False
                    if not ok:
                        raise ValueError(f"Rank of node {node_label(node)} must be 'auto' or a non-negative integer, "
                                         f"got {v!r}.")
                    out[node] = int(v)
            return out
        raise ValueError(f"ranks must be 'auto', an int or a dict, got {type(r).__name__}.")

    # ------------------------------------------------------------------ fit
    def fit(self, data, callback: L.Callback | None = None, progress: bool = False, y=None) -> "HCL":
        """Fit on a :class:`MultimodalData` (or any source with ``iter_chunks``).

        ``callback(stage, info)`` is called with stages ``covariance``, ``noise``, ``ranks``,
        ``refine`` and ``done`` (contrastive estimator: ``epoch`` after every epoch with ``epoch``,
        ``max_epochs``, ``loss`` and its terms, ``val_loss``, ``best_loss``, ``seconds``, preceded by
        the linear stages when ranks are ``"auto"``); ``progress=True`` shows a progress bar (tqdm: a
        widget in Jupyter, text in a terminal). An exception or a KeyboardInterrupt (Ctrl-C, a
        kernel interrupt) during the fit - also one raised by the callback, which is how a run is
        cancelled - leaves the estimator unfitted, never half-fitted.

        ``y`` (contrastive estimator only): an outcome per sample (NaN = unlabelled) for the
        supervised head; 0/1 values are treated as binary, others as continuous.
        """
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)  # a new fit starts unfitted: an interrupt cannot leave a stale mix
        data = _as_source(data)
        if y is not None and self.estimator != "contrastive":
            raise ValueError("y is only used by the contrastive estimator's supervised head; the linear "
                             "estimator is unsupervised (use evaluate_prediction for outcomes).")
        bar = None
        if progress and self.estimator == "contrastive":
            bar = C.EpochBar(int(self.max_epochs))
        elif progress:
            bar = _ProgressBar(len(self._resolve_lattice(list(data.modalities)).nodes))
            inner = callback

            def callback(stage, info):  # noqa: F811  chain the bar before the user's callback
                bar.update(stage, info)
                if inner is not None:
                    inner(stage, info)
        try:
            if self.estimator == "contrastive":
                return self._fit_contrastive(data, callback, y)
            return self._fit(data, callback)
        except BaseException:
            for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
                delattr(self, attr)
            raise
        finally:
            if bar is not None:
                bar.close()

    def _fit(self, data, callback: L.Callback | None, structure_only: bool = False, resample: bool = True):
        if self.estimator != "linear":
            raise ValueError(f"Unknown estimator {self.estimator!r}; available: {', '.join(map(repr, ESTIMATORS))}.")
        t0 = time.perf_counter()
        dev = resolve_device(self.device)
        mods = list(data.modalities)
        lat = self._resolve_lattice(mods)
        fixed = self._resolve_ranks(lat)
        timings: dict[str, float] = {}

        _check_given_ranks(fixed, {m: len(data.feature_names[m]) for m in mods})
        auto = any(v is None for v in fixed.values())
        # Two row folds from the same pass (same flops) for the out-of-sample confirmation.
        if hasattr(data, "covariance_stats"):
            # A source that computes its own statistics (e.g. per partition on a Dask cluster).
            stats = data.covariance_stats(chunk_size=self.chunk_size, device=dev, callback=callback, folds=auto)
        else:
            stats = L.covariance_stats(data, chunk_size=self.chunk_size, device=dev, callback=callback, folds=auto)
        timings["covariance"] = time.perf_counter() - t0
        dims = stats.dims
        sl = stats.offsets
        D = sum(dims.values())
        # The transform x -> (x - mean) / scale; scale is per feature.
        scale = np.ones(D)
        var = np.maximum(np.diag(stats.cov), 0)
        if self.standardize == "auto":
            do_std = any(_variance_ratio(var[sl[m]]) > AUTO_STANDARDIZE_RATIO for m in mods)
        elif isinstance(self.standardize, (bool, np.bool_)):
            do_std = bool(self.standardize)
        else:
            raise ValueError(f"standardize must be 'auto', True or False, got {self.standardize!r}.")
        if do_std:
            sd = np.sqrt(var)
            scale = np.where(sd > 1e-12, sd, 1.0)
        if self.balance_modalities:
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
            ranks, search["resample"] = self._resample_confirm(data, lat, fixed, ranks)
        if structure_only:
            return ranks
        lifted = ST.lift_loadings(red, {n: B for n, B in peel.loadings.items() if ranks[n] > 0}, dims)

        nodes = [n for n in lat.nodes if ranks[n] > 0]
        mask = L.support_mask(mods, dims, nodes, ranks)
        init = {(m, node): lifted[node][local][:, : ranks[node]]
                for node in nodes for m, local in L.block_slices(node, dims).items()}
        W0 = L.stack_loadings(init, mods, dims, nodes, ranks)
        t3 = time.perf_counter()
        # Refinement in whitened units (noise 1 in every feature): least squares there is the
        # factor-analysis weighting for the Psi found above (Psi itself is not refitted).
        res = L.masked_factorization(stats_w.cov - np.eye(D), W0, mask, device=dev, tol=self.tol,
                                     max_iter=self.max_iter, callback=callback)
        W = res.W * np.sqrt(psi)[:, None]
        # The PCA-like basis inside each node (factor 1 explains the most variance): the model is
        # unchanged, and transform()'s scores become orthonormal coordinates of each node's part.
        W = L.canonical_rotation(W, [n for n in nodes for _ in range(ranks[n])])
        timings["refine"] = time.perf_counter() - t3
        timings["total"] = time.perf_counter() - t0

        self.modalities_ = mods
        self.lattice_ = lat
        self.dims_ = dims
        self.feature_names_ = {m: list(data.feature_names[m]) for m in mods}
        self.mean_ = stats.mean
        self.scale_ = scale
        self.standardized_ = bool(do_std)
        # How files were cleaned (columns, one-hot levels, imputation means), so that new samples
        # can be loaded the same way: load_modalities(..., preprocessing=model.preprocessing_).
        self.preprocessing_ = (getattr(data, "report", None) or {}).get("preprocessing")
        self.noise_var_ = noise
        self.psi_ = psi  # (D,) noise variance per feature, transformed units
        self.ranks_ = ranks
        self.nodes_ = nodes
        self.W_ = W  # (D, R) in transformed units
        self.objective_ = res.objective
        self.n_iter_ = res.n_iter
        self.converged_ = res.converged
        self.objective_history_ = res.history
        self.total_var_ = {m: float(np.trace(cov[sl[m], sl[m]])) for m in mods}
        self.n_samples_ = stats.n_samples
        self.counts_ = stats.counts
        search["seconds"] = {k: round(v, 4) for k, v in timings.items()}
        search["refine"] = {"iterations": res.n_iter, "converged": res.converged}
        # Plain JSON types: the diagnostics are saved with the model and must read back equal.
        self.rank_diagnostics_ = _plain(dict(peel.diagnostics) | {"search": search})
        self.timings_ = timings
        self.device_ = str(dev)
        self.signal_rank_ = signal_rank
        if callback is not None:
            callback("done", {"objective": res.objective, "n_iter": res.n_iter, "converged": res.converged,
                              # Flat numbers: the run log (metrics.jsonl) keeps scalars only.
                              **{f"seconds_{k}": round(v, 4) for k, v in timings.items()},
                              **{f"candidates_{k}": v for k, v in (search.get("candidates") or {}).items()}})
        return self

    # ------------------------------------------------------------------ contrastive estimator
    def _contrastive_config(self) -> C.TrainConfig:
        # Before any conversion (int(h) would turn 2.5 into 2) and before the linear pre-fit.
        C.check_options(hidden=self.hidden, batch_size=self.batch_size, lr=self.lr, max_epochs=self.max_epochs,
                        temperature=self.temperature, val_fraction=self.val_fraction,
                        weight_decay=self.weight_decay, patience=self.patience, max_time=self.max_time)
        for name, allowed in CONTRASTIVE_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        if not float(self.temperature) > 0:
            raise ValueError("temperature must be > 0.")
        if int(self.batch_size) < 2 or int(self.max_epochs) < 1 or int(self.patience) < 1:
            raise ValueError("batch_size must be >= 2, max_epochs and patience >= 1.")
        if not 0 <= float(self.val_fraction) < 1:
            raise ValueError("val_fraction must be in [0, 1).")
        if self.resume and not self.checkpoint_dir:
            raise ValueError("resume=True needs a checkpoint_dir.")
        return C.TrainConfig(loss=self.loss, temperature=float(self.temperature),
                             reconstruction_weight=float(self.reconstruction_weight),
                             decorrelation_weight=float(self.decorrelation_weight),
                             decorrelation=str(self.decorrelation), contrast=str(self.contrast),
                             supervised_weight=float(self.supervised_weight), max_epochs=int(self.max_epochs),
                             batch_size=int(self.batch_size), lr=float(self.lr), weight_decay=float(self.weight_decay),
                             patience=int(self.patience), amp=bool(self.amp),
                             max_time=None if self.max_time is None else float(self.max_time),
                             seed=int(self.random_state) if self.random_state is not None else 0)

    def _standardized(self, X: Mapping[str, np.ndarray], observed: np.ndarray) -> dict[str, np.ndarray]:
        """float32 copies ``(x - mean_) / scale_`` with missing rows set to 0."""
        sl = L.block_slices(self.modalities_, self.dims_)
        out = {}
        for j, m in enumerate(self.modalities_):
            x = (np.asarray(X[m], dtype=np.float32) - self.mean_[sl[m]].astype(np.float32)) / \
                self.scale_[sl[m]].astype(np.float32)
            x[~observed[:, j]] = 0.0
            out[m] = x
        return out

    def _fit_contrastive(self, data, callback: L.Callback | None, y) -> "HCL":
        t0 = time.perf_counter()
        cfg = self._contrastive_config()
        dev = resolve_device(self.device)
        mods = list(data.modalities)
        lat = self._resolve_lattice(mods)
        fixed = self._resolve_ranks(lat)
        timings: dict[str, float] = {}
        diagnostics: dict = {}
        if hasattr(data, "X") and hasattr(data, "observed"):
            X = {m: data.X[m] for m in mods}
            obs = np.asarray(data.observed, dtype=bool)
        else:  # a streamed source: read it once into CPU memory (float32)
            chunks = list(data.iter_chunks(self.chunk_size))
            X = {m: np.concatenate([np.asarray(c.X[m], dtype=np.float32) for c in chunks]) for m in mods}
            obs = np.concatenate([c.observed for c in chunks]).astype(bool)
        n = obs.shape[0]
        dims = {m: int(X[m].shape[1]) for m in mods}
        for node in (nd for nd in lat.nodes if fixed[nd] != 0):
            for i, m in enumerate(node):
                for m2 in node[i + 1:]:
                    if not (obs[:, mods.index(m)] & obs[:, mods.index(m2)]).any():
                        raise ValueError(f"Node {node_label(node)}: no sample has both {m!r} and {m2!r}; "
                                         "nothing can align them. Drop the node or give it rank 0.")
        lin = None
        t_lin = time.perf_counter()
        if any(r is None for r in fixed.values()) or self.init == "linear":
            # The linear estimator's structure (ranks "auto") and its per-modality projections
            # (init "linear") are the starting point; it costs one pass over the data.
            def linear(rk):
                return HCL(lattice=lat, ranks=rk, estimator="linear", device=self.device, standardize=self.standardize,
                           balance_modalities=self.balance_modalities, chunk_size=self.chunk_size, tol=self.tol,
                           max_iter=self.max_iter, random_state=self.random_state).fit(data, callback=callback)

            lin = linear(self.ranks)
            ranks = dict(lin.ranks_)
            diagnostics = dict(lin.rank_diagnostics_)
            if self.rank_search == "harmonic" and any(r is None for r in fixed.values()):
                # The linear search also counts the harmonics of nonlinear factors: drop them.
                pruned, diagnostics["harmonics"] = prune_harmonics(lin, X, obs, seed=self.random_state)
                pruned = {nd: (pruned[nd] if fixed[nd] is None else ranks[nd]) for nd in lat.nodes}
                if pruned != ranks:
                    ranks = pruned
                    lin = linear(ranks)
            timings["linear"] = time.perf_counter() - t_lin
        else:
            ranks = {n: int(r) for n, r in fixed.items()}
        nodes = [n for n in lat.nodes if ranks[n] > 0]
        if not nodes:
            raise ValueError("No lattice node has a positive rank; the contrastive estimator has nothing to learn.")

        yv, task = None, None
        if y is not None:
            yv = np.asarray(getattr(y, "values", y), dtype=np.float64).reshape(-1)
            if yv.shape[0] != n:
                raise ValueError(f"y has {yv.shape[0]} values for {n} samples.")
            lab = np.isfinite(yv)
            if lab.sum() < 2:
                raise ValueError("y needs at least two labelled (finite) values.")
            task = "binary" if set(np.unique(yv[lab])) <= {0.0, 1.0} else "continuous"
            if task == "continuous":
                yv = (yv - yv[lab].mean()) / (yv[lab].std() or 1.0)
            yv = np.where(lab, yv, np.nan).astype(np.float32)

        t1 = time.perf_counter()
        rng = np.random.default_rng(self.random_state)
        n_val = int(round(float(self.val_fraction) * n)) if n >= 20 else 0
        perm = rng.permutation(n)
        val_rows, train_rows = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        # Standardization from the training rows that observe each modality.
        mean = np.zeros(sum(dims.values()))
        scale = np.ones_like(mean)
        sl = L.block_slices(mods, dims)
        for j, m in enumerate(mods):
            rows = train_rows[obs[train_rows, j]]
            if rows.size < 2:
                raise ValueError(f"Modality {m!r} is observed in fewer than 2 training samples.")
            xm = np.asarray(X[m][rows], dtype=np.float64)
            mean[sl[m]] = xm.mean(0)
            if self.standardize is not False:
                sd = xm.std(0)
                scale[sl[m]] = np.where(sd > 1e-12, sd, 1.0)
        self.modalities_, self.dims_, self.mean_, self.scale_ = mods, dims, mean, scale
        arrays = C.Arrays(self._standardized(X, obs), obs, yv)
        timings["standardize"] = time.perf_counter() - t1

        spec = C.ModuleSpec(mods, dims, nodes, {nd: ranks[nd] for nd in nodes}, self.encoder,
                            tuple(int(h) for h in self.hidden), n_outputs=1 if yv is not None else 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            module = C.HCLModule(spec)
        if lin is not None and self.init == "linear":
            _start_from_linear(module, lin, mean, scale)
        signature = C.signature_of(spec, cfg, n, {"val_rows": int(np.sum(val_rows) % 1000003), "task": task,
                                                   "standardize": self.standardize is not False})
        t2 = time.perf_counter()
        res = C.train(module, arrays, train_rows, val_rows, cfg, dev, task=task, callback=callback,
                      checkpoint_dir=os.fspath(self.checkpoint_dir) if self.checkpoint_dir else None,
                      resume=bool(self.resume), signature=signature)
        timings["train"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        enc = C.raw_encodings(module, arrays, train_rows, dev, batch_size=self.chunk_size)
        C.set_output_stats(module, enc, obs[train_rows])
        scores = C.node_scores(module, enc, obs[train_rows])
        # Linear approximation of the loadings: least squares of the standardized features on the
        # scores of the nodes holding each modality (training rows that observe it).
        cols = L.node_columns(nodes, ranks)
        W = np.zeros((sum(dims.values()), sum(ranks[nd] for nd in nodes)))
        total_var, noise = {}, {}
        check_rows = val_rows if val_rows.size >= 2 else train_rows
        mse = C.reconstruction_mse(module, arrays, check_rows, dev, batch_size=self.chunk_size)
        for j, m in enumerate(mods):
            o = obs[train_rows, j]
            xm = arrays.X[m][train_rows][o].astype(np.float64)
            total_var[m] = float(xm.var(0).sum())
            noise[m] = float(mse.get(m, np.nan))
            mine = [nd for nd in nodes if m in nd]
            if not mine:
                continue
            S = np.concatenate([scores[nd][o] for nd in mine], axis=1)
            B = np.linalg.lstsq(S, xm, rcond=None)[0]
            c = np.concatenate([np.arange(cols[nd].start, cols[nd].stop) for nd in mine])
            W[sl[m].start:sl[m].stop, c] = B.T
        module.to("cpu")
        timings["summary"] = time.perf_counter() - t3
        timings["total"] = time.perf_counter() - t0

        self.lattice_ = lat
        self.feature_names_ = {m: list(data.feature_names[m]) for m in mods}
        self.standardized_ = self.standardize is not False
        self.preprocessing_ = (getattr(data, "report", None) or {}).get("preprocessing")
        self.noise_var_ = noise
        self.ranks_ = {nd: int(ranks[nd]) for nd in lat.nodes}
        self.nodes_ = nodes
        self.module_ = module
        self.task_ = task
        self.objective_ = float(res.best_loss)
        self.n_iter_ = int(res.n_epochs)
        self.n_epochs_ = int(res.n_epochs)
        self.best_epoch_ = int(res.best_epoch)
        self.converged_ = bool(res.converged)
        self.objective_history_ = list(res.history)
        self.val_history_ = list(res.val_history)
        self.total_var_ = total_var
        self.n_samples_ = int(n)
        self.counts_ = obs.T.astype(np.int64) @ obs.astype(np.int64)
        self.rank_diagnostics_ = diagnostics
        self.timings_ = timings
        self.device_ = str(dev)
        self.signal_rank_ = {}
        self.W_ = W
        if callback is not None:
            callback("done", {"objective": self.objective_, "n_iter": self.n_iter_, "converged": self.converged_})
        return self

    def _transform_contrastive(self, data: MultimodalData, fill: float) -> dict[Node, np.ndarray]:
        obs = np.asarray(data.observed, dtype=bool)
        arrays = C.Arrays(self._standardized(data.X, obs), obs)
        dev = torch.device(self.device_)
        if dev.type == "cuda" and not torch.cuda.is_available():
            dev = torch.device("cpu")
        module = self.module_.to(dev)
        try:
            enc = C.raw_encodings(module, arrays, np.arange(obs.shape[0]), dev, batch_size=self.chunk_size)
        finally:
            self.module_.to("cpu")
        return C.node_scores(self.module_, enc, obs, fill=fill)

    # ------------------------------------------------------------------ learned views
    def _check_data(self, data) -> None:
        """``data`` must be a MultimodalData with the fitted modalities and feature counts."""
        if not hasattr(data, "modalities") or not hasattr(data, "X"):
            raise ValueError(f"Expected a MultimodalData (hx.load_modalities / MultimodalData.from_arrays), got "
                             f"{type(data).__name__}.")
        if list(data.modalities) != self.modalities_:
            raise ValueError(f"Data modalities {list(data.modalities)} differ from the model's {self.modalities_}.")
        for m in self.modalities_:
            if data.X[m].shape[1] != self.dims_[m]:
                raise ValueError(f"Modality {m!r} has {data.X[m].shape[1]} features; the model was fitted on {self.dims_[m]}.")

    def _check_fitted(self) -> None:
        if not hasattr(self, "W_"):
            raise RuntimeError("This HCL model is not fitted yet; call fit(data) first.")

    @property
    def loadings_(self) -> dict[tuple[str, Node], np.ndarray]:
        """Per-(modality, node) loadings (d_m, r_S) in original feature units, present nodes only."""
        self._check_fitted()
        sl = L.block_slices(self.modalities_, self.dims_)
        blocks = L.split_loadings(self.W_, self.modalities_, self.dims_, self.nodes_, self.ranks_)
        return {(m, node): B * self.scale_[sl[m], None] for (m, node), B in blocks.items()}

    @property
    def feature_noise_(self) -> dict[str, np.ndarray]:
        """Noise variance of every feature, per modality ``{m: (d_m,)}`` (transformed units)."""
        self._check_fitted()
        psi = getattr(self, "psi_", None)
        sl = L.block_slices(self.modalities_, self.dims_)
        if psi is None:  # contrastive estimator, or a file saved before per-feature noise
            return {m: np.full(self.dims_[m], float(self.noise_var_[m])) for m in self.modalities_}
        return {m: psi[sl[m]] for m in self.modalities_}

    def column_nodes(self) -> list[Node]:
        """The node of each column of ``W_`` / of the stacked scores."""
        self._check_fitted()
        return [n for n in self.nodes_ for _ in range(self.ranks_[n])]

    def transform(self, data: MultimodalData, fill: float = 0.0, scale: str = "data") -> dict[Node, np.ndarray]:
        """Factor scores per present node: ``{node: (n, r_S)}``.

        Linear estimator: the GLS (Bartlett) scores ``z_hat`` of each node, unbiased for ``z``.
        ``scale="data"`` (default) multiplies factor j by the norm of its loading column, so a
        node's scores are the coordinates of its fitted part ``W_S z_S`` in the orthonormal basis
        of its loadings (PCA's convention: a score's variance is the variance that factor
        explains, in the fitted units), which is what a downstream classifier or plot wants.
        ``scale="unit"``: the unit-prior factors ``z_hat`` themselves. Samples missing modalities
        use those they have; a node none of whose modalities a sample has gets ``fill`` (default 0,
        the prior mean). The contrastive estimator returns its encoders' outputs (``scale`` must
        stay ``"data"``).
        """
        self._check_fitted()
        self._check_data(data)
        col_scale = self._score_scale(scale)
        if self.estimator == "contrastive":
            return self._transform_contrastive(data, fill)
        Xt = self._transformed(data)
        Z = L.gls_scores(Xt, data.observed, self.modalities_, self.W_, self.column_nodes(), self.feature_noise_, self.dims_, fill=fill)
        Z = Z * col_scale
        return {node: Z[:, cols] for node, cols in L.node_columns(self.nodes_, self.ranks_).items()}

    def _score_scale(self, scale: str) -> np.ndarray:
        """(R,) factor by which ``transform(scale=...)`` multiplies the GLS scores."""
        if scale not in ("data", "unit"):
            raise ValueError(f"scale must be 'data' or 'unit', got {scale!r}.")
        if self.estimator == "contrastive":
            if scale != "data":
                raise ValueError("scale='unit' is the linear model's GLS factors; the contrastive estimator's scores "
                                 "are its encoders' outputs.")
            return np.ones(int(np.asarray(self.W_).shape[1]))
        W = np.asarray(self.W_, dtype=np.float64)
        return np.linalg.norm(W, axis=0) if scale == "data" else np.ones(W.shape[1])

    def _transformed(self, data: MultimodalData) -> dict[str, np.ndarray]:
        """``(x - mean_) / scale_`` per modality, rows of unobserved modalities set to 0."""
        sl = L.block_slices(self.modalities_, self.dims_)
        Xt = {}
        for j, m in enumerate(self.modalities_):
            x = (np.asarray(data.X[m], dtype=np.float64) - self.mean_[sl[m]]) / self.scale_[sl[m]]
            x[~data.observed[:, j]] = 0.0
            Xt[m] = x
        return Xt

    def score_samples(self, data: MultimodalData) -> np.ndarray:
        """Log-likelihood of each sample under the fitted Gaussian model, shape (n,).

        ``x = mean_ + scale_ * (W_ z + e)``, ``z ~ N(0, I)``, ``e ~ N(0, diag(psi_))``, in the data's
        original units (the log-Jacobian of the scaling is included), marginal over the modalities
        a sample lacks. Linear estimator only.
        """
        self._check_fitted()
        if self.estimator == "contrastive":
            raise ValueError("score() is the linear model's Gaussian likelihood; the contrastive estimator has "
                             "none (compare it with estimator='linear').")
        self._check_data(data)
        sl = L.block_slices(self.modalities_, self.dims_)
        ll = L.loglik_samples(self._transformed(data), data.observed, self.modalities_, self.W_,
                              self.feature_noise_, self.dims_)
        log_scale = np.array([float(np.sum(np.log(self.scale_[sl[m]]))) for m in self.modalities_])
        return ll - data.observed.astype(float) @ log_scale

    def score(self, data: MultimodalData) -> float:
        """Mean log-likelihood per sample (scikit-learn's ``FactorAnalysis.score`` convention);
        use it on held-out rows to compare structures: higher is better."""
        return float(np.mean(self.score_samples(data)))

    def score_error_cov(self, data: MultimodalData, scale: str = "data") -> np.ndarray:
        """Mean covariance (R, R) of the errors of ``transform(data, scale=scale)``'s scores over
        ``data``'s observation patterns, in the column order of :meth:`column_nodes` (see
        ``linear.gls_error_cov``)."""
        self._check_fitted()
        if self.estimator == "contrastive":
            raise ValueError("The score-error covariance (and the bias-corrected estimator) exists only for the "
                             "linear estimator: the contrastive estimator's scores have no GLS error model. "
                             "Use bias_correction=False, or estimator='linear'.")
        c = self._score_scale(scale)
        cov = L.gls_error_cov(data.observed, self.modalities_, self.W_, self.column_nodes(), self.feature_noise_, self.dims_)
        return cov * np.outer(c, c)

    def fit_transform(self, data: MultimodalData) -> dict[Node, np.ndarray]:
        return self.fit(data).transform(data)

    def _resample_confirm(self, data, lat: Lattice, fixed: Mapping[Node, int | None],
                          ranks: dict[Node, int]) -> tuple[dict[Node, int], dict]:
        """Small samples: keep a searched node only if the search finds it again on most of
        ``RESAMPLE_CONFIRM`` random subsamples of ``RESAMPLE_FRACTION`` of the rows.

        Below ~1,000 samples the fold confirmation leaves weak nodes that come and go between
        subsamples (on 438 sera, four one-factor nodes found in 10-60 % of resamples); a node is
        only worth showing if :meth:`stability` will find it. The subsample searches are the plain
        search (no resampling of their own), as :meth:`stability` runs it.
        """
        rng = np.random.default_rng(0 if self.random_state is None else self.random_state)
        n = len(data)
        k = max(int(round(RESAMPLE_FRACTION * n)), 2)
        clone = HCL(**{**self.get_params(), "lattice": lat})
        hits = {node: 0 for node in ranks}
        for _ in range(RESAMPLE_CONFIRM):
            rows = np.sort(rng.choice(n, size=k, replace=False))
            try:
                r_sub = clone._fit(data.subset(rows), None, structure_only=True, resample=False)
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

    def stability(self, data: MultimodalData, n_resamples: int = 20, random_state: int | None = 0,
                  fraction: float = 0.8, callback: L.Callback | None = None) -> pd.DataFrame:
        """How sure the structure is: the structure search refitted on ``n_resamples`` random
        subsamples of ``fraction`` of the samples (without replacement).

        Returns one row per candidate node: ``node`` (label), ``rank`` (this fit's), ``found``
        (share of resamples where the node has a factor), ``same_rank`` (share where it has this
        fit's rank) and ``resamples``. Stored as ``stability_``; :meth:`summary` and
        :meth:`plot_hierarchy` then show it. Only the structure is refitted (no refinement), so a
        resample costs about the fit's covariance, noise and rank stages. ``callback("stability",
        {"resample": i, "of": n})`` after each one.
        """
        self._check_fitted()
        if self.estimator != "linear":
            raise ValueError("stability() refits the linear structure search; it is not available for the "
                             "contrastive estimator.")
        n_resamples = int(n_resamples)
        if n_resamples < 1:
            raise ValueError(f"n_resamples must be >= 1, got {n_resamples}.")
        if not 0.0 < float(fraction) < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction!r}.")
        if not hasattr(data, "subset"):
            raise ValueError("stability() needs in-memory data (a MultimodalData) to draw subsamples.")
        if list(data.modalities) != self.modalities_:
            raise ValueError(f"Data modalities {list(data.modalities)} differ from the model's {self.modalities_}.")
        rng = np.random.default_rng(random_state)
        n = len(data)
        k = max(int(round(float(fraction) * n)), 2)
        nodes = list(self.lattice_.nodes)
        found = np.zeros(len(nodes))
        same = np.zeros(len(nodes))
        clone = HCL(**{**self.get_params(), "lattice": self.lattice_})
        for i in range(n_resamples):
            rows = np.sort(rng.choice(n, size=k, replace=False))
            ranks = clone._fit(data.subset(rows), None, structure_only=True, resample=False)
            for j, node in enumerate(nodes):
                r = int(ranks.get(node, 0))
                found[j] += r > 0
                same[j] += r == self.ranks_[node]
            if callback is not None:
                callback("stability", {"resample": i + 1, "of": n_resamples})
        self.stability_ = pd.DataFrame({
            "node": [node_label(nd) for nd in nodes],
            "rank": [self.ranks_[nd] for nd in nodes],
            "found": found / n_resamples,
            "same_rank": same / n_resamples,
            "resamples": n_resamples,
        })
        return self.stability_.copy()

    def summary(self) -> pd.DataFrame:
        """One row per candidate node: label, level, rank, and per modality the share of its total
        variance explained (``var_<m>``) and the share of its signal (``signal_<m>``); once
        :meth:`stability` has run, also ``found`` and ``same_rank`` (shares of resamples)."""
        self._check_fitted()
        blocks = L.split_loadings(self.W_, self.modalities_, self.dims_, self.nodes_, self.ranks_)
        energy = {key: float(np.sum(B**2)) for key, B in blocks.items()}
        signal_tot = {m: sum(v for (mm, _), v in energy.items() if mm == m) for m in self.modalities_}
        rows = []
        M = len(self.modalities_)
        for node in self.lattice_.nodes:
            row: dict[str, Any] = {
                "node": node_label(node),
                "level": node_level(node, M),
                "size": len(node),
                "rank": self.ranks_[node],
                "present": self.ranks_[node] > 0,
            }
            for m in self.modalities_:
                e = energy.get((m, node), 0.0) if m in node else np.nan
                row[f"var_{m}"] = e / self.total_var_[m] if m in node and self.total_var_[m] > 0 else (0.0 if m in node else np.nan)
                row[f"signal_{m}"] = (e / signal_tot[m] if signal_tot[m] > 0 else 0.0) if m in node else np.nan
            rows.append(row)
        out = pd.DataFrame(rows)
        stab = getattr(self, "stability_", None)
        if stab is not None:
            out = out.merge(stab[["node", "found", "same_rank"]], on="node", how="left")
        return out

    def __repr__(self) -> str:
        if not hasattr(self, "W_"):
            return f"HCL(estimator={self.estimator!r}, ranks={self.ranks!r}, lattice={self.lattice!r})"
        found = ", ".join(f"{node_label(n)}:{self.ranks_[n]}" for n in self.nodes_)
        return f"HCL(fitted; modalities={self.modalities_}; nodes {{{found}}})"

    def _repr_html_(self) -> str:
        from . import display

        if not hasattr(self, "W_"):
            return display.block("HCL (not fitted)", [f"estimator={self.estimator!r}, ranks={self.ranks!r}, "
                                                      f"lattice={self.lattice if isinstance(self.lattice, str) or self.lattice is None else 'custom'}"])
        sm = self.summary()
        present = sm[sm.present].drop(columns=["present"])
        lines = [f"{len(present)} of {len(sm)} candidate nodes found, {int(present['rank'].sum())} factors; "
                 f"{self.n_samples_:,} samples; modalities {', '.join(self.modalities_)}",
                 f"refinement: {self.n_iter_} evaluations, converged={self.converged_}; device {self.device_}"]
        return display.block("HCL (fitted)", lines, display.table(present))

    # ------------------------------------------------------------------ figures (the app's figures)
    def plot_hierarchy(self, highlight=(), title: str = "Recovered hierarchy"):
        """The recovered hierarchy over modality subsets (plotly Figure)."""
        from .figures import model_hierarchy

        self._check_fitted()
        return model_hierarchy(self, highlight=highlight, title=title)

    def plot_variance(self):
        """How each modality's variance splits across global, partial and private nodes (plotly Figure)."""
        from .figures import variance_figure

        self._check_fitted()
        return variance_figure(self)

    def plot_loadings(self, node, top: int = 15):
        """Heatmap of the ``top`` features loading on ``node``'s factors (plotly Figure)."""
        from .figures import loadings_figure

        self._check_fitted()
        return loadings_figure(self, node, top=top)

    def plot_objective(self):
        """The refinement objective per evaluation, or (contrastive estimator) the training and
        validation loss per epoch (plotly Figure)."""
        from .figures import objective_figure

        self._check_fitted()
        if self.estimator == "contrastive":
            return objective_figure(list(self.objective_history_), title="Training loss", x_label="epoch",
                                    validation=list(getattr(self, "val_history_", [])))
        return objective_figure(list(self.objective_history_))

    # ------------------------------------------------------------------ persistence
    def get_params(self) -> dict[str, Any]:
        lat = self.lattice
        ranks = self.ranks
        if isinstance(ranks, Mapping):
            ranks = {node_label(tuple(k) if not isinstance(k, str) else (k,)): v for k, v in ranks.items()}
        return {
            "lattice": lat.to_dict() if isinstance(lat, Lattice) else lat,
            "ranks": ranks,
            "estimator": self.estimator,
            "device": self.device if isinstance(self.device, str) else str(self.device),
            "standardize": self.standardize,
            "balance_modalities": self.balance_modalities,
            "chunk_size": self.chunk_size,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "random_state": self.random_state,
        } | ({k: (list(v) if isinstance(v, tuple) else (os.fspath(v) if isinstance(v, os.PathLike) else v))
              for k, v in ((k, getattr(self, k)) for k in CONTRASTIVE_DEFAULTS)}
             if self.estimator == "contrastive" else {})

    def save(self, path: str | os.PathLike) -> None:
        """Write a fitted model to one ``.npz`` file (arrays + a JSON header; no pickle).

        The file is written to a temporary name and renamed, so a crash never leaves half a file.
        """
        self._check_fitted()
        path = os.fspath(path)
        contrastive = self.estimator == "contrastive"
        meta = {
            "format": "hcl_explore.HCL",
            "version": _FORMAT_VERSION_CONTRASTIVE if contrastive else _FORMAT_VERSION,
            "params": self.get_params(),
            "modalities": self.modalities_,
            "lattice": self.lattice_.to_dict(),
            "dims": self.dims_,
            "feature_names": self.feature_names_,
            "noise_var": self.noise_var_,
            "ranks": {node_label(n): r for n, r in self.ranks_.items()},
            "nodes": [node_label(n) for n in self.nodes_],
            "objective": self.objective_,
            "n_iter": self.n_iter_,
            "converged": self.converged_,
            "total_var": self.total_var_,
            "n_samples": self.n_samples_,
            "timings": self.timings_,
            "device": self.device_,
            "signal_rank": self.signal_rank_,
            "standardized": self.standardized_,
            "preprocessing": self.preprocessing_,
            "rank_diagnostics": _plain(getattr(self, "rank_diagnostics_", {})),
        }
        extra: dict[str, np.ndarray] = {}
        if contrastive:
            # The network's state dict as plain arrays ("module.<name>"); rebuilt from module_spec.
            meta.update({"module_spec": self.module_.spec.to_dict(), "task": self.task_,
                         "n_epochs": self.n_epochs_, "best_epoch": self.best_epoch_})
            extra = {f"module.{k}": v.detach().cpu().numpy() for k, v in self.module_.state_dict().items()}
            extra["val_history"] = np.asarray(self.val_history_, dtype=float)
        if os.path.isdir(path):
            raise ValueError(f"{path} is a folder; give a file name such as {os.path.join(path, 'model.npz')}.")
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            fh = open(tmp, "wb")
        except OSError as exc:
            raise ValueError(f"Cannot write the model to {path}: {exc.strerror or exc}.") from exc
        try:
            with fh:
                np.savez(
                    fh,
                    meta=np.array(json.dumps(meta)),
                    W=self.W_,
                    mean=self.mean_,
                    scale=self.scale_,
                    counts=self.counts_,
                    objective_history=np.asarray(self.objective_history_, dtype=float),
                    **({"psi": self.psi_} if getattr(self, "psi_", None) is not None else {}),
                    **extra,
                )
            os.replace(tmp, path)
        except BaseException:
            # Never leave a half-written temporary beside the target (a full disk, an interrupt).
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HCL":
        """Read a model written by :meth:`save` (``allow_pickle=False``)."""
        from .safe_npz import read_model_file

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such model file.")
        # Every member's header, size and shape is checked against the file's own header before
        # anything is allocated (a crafted file cannot ask for 10^12 floats or unpickle).
        meta, arrays = read_model_file(path, max_version=_FORMAT_VERSION_CONTRASTIVE)
        if meta.get("format") != "hcl_explore.HCL":
            raise ValueError(f"{path}: not a saved hcl_explore model.")
        if int(meta.get("version", 0)) > _FORMAT_VERSION_CONTRASTIVE:
            raise ValueError(f"{path}: saved by a newer hcl_explore (format {meta['version']}).")
        p = dict(meta["params"])
        if isinstance(p.get("lattice"), dict):
            p["lattice"] = Lattice.from_dict(p["lattice"])
        try:
            model = cls(**p)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a valid model file ({exc}).") from exc
        model.modalities_ = list(meta["modalities"])
        model.lattice_ = Lattice.from_dict(meta["lattice"])
        model.dims_ = {k: int(v) for k, v in meta["dims"].items()}
        model.feature_names_ = meta["feature_names"]
        model.noise_var_ = {k: float(v) for k, v in meta["noise_var"].items()}
        model.ranks_ = {model.lattice_.node(parse_node_label(k)): int(v) for k, v in meta["ranks"].items()}
        model.nodes_ = [model.lattice_.node(parse_node_label(k)) for k in meta["nodes"]]
        model.W_ = arrays["W"]
        model.mean_ = arrays["mean"]
        model.scale_ = arrays["scale"]
        model.counts_ = arrays["counts"]
        if "psi" in arrays:
            model.psi_ = arrays["psi"]
        model.objective_history_ = arrays["objective_history"].tolist()
        model.objective_ = float(meta["objective"])
        model.n_iter_ = int(meta["n_iter"])
        model.converged_ = bool(meta["converged"])
        model.total_var_ = meta["total_var"]
        model.n_samples_ = int(meta["n_samples"])
        model.timings_ = meta.get("timings", {})
        model.device_ = meta.get("device", "cpu")
        model.signal_rank_ = meta.get("signal_rank", {})
        model.rank_diagnostics_ = meta.get("rank_diagnostics") or {}
        model.standardized_ = bool(meta.get("standardized", np.any(model.scale_ != 1.0)))
        model.preprocessing_ = meta.get("preprocessing")
        if model.estimator == "contrastive":
            spec = C.ModuleSpec.from_dict(meta["module_spec"])
            module = C.HCLModule(spec)
            state = {k[len("module."):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("module.")}
            module.load_state_dict(state)
            module.eval()
            model.module_ = module
            model.task_ = meta.get("task")
            model.n_epochs_ = int(meta.get("n_epochs", model.n_iter_))
            model.best_epoch_ = int(meta.get("best_epoch", 0))
            model.val_history_ = arrays["val_history"].tolist() if "val_history" in arrays else []
        return model
