"""The user-facing HCL estimator (scikit-learn style: parameters in __init__, learned attributes end
in ``_``)."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
import pandas as pd

from . import layout as Y
from . import linear as L
from .data import MultimodalData
from .estimators import get_estimator, names as estimator_names
from .estimators.base import plain as _plain
from .estimators.base import resolve_device  # noqa: F401  (hx.resolve_device)
from .estimators.contrastive import CHOICES as CONTRASTIVE_CHOICES  # noqa: F401  (older imports)
from .estimators.contrastive import OPTIONS as CONTRASTIVE_DEFAULTS  # noqa: F401  (older imports)
from .estimators.linear import AUTO_STANDARDIZE_RATIO  # noqa: F401  (documented in HCL)
from .lattice import Lattice, Node, node_label, node_level, parse_node_label


def _all_options() -> dict[str, Any]:
    """Every registered estimator's keyword options with their defaults."""
    from .estimators import REGISTRY

    estimator_names()  # imports the estimator modules (registration)
    out: dict[str, Any] = {}
    for est in REGISTRY.values():
        out.update(est.options)
    return out


def _estimator_options(name: str) -> dict[str, Any]:
    """The options of estimator ``name`` (none for an unknown name: fit reports it)."""
    try:
        return dict(get_estimator(name).options)
    except ValueError:
        return {}


def _as_source(data):
    """Dask collections (one dask DataFrame, or a mapping of modality -> dask DataFrame) become a
    :class:`hcl_explore.dask_source.DaskSource` (Dask imported only then); anything else as is."""
    first = next(iter(data.values()), None) if isinstance(data, Mapping) else data
    if type(first).__module__.split(".")[0] == "dask":
        from .dask_source import from_dask

        return from_dask(data)
    return data


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
    max_epochs, batch_size, lr, weight_decay : training (Adam) settings (100, 256, 3e-3, 0).
    val_fraction, patience : share of samples held out for early stopping (0.1) and epochs
        without a significant improvement before stopping (3). The best epoch's weights are kept.
    lr_decay : each epoch without a significant improvement multiplies the learning rate by this
        (0.5; 1 keeps it fixed).
    max_time : seconds of training before stopping at the best epoch so far (None: no limit).
    shuffle_buffer : rows held to shuffle the minibatches of a streamed ``ParquetSource`` (65,536;
        data bigger than memory is never loaded whole, see docs/scale.md)
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
        **options: Any,
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
        # Every registered estimator's options are attributes (so set_params / clone can switch
        # estimator); get_params and save list the chosen estimator's only.
        known = _all_options()
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"HCL got unexpected keyword argument(s) {unknown}; estimator options are "
                            f"{sorted(known)}.")
        for k, v in known.items():
            setattr(self, k, options.get(k, v))

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
        est = get_estimator(self.estimator)
        if y is not None and not est.supervised:
            raise ValueError(f"y is only used by the contrastive estimator's supervised head; the {est.name} "
                             "estimator is unsupervised (use evaluate_prediction for outcomes).")
        bar = est.progress_bar(self, data) if progress else None
        if bar is not None:
            inner = callback

            def callback(stage, info):  # noqa: F811  chain the bar before the user's callback
                bar.update(stage, info)
                if inner is not None:
                    inner(stage, info)
        try:
            est.fit(self, data, callback, y)
            return self
        except BaseException:
            for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
                delattr(self, attr)
            raise
        finally:
            if bar is not None:
                bar.close()

    def _standardized(self, X: Mapping[str, np.ndarray], observed: np.ndarray) -> dict[str, np.ndarray]:
        """float32 ``(x - mean_) / scale_`` with missing rows 0 (the contrastive encoders' input)."""
        return get_estimator("contrastive").standardized(self, X, observed)

    def _contrastive_config(self):
        """The contrastive training settings (``estimators.contrastive``), for benchmarks."""
        return get_estimator("contrastive").config(self)

    # ------------------------------------------------------------------ learned views
    def _check_data(self, data) -> None:
        """``data`` must be a MultimodalData with the fitted modalities and feature counts."""
        if not hasattr(data, "modalities") or not hasattr(data, "X"):
            raise ValueError(f"Expected a MultimodalData (hx.load_modalities / MultimodalData.from_arrays), got "
                             f"{type(data).__name__}.")
        if list(data.modalities) != self.modalities_:
            raise ValueError(f"Data modalities {list(data.modalities)} differ from the model's {self.modalities_}.")
        names = getattr(data, "feature_names", None) or {}
        for m in self.modalities_:
            if data.X[m].shape[1] != self.dims_[m]:
                raise ValueError(f"Modality {m!r} has {data.X[m].shape[1]} features; the model was fitted on {self.dims_[m]}.")
            got, want = list(names.get(m, [])), list(getattr(self, "feature_names_", {}).get(m, []))
            if got and want and got != want:
                # Same count, other columns (or another order): every score would be silently wrong.
                j = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
                what = "in another order" if sorted(got) == sorted(want) else "not the fitted ones"
                raise ValueError(f"Modality {m!r}: the features are {what} (column {j + 1} is {got[j]!r}, the model "
                                 f"was fitted with {want[j]!r}). Load new data with the model's preprocessing "
                                 "(load_modalities(..., preprocessing=model.preprocessing_)).")

    def _check_fitted(self) -> None:
        if not hasattr(self, "W_"):
            raise RuntimeError("This HCL model is not fitted yet; call fit(data) first.")

    @property
    def loadings_(self) -> dict[tuple[str, Node], np.ndarray]:
        """Per-(modality, node) loadings (d_m, r_S) in original feature units, present nodes only."""
        self._check_fitted()
        sl = Y.block_slices(self.modalities_, self.dims_)
        blocks = Y.split_loadings(self.W_, self.modalities_, self.dims_, self.nodes_, self.ranks_)
        return {(m, node): B * self.scale_[sl[m], None] for (m, node), B in blocks.items()}

    @property
    def feature_noise_(self) -> dict[str, np.ndarray]:
        """Noise variance of every feature, per modality ``{m: (d_m,)}`` (transformed units)."""
        self._check_fitted()
        psi = getattr(self, "psi_", None)
        sl = Y.block_slices(self.modalities_, self.dims_)
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
        est = get_estimator(self.estimator)
        col_scale = self._score_scale(scale)
        Z = est.transform(self, data, fill) * col_scale
        return {node: Z[:, cols] for node, cols in Y.node_columns(self.nodes_, self.ranks_).items()}

    def _score_scale(self, scale: str) -> np.ndarray:
        """(R,) factor by which ``transform(scale=...)`` multiplies the estimator's unit scores."""
        if scale not in ("data", "unit"):
            raise ValueError(f"scale must be 'data' or 'unit', got {scale!r}.")
        return get_estimator(self.estimator).score_scale(self, scale)

    def _transformed(self, data: MultimodalData) -> dict[str, np.ndarray]:
        """``(x - mean_) / scale_`` per modality, rows of unobserved modalities set to 0."""
        sl = Y.block_slices(self.modalities_, self.dims_)
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
        est = get_estimator(self.estimator)
        self._check_data(data)
        return est.score_samples(self, data)

    def score(self, data: MultimodalData) -> float:
        """Mean log-likelihood per sample (scikit-learn's ``FactorAnalysis.score`` convention);
        use it on held-out rows to compare structures: higher is better."""
        return float(np.mean(self.score_samples(data)))

    def score_error_cov(self, data: MultimodalData, scale: str = "data") -> np.ndarray:
        """Mean covariance (R, R) of the errors of ``transform(data, scale=scale)``'s scores over
        ``data``'s observation patterns, in the column order of :meth:`column_nodes` (see
        ``linear.gls_error_cov``)."""
        self._check_fitted()
        est = get_estimator(self.estimator)
        c = self._score_scale(scale)
        return est.score_error_cov(self, data) * np.outer(c, c)

    def fit_transform(self, data: MultimodalData) -> dict[Node, np.ndarray]:
        return self.fit(data).transform(data)

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
        est = get_estimator(self.estimator)
        if not est.has_structure_search:
            raise ValueError(f"stability() refits the linear structure search; it is not available for the "
                             f"{est.name} estimator.")
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
            ranks = est.search_structure(clone, data.subset(rows))
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
        blocks = Y.split_loadings(self.W_, self.modalities_, self.dims_, self.nodes_, self.ranks_)
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
        } | {k: (list(v) if isinstance(v, tuple) else (os.fspath(v) if isinstance(v, os.PathLike) else v))
             for k, v in ((k, getattr(self, k)) for k in _estimator_options(self.estimator))}

    def save(self, path: str | os.PathLike) -> None:
        """Write a fitted model to one ``.npz`` file (arrays + a JSON header; no pickle).

        The file is written to a temporary name and renamed, so a crash never leaves half a file.
        """
        self._check_fitted()
        path = os.fspath(path)
        est = get_estimator(self.estimator)
        meta = {
            "format": "hcl_explore.HCL",
            "version": est.file_version,
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
        extra_meta, extra = est.dump(self)
        meta.update(extra_meta)
        if os.path.isdir(path):
            raise ValueError(f"{path} is a folder; give a file name such as {os.path.join(path, 'hcl_fit.npz')}.")
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
        from .estimators import REGISTRY

        estimator_names()
        newest = max(e.file_version for e in REGISTRY.values())
        meta, arrays = read_model_file(path, max_version=newest)
        if meta.get("format") != "hcl_explore.HCL":
            raise ValueError(f"{path}: not a saved hcl_explore model.")
        if int(meta.get("version", 0)) > newest:
            raise ValueError(f"{path}: saved by a newer hcl_explore (format {meta['version']}).")
        p = dict(meta["params"])
        if isinstance(p.get("lattice"), dict):
            p["lattice"] = Lattice.from_dict(p["lattice"])
        try:
            model = cls(**p)
            est = get_estimator(model.estimator)
        except (KeyError, TypeError, ValueError) as exc:
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
        est.restore(model, meta, arrays)
        return model
