"""The contrastive estimator: per-(modality, node) neural encoders trained with the lattice's
contrastive, reconstruction and decorrelation losses (:mod:`hcl_explore.contrastive`)."""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

import numpy as np
import torch

from .. import contrastive as C
from .. import layout as Y
from .. import linear as L
from ..contrastive_stream import BUFFER_ROWS, ParquetBatches
from ..harmonics import prune_harmonics
from ..lattice import Node, node_label
from ..outcomes import supervised_task
from .base import Estimator, in_memory, register, resolve_device

#: Options of the contrastive estimator and their defaults (``get_params`` lists them only when
#: ``estimator="contrastive"``, so linear models and their files are unchanged).
OPTIONS: dict[str, Any] = {
    "encoder": "mlp", "hidden": (128,), "init": "linear", "loss": "infonce", "temperature": 0.1,
    "contrast": "nested", "decorrelation": "quadratic", "rank_search": "harmonic",
    "reconstruction_weight": 1.0, "decorrelation_weight": 1.0, "supervised_weight": 1.0,
    "max_epochs": 100, "batch_size": 256, "lr": 3e-3, "weight_decay": 0.0, "val_fraction": 0.1,
    "patience": 3, "lr_decay": 0.5, "shuffle_buffer": BUFFER_ROWS, "checkpoint_dir": None, "resume": False,
    "amp": True, "max_time": None,
}
#: The options that take one of a few values.
CHOICES: dict[str, tuple[str, ...]] = {
    "encoder": C.ENCODERS, "loss": C.LOSSES, "init": ("linear", "random"), "contrast": ("nested", "node"),
    "decorrelation": ("quadratic", "linear"), "rank_search": ("harmonic", "linear"),
}


def start_from_linear(module: C.HCLModule, lin, mean: np.ndarray, scale: np.ndarray) -> None:
    """Start every encoder at the linear estimator's per-modality projection.

    For modality m with fitted loadings B_m ``(d_m, R_m)`` (its nodes' columns of ``lin.W_``, in
    the linear estimator's units), the least-squares scores of x_m alone are ``pinv(B_m) x_lin``;
    rewritten for the contrastive estimator's standardized input ``x_c`` (``mean``, ``scale``)
    this is ``pinv(B_m) diag(scale / lin.scale_) x_c`` plus a constant (the batch standardization
    of the blocks removes constants). Training then moves away from the linear solution only
    where the loss gains.
    """
    sl = Y.block_slices(lin.modalities_, lin.dims_)
    cols = Y.node_columns(lin.nodes_, lin.ranks_)
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


def local_device(dev: torch.device) -> torch.device:
    """Under ``torchrun`` with several processes per node, ``"cuda"`` (no index) means this
    process's own GPU, ``cuda:LOCAL_RANK``: otherwise every process would train on GPU 0."""
    if dev.type != "cuda" or dev.index is not None or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dev
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1))
    torch.cuda.set_device(dev)  # NCCL's collectives use the current device
    return dev


def streamable(data) -> bool:
    """Whether ``data`` is a Parquet source to stream from (not in memory)."""
    return not (hasattr(data, "X") and hasattr(data, "observed")) and hasattr(data, "files") \
        and hasattr(data, "iter_row_groups")


@register
class ContrastiveEstimator(Estimator):
    """Nonlinear modalities: encoders per (modality, node), trained on minibatches (CPU or CUDA)."""

    name = "contrastive"
    options = OPTIONS
    #: Version-1 readers refuse these files ("saved by a newer hcl_explore") instead of failing on
    #: unknown parameters.
    file_version = 2
    supervised = True

    def progress_bar(self, model, data):
        from ..progress import fit_bar

        return fit_bar(model, data, "contrastive")

    def transform(self, model, data, fill: float) -> np.ndarray:
        Z = self.node_scores(model, data, fill)
        n = len(np.asarray(data.observed))
        parts = [np.asarray(Z[nd]) for nd in model.nodes_]
        return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))

    def score_scale(self, model, scale: str) -> np.ndarray:
        if scale != "data":
            raise ValueError("scale='unit' is the linear model's GLS factors; the contrastive estimator's scores "
                             "are its encoders' outputs.")
        return np.ones(int(np.asarray(model.W_).shape[1]))

    def score_samples(self, model, data) -> np.ndarray:
        raise ValueError("score() is the linear model's Gaussian likelihood; the contrastive estimator has "
                         "none (compare it with estimator='linear').")

    def score_error_cov(self, model, data) -> np.ndarray:
        raise ValueError("The score-error covariance (and the bias-corrected estimator) exists only for the "
                         "linear estimator: the contrastive estimator's scores have no GLS error model. "
                         "Use bias_correction=False, or estimator='linear'.")

    def dump(self, model) -> tuple[dict, dict[str, np.ndarray]]:
        # The network's state dict as plain arrays ("module.<name>"); rebuilt from module_spec.
        meta = {"module_spec": model.module_.spec.to_dict(), "task": model.task_,
                "n_epochs": model.n_epochs_, "best_epoch": model.best_epoch_,
                "stop_reason": getattr(model, "stop_reason_", ""), "train_seconds": getattr(model, "train_seconds_", None)}
        arrays = {f"module.{k}": v.detach().cpu().numpy() for k, v in model.module_.state_dict().items()}
        arrays["val_history"] = np.asarray(model.val_history_, dtype=float)
        return meta, arrays

    def restore(self, model, meta, arrays) -> None:
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
        model.stop_reason_ = str(meta.get("stop_reason") or "")
        model.train_seconds_ = meta.get("train_seconds")

    def config(self, model) -> C.TrainConfig:
        """The training settings from the model's options, checked (a ValueError names the bad one)."""
        # Before any conversion (int(h) would turn 2.5 into 2) and before the linear pre-fit.
        C.check_options(hidden=model.hidden, batch_size=model.batch_size, lr=model.lr, max_epochs=model.max_epochs,
                        temperature=model.temperature, val_fraction=model.val_fraction,
                        weight_decay=model.weight_decay, patience=model.patience, max_time=model.max_time,
                        lr_decay=getattr(model, "lr_decay", OPTIONS["lr_decay"]),
                        shuffle_buffer=getattr(model, "shuffle_buffer", OPTIONS["shuffle_buffer"]))
        for name, allowed in CHOICES.items():
            if getattr(model, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(model, name)!r}.")
        if not float(model.temperature) > 0:
            raise ValueError("temperature must be > 0.")
        if int(model.batch_size) < 2 or int(model.max_epochs) < 1 or int(model.patience) < 1:
            raise ValueError("batch_size must be >= 2, max_epochs and patience >= 1.")
        if not 0 <= float(model.val_fraction) < 1:
            raise ValueError("val_fraction must be in [0, 1).")
        if model.resume and not model.checkpoint_dir:
            raise ValueError("resume=True needs a checkpoint_dir.")
        return C.TrainConfig(loss=model.loss, temperature=float(model.temperature),
                             reconstruction_weight=float(model.reconstruction_weight),
                             decorrelation_weight=float(model.decorrelation_weight),
                             decorrelation=str(model.decorrelation), contrast=str(model.contrast),
                             supervised_weight=float(model.supervised_weight), max_epochs=int(model.max_epochs),
                             batch_size=int(model.batch_size), lr=float(model.lr), weight_decay=float(model.weight_decay),
                             patience=int(model.patience), amp=bool(model.amp),
                             lr_decay=float(getattr(model, "lr_decay", OPTIONS["lr_decay"])),
                             max_time=None if model.max_time is None else float(model.max_time),
                             seed=int(model.random_state) if model.random_state is not None else 0)

    def standardized(self, model, X: Mapping[str, np.ndarray], observed: np.ndarray) -> dict[str, np.ndarray]:
        """float32 copies ``(x - mean_) / scale_`` with missing rows set to 0."""
        sl = Y.block_slices(model.modalities_, model.dims_)
        out = {}
        for j, m in enumerate(model.modalities_):
            x = (np.asarray(X[m], dtype=np.float32) - model.mean_[sl[m]].astype(np.float32)) / \
                model.scale_[sl[m]].astype(np.float32)
            x[~observed[:, j]] = 0.0
            out[m] = x
        return out

    def fit(self, model, data, callback: L.Callback | None, y=None) -> None:
        t0 = time.perf_counter()
        cfg = self.config(model)
        dev = local_device(resolve_device(model.device))
        mods = list(data.modalities)
        lat = model._resolve_lattice(mods)
        fixed = model._resolve_ranks(lat)
        timings: dict[str, float] = {}
        diagnostics: dict = {}
        loader, scan = None, None
        if streamable(data):
            # Bigger than memory: one pass for the standardization, the co-observation counts and
            # two bounded samples (validation, summary); training batches are streamed.
            if y is not None:
                raise ValueError("A supervised fit (y=...) needs in-memory data; a streamed Parquet source has "
                                 "no outcome column. Load the data (hx.load_modalities) or fit without y.")
            t_scan = time.perf_counter()
            loader = ParquetBatches(data, batch_size=cfg.batch_size, buffer_rows=int(model.shuffle_buffer),
                                    seed=cfg.seed)
            scan = loader.scan(float(model.val_fraction), standardize=model.standardize is not False)
            timings["scan"] = time.perf_counter() - t_scan
            X = {m: scan.sample_X[:, loader.slices[m]] for m in mods}  # the training-row sample
            obs = scan.sample_observed
            n = loader.n_samples
            dims = dict(data.dims)
            pairs = scan.counts
        else:
            X, obs = in_memory(data, model.chunk_size)
            n = obs.shape[0]
            dims = {m: int(X[m].shape[1]) for m in mods}
            pairs = obs.T.astype(np.int64) @ obs.astype(np.int64)
        for node in (nd for nd in lat.nodes if fixed[nd] != 0):
            for i, m in enumerate(node):
                for m2 in node[i + 1:]:
                    if not pairs[mods.index(m), mods.index(m2)]:
                        raise ValueError(f"Node {node_label(node)}: no sample has both {m!r} and {m2!r}; "
                                         "nothing can align them. Drop the node or give it rank 0.")
        lin = None
        t_lin = time.perf_counter()
        if any(r is None for r in fixed.values()) or model.init == "linear":
            # The linear estimator's structure (ranks "auto") and its per-modality projections
            # (init "linear") are the starting point; it costs one pass over the data.
            def linear(rk):
                return type(model)(lattice=lat, ranks=rk, estimator="linear", device=model.device, standardize=model.standardize,
                           balance_modalities=model.balance_modalities, chunk_size=model.chunk_size, tol=model.tol,
                           max_iter=model.max_iter, random_state=model.random_state).fit(data, callback=callback)

            lin = linear(model.ranks)
            ranks = dict(lin.ranks_)
            diagnostics = dict(lin.rank_diagnostics_)
            if model.rank_search == "harmonic" and any(r is None for r in fixed.values()):
                # The linear search also counts the harmonics of nonlinear factors: drop them.
                pruned, diagnostics["harmonics"] = prune_harmonics(lin, X, obs, seed=model.random_state)
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
            raw = np.asarray(getattr(y, "values", y)).reshape(-1)
            if raw.shape[0] != n:
                raise ValueError(f"y has {raw.shape[0]} values for {n} samples.")
            # The one outcome rule (hcl_explore/outcomes.py): kind and positive level as the
            # loader and evaluate_prediction decide them ("yes"/"no" -> 1/0 here too).
            codes, task = supervised_task(raw)
            if task == "multiclass":
                raise ValueError("The supervised head takes a binary or a continuous outcome; this one has "
                                 f"{len(np.unique(codes[np.isfinite(codes)]))} classes (evaluate it with "
                                 "evaluate_prediction, which handles multiclass outcomes).")
            yv = np.asarray(codes, dtype=np.float64)
            lab = np.isfinite(yv)
            if lab.sum() < 2:
                raise ValueError("y needs at least two labelled (finite) values.")
            if task == "continuous":
                yv = (yv - yv[lab].mean()) / (yv[lab].std() or 1.0)
            yv = np.where(lab, yv, np.nan).astype(np.float32)

        t1 = time.perf_counter()
        sl = Y.block_slices(mods, dims)
        if scan is not None:
            for j, m in enumerate(mods):
                if scan.n_train_obs[j] < 2:
                    raise ValueError(f"Modality {m!r} is observed in fewer than 2 training samples.")
            mean, scale = scan.mean, scan.sd
            model.modalities_, model.dims_, model.mean_, model.scale_ = mods, dims, mean, scale
            # in memory: the validation rows (their own Arrays) and the training-row sample (X, obs)
            val_arrays = C.Arrays(self.standardized(model, {m: scan.val_X[:, loader.slices[m]] for m in mods},
                                                    scan.val_observed), scan.val_observed)
            val_rows = np.arange(scan.val_rows.size)
            train_rows = np.arange(obs.shape[0])  # the sample's rows (the summary reads them)
            arrays = C.Arrays(self.standardized(model, X, obs), obs)
        else:
            rng = np.random.default_rng(model.random_state)
            n_val = int(round(float(model.val_fraction) * n)) if n >= 20 else 0
            perm = rng.permutation(n)
            val_rows, train_rows = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            # Standardization from the training rows that observe each modality.
            mean = np.zeros(sum(dims.values()))
            scale = np.ones_like(mean)
            for j, m in enumerate(mods):
                rows = train_rows[obs[train_rows, j]]
                if rows.size < 2:
                    raise ValueError(f"Modality {m!r} is observed in fewer than 2 training samples.")
                xm = np.asarray(X[m][rows], dtype=np.float64)
                mean[sl[m]] = xm.mean(0)
                if model.standardize is not False:
                    sd = xm.std(0)
                    scale[sl[m]] = np.where(sd > 1e-12, sd, 1.0)
            model.modalities_, model.dims_, model.mean_, model.scale_ = mods, dims, mean, scale
            arrays = C.Arrays(self.standardized(model, X, obs), obs, yv)
            val_arrays = arrays
        timings["standardize"] = time.perf_counter() - t1

        spec = C.ModuleSpec(mods, dims, nodes, {nd: ranks[nd] for nd in nodes}, model.encoder,
                            tuple(int(h) for h in model.hidden), n_outputs=1 if yv is not None else 0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            module = C.HCLModule(spec)
        if lin is not None and model.init == "linear":
            start_from_linear(module, lin, mean, scale)
        held = val_rows if scan is None else scan.val_rows
        extra = {"val_rows": int(np.sum(held) % 1000003), "task": task, "standardize": model.standardize is not False}
        if loader is not None:
            extra["stream"] = {"buffer": loader.buffer_rows, "files": list(map(str, data.files))}
        signature = C.signature_of(spec, cfg, n, extra)
        t2 = time.perf_counter()
        res = C.train(module, val_arrays, train_rows, val_rows, cfg, dev, task=task, callback=callback,
                      checkpoint_dir=os.fspath(model.checkpoint_dir) if model.checkpoint_dir else None,
                      resume=bool(model.resume), signature=signature, stream=loader)
        timings["train"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        enc = C.raw_encodings(module, arrays, train_rows, dev, batch_size=model.chunk_size)
        C.set_output_stats(module, enc, obs[train_rows])
        scores = C.node_scores(module, enc, obs[train_rows])
        # Linear approximation of the loadings: least squares of the standardized features on the
        # scores of the nodes holding each modality (training rows that observe it).
        cols = Y.node_columns(nodes, ranks)
        W = np.zeros((sum(dims.values()), sum(ranks[nd] for nd in nodes)))
        total_var, noise = {}, {}
        if val_rows.size >= 2:
            mse = C.reconstruction_mse(module, val_arrays, val_rows, dev, batch_size=model.chunk_size)
        else:
            mse = C.reconstruction_mse(module, arrays, train_rows, dev, batch_size=model.chunk_size)
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

        model.lattice_ = lat
        model.feature_names_ = {m: list(data.feature_names[m]) for m in mods}
        model.standardized_ = model.standardize is not False
        model.preprocessing_ = (getattr(data, "report", None) or {}).get("preprocessing")
        model.noise_var_ = noise
        model.ranks_ = {nd: int(ranks[nd]) for nd in lat.nodes}
        model.nodes_ = nodes
        model.module_ = module
        model.task_ = task
        model.objective_ = float(res.best_loss)
        model.n_iter_ = int(res.n_epochs)
        model.n_epochs_ = int(res.n_epochs)
        model.best_epoch_ = int(res.best_epoch)
        model.converged_ = bool(res.converged)
        model.objective_history_ = list(res.history)
        model.val_history_ = list(res.val_history)
        model.stop_reason_ = str(getattr(res, "stop_reason", "") or "")  # patience, max_epochs or max_time
        model.train_seconds_ = float(getattr(res, "seconds", timings.get("train", 0.0)))
        model.total_var_ = total_var
        model.n_samples_ = int(n)
        model.counts_ = pairs
        model.rank_diagnostics_ = diagnostics
        model.timings_ = timings
        model.device_ = str(dev)
        model.signal_rank_ = {}
        model.W_ = W
        if callback is not None:
            callback("done", {"objective": model.objective_, "n_iter": model.n_iter_, "converged": model.converged_})
        return self

    def node_scores(self, model, data, fill: float) -> dict[Node, np.ndarray]:
        obs = np.asarray(data.observed, dtype=bool)
        arrays = C.Arrays(self.standardized(model, data.X, obs), obs)
        dev = torch.device(model.device_)
        if dev.type == "cuda" and not torch.cuda.is_available():
            dev = torch.device("cpu")
        module = model.module_.to(dev)
        try:
            enc = C.raw_encodings(module, arrays, np.arange(obs.shape[0]), dev, batch_size=model.chunk_size)
        finally:
            model.module_.to("cpu")
        return C.node_scores(model.module_, enc, obs, fill=fill)
