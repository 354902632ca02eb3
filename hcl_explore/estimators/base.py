"""The estimator protocol behind :class:`hcl_explore.HCL` (docs/architecture.md).

``HCL`` is the facade: parameters, validation, dispatch, ``summary``, plots, save/load. An
estimator is the learning method: a subclass of :class:`Estimator` registered under a name
(``HCL(estimator=name)``). It is stateless: every method receives the ``HCL`` object and reads or
sets its fitted attributes, so fitted models look the same whatever learned them.

What ``fit`` must set on the model (shapes with D = sum of the d_m, R = sum of the ranks):
``modalities_`` (list), ``lattice_`` (Lattice), ``dims_`` ({m: d_m}), ``feature_names_``
({m: [names]}), ``mean_`` and ``scale_`` ((D,), the transform ``(x - mean_) / scale_``),
``ranks_`` ({node: int} over every lattice node), ``nodes_`` (nodes with rank > 0, in lattice
order), ``W_`` ((D, R) loadings in transformed units, columns node by node), ``noise_var_``
({m: float}); :func:`finish_fit` fills the remaining bookkeeping attributes with defaults.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch

from .. import layout as Y
from .. import linear as L
from ..lattice import Node, node_label

#: name -> estimator instance (:func:`register`).
REGISTRY: dict[str, "Estimator"] = {}


def register(cls: type["Estimator"]) -> type["Estimator"]:
    """Class decorator: make ``HCL(estimator=cls.name)`` use ``cls`` (one instance, stateless)."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} needs a class attribute 'name'.")
    REGISTRY[cls.name] = cls()
    return cls


def get_estimator(name: str) -> "Estimator":
    from . import _discover

    _discover()
    if name not in REGISTRY:
        raise ValueError(f"Unknown estimator {name!r}; available: {', '.join(map(repr, sorted(REGISTRY)))}.")
    return REGISTRY[name]


class Estimator:
    """One learning method behind ``HCL``. Override :meth:`fit`; the rest has defaults that work
    for any estimator whose model is the linear-Gaussian one (``x = W z + e``, diagonal noise)."""

    #: ``HCL(estimator=name)``.
    name: ClassVar[str] = ""
    #: Extra keyword options of ``HCL`` for this estimator and their defaults (``get_params`` lists
    #: them, ``save`` stores them).
    options: ClassVar[dict[str, Any]] = {}
    #: The model-file format version this estimator's files carry (readers refuse newer ones).
    file_version: ClassVar[int] = 1
    #: Whether :meth:`search_structure` exists (``HCL.stability`` needs it).
    has_structure_search: ClassVar[bool] = False
    #: Whether ``fit(..., y=...)`` uses an outcome.
    supervised: ClassVar[bool] = False

    def fit(self, model, data, callback: L.Callback | None, y=None) -> None:
        raise NotImplementedError

    def search_structure(self, model, data) -> dict[Node, int]:
        """Ranks only (no loadings), as ``fit`` would choose them: ``HCL.stability`` calls it on
        subsamples."""
        raise ValueError(f"stability() refits the structure search; the {self.name} estimator has none.")

    def progress_bar(self, model, data) -> Any | None:
        """An object with ``update(stage, info)`` and ``close()`` for ``fit(progress=True)``."""
        return None

    # ------------------------------------------------------------------ scores
    def transform(self, model, data, fill: float) -> np.ndarray:
        """Unit-prior factor scores (n, R) in the column order of ``model.column_nodes()``:
        GLS (Bartlett) scores under the fitted loadings and per-feature noise."""
        Xt = model._transformed(data)
        return L.gls_scores(Xt, data.observed, model.modalities_, model.W_, model.column_nodes(),
                            model.feature_noise_, model.dims_, fill=fill)

    def score_scale(self, model, scale: str) -> np.ndarray:
        """(R,) factors that turn :meth:`transform`'s scores into ``HCL.transform(scale=...)``'s:
        ``"data"`` = the loading norms (PCA's convention), ``"unit"`` = 1."""
        W = np.asarray(model.W_, dtype=np.float64)
        return np.linalg.norm(W, axis=0) if scale == "data" else np.ones(W.shape[1])

    def score_samples(self, model, data) -> np.ndarray:
        """Gaussian log-likelihood per sample (n,), original units, marginal over missing modalities."""
        sl = Y.block_slices(model.modalities_, model.dims_)
        ll = L.loglik_samples(model._transformed(data), data.observed, model.modalities_, model.W_,
                              model.feature_noise_, model.dims_)
        log_scale = np.array([float(np.sum(np.log(model.scale_[sl[m]]))) for m in model.modalities_])
        return ll - data.observed.astype(float) @ log_scale

    def score_error_cov(self, model, data) -> np.ndarray:
        """Mean covariance (R, R) of the unit scores' errors over ``data``'s observation patterns."""
        return L.gls_error_cov(data.observed, model.modalities_, model.W_, model.column_nodes(),
                               model.feature_noise_, model.dims_)

    # ------------------------------------------------------------------ files
    def dump(self, model) -> tuple[dict, dict[str, np.ndarray]]:
        """Estimator-specific (JSON header entries, arrays) for ``save`` beyond the common ones."""
        return {}, {}

    def restore(self, model, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Inverse of :meth:`dump` on a model ``load`` has filled with the common attributes."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``/``"cuda"``/``"cuda:1"`` explicit."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available on this machine; use 'auto' or 'cpu'.")
    return dev


def check_given_ranks(fixed: Mapping[Node, int | None], dims: Mapping[str, int]) -> None:
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


def plain(o: Any) -> Any:
    """``o`` as plain JSON types (numpy scalars and arrays to numbers and lists, tuple keys to
    node labels), so that a JSON round trip returns an equal object."""
    if isinstance(o, Mapping):
        return {(node_label(k) if isinstance(k, tuple) else str(k)): plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [plain(v) for v in o]
    if isinstance(o, np.ndarray):
        return plain(o.tolist())
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def in_memory(data, chunk_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({m: (n, d_m)}, observed (n, M))`` of a MultimodalData, or of a streamed source read once
    into memory (float32)."""
    mods = list(data.modalities)
    if hasattr(data, "X") and hasattr(data, "observed"):
        return {m: data.X[m] for m in mods}, np.asarray(data.observed, dtype=bool)
    chunks = list(data.iter_chunks(chunk_size))
    X = {m: np.concatenate([np.asarray(c.X[m], dtype=np.float32) for c in chunks]) for m in mods}
    return X, np.concatenate([c.observed for c in chunks]).astype(bool)


def finish_fit(model, data, **attrs: Any) -> None:
    """Set the fitted attributes given, and defaults for the bookkeeping ones an estimator may not
    have (objective, iterations, timings, counts, total variance, ...)."""
    for k, v in attrs.items():
        setattr(model, k, v)
    defaults: dict[str, Callable[[], Any]] = {
        "feature_names_": lambda: {m: list(data.feature_names[m]) for m in model.modalities_},
        "standardized_": lambda: bool(np.any(np.asarray(model.scale_) != 1.0)),
        "preprocessing_": lambda: (getattr(data, "report", None) or {}).get("preprocessing"),
        "objective_": lambda: float("nan"),
        "n_iter_": lambda: 0,
        "converged_": lambda: True,
        "objective_history_": lambda: [],
        "total_var_": lambda: {m: float("nan") for m in model.modalities_},
        "n_samples_": lambda: int(len(data)),
        "counts_": lambda: (lambda o: o.T.astype(np.int64) @ o.astype(np.int64))(np.asarray(data.observed, bool)),
        "rank_diagnostics_": lambda: {},
        "timings_": lambda: {},
        "device_": lambda: "cpu",
        "signal_rank_": lambda: {},
    }
    for k, make in defaults.items():
        if not hasattr(model, k):
            setattr(model, k, make())
