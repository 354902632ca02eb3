"""Dask as the scale-out engine of the linear estimator, and bulk scoring (docs/scale.md).

The linear estimator needs only sufficient statistics - per modality pair: the sums of the
shifted values, their cross-products and the counts of rows observing both modalities - which are
sums over rows. :class:`DaskSource` computes them per partition, where the data live (float32
GEMMs accumulated in float64, exactly as :func:`hcl_explore.linear.covariance_stats` does per
chunk), tree-reduces them on the cluster, and builds the same :class:`~hcl_explore.linear.CovStats`
on the client; the rank search and refinement then run on the client as for in-memory data::

    import dask.dataframe as dd
    from distributed import Client
    client = Client("tcp://scheduler:8786")          # or LocalCluster(), dask-jobqueue, Kubernetes
    frames = {"labs": dd.read_parquet("labs/"), "rna": dd.read_parquet("rna/")}
    model = hx.HCL().fit(frames)                      # HCL.fit hands Dask collections to from_dask
    transform_to_parquet(model, frames, "scores/")    # scores, partition by partition

Dask is an optional extra (``pip install hcl-explore[dask]``): this module imports without it, and
only the functions that need Dask raise a clear ImportError. The bulk-scoring helpers for one
machine (:func:`score_parquet`, used by ``python -m hcl_explore score``) need no Dask.

Row folds (``folds=True``): as in-process, fold 0 holds the rows whose *global* row index is even
and fold 1 the odd ones. Each partition accumulates its rows by partition-local parity and reports
its row count; the reduction, which keeps partition order, swaps a partition's two halves when the
rows before it are odd in number. The folds are therefore the in-process folds exactly.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .data import MultimodalData, parquet_files
from .layout import block_slices

if TYPE_CHECKING:  # the workers unpickle this module's tasks: numpy and pandas only, never torch
    from . import linear as L

INSTALL_HINT = "pip install hcl-explore[dask]"
#: ``load_modalities``' default: a row missing more than this share of a modality's features counts
#: as the modality missing (the bulk scorer applies a model's preprocessing with it).
MAX_MISSING_ROW = 0.5


def _dask():
    """(dask, dask.dataframe), or an ImportError that says how to install them."""
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as exc:
        raise ImportError(
            f"Dask is not installed: the scale-out engine needs it ({INSTALL_HINT}, which installs "
            "dask[dataframe] and distributed)."
        ) from exc
    return dask, dd


def _is_dask(obj) -> bool:
    return type(obj).__module__.split(".")[0] == "dask"


# ============================================================================ sources
def from_dask(obj, column_map: Mapping[str, Sequence[str]] | None = None, id_column: str | None = None) -> "DaskSource":
    """A :class:`DaskSource` from Dask DataFrames.

    Parameters
    ----------
    obj : dask DataFrame, or mapping modality -> dask DataFrame
        One frame per modality: the frames are aligned on their index (on their divisions when
        all are known, else partition by partition, which needs the same number of partitions);
        a row absent from a frame, or all-null in it, lacks that modality. All of a frame's columns
        are that modality's features (except ``id_column``).
        One frame: ``column_map`` says which columns form each modality.
    column_map : mapping modality -> list of columns, for one frame
    id_column : str, optional
        A column of sample ids; by default the index holds them.
    """
    _dask()
    if isinstance(obj, Mapping):
        if column_map is not None:
            raise ValueError("column_map is for one frame holding every modality; with one frame per modality "
                             "each frame's columns are its features.")
        if not obj:
            raise ValueError("from_dask needs at least one modality.")
        frames = {}
        for m, df in obj.items():
            if not _is_dask(df) or not hasattr(df, "columns"):
                raise ValueError(f"Modality {m!r}: expected a dask DataFrame, got {type(df).__name__}.")
            if "+" in str(m) or not str(m).strip():
                raise ValueError(f"Modality name {m!r} is not allowed (it must be non-empty and contain no '+').")
            if id_column is not None:
                if id_column not in df.columns:
                    raise ValueError(f"Modality {m!r}: no id column {id_column!r}.")
                df = df.set_index(id_column)
            frames[str(m)] = df
        return DaskSource._from_frames(frames)
    if not _is_dask(obj) or not hasattr(obj, "columns"):
        raise ValueError(f"Expected a dask DataFrame (or a mapping modality -> dask DataFrame), got {type(obj).__name__}.")
    if column_map is None:
        raise ValueError("One dask DataFrame needs column_map={modality: [columns]} (or pass one frame per modality).")
    return DaskSource(obj, column_map, id_column=id_column)


class DaskSource:
    """A data source on Dask: ``HCL.fit`` uses its :meth:`covariance_stats` (per partition,
    tree-reduced) instead of streaming chunks through one process.

    Attributes
    ----------
    frame : dask DataFrame holding every modality's columns
    modalities : list of str
    feature_names : dict modality -> list of str (the source column names)
    columns : dict modality -> list of the frame's columns (in feature order)
    n_samples : int (computed with ``len(frame)`` on first use unless known from metadata)
    client : distributed.Client or None
        Where :meth:`covariance_stats` runs (default: the active default client, else Dask's
        local scheduler); :meth:`cancel` cancels what it submitted there.
    """

    def __init__(self, frame, column_map: Mapping[str, Sequence[str]], id_column: str | None = None,
                 feature_names: Mapping[str, Sequence[str]] | None = None, raw: Mapping[str, Mapping[str, str]] | None = None,
                 n_samples: int | None = None, client: Any = None):
        _dask()
        if not column_map:
            raise ValueError("DaskSource needs at least one modality (column_map={modality: [columns]}).")
        cols = set(map(str, frame.columns))
        self.frame = frame
        self.modalities: list[str] = [str(m) for m in column_map]
        self.columns: dict[str, list[str]] = {}
        for m, cs in column_map.items():
            cs = [str(c) for c in cs]
            if not cs:
                raise ValueError(f"Modality {m!r} has no columns.")
            missing = [c for c in cs if c not in cols]
            if missing:
                raise ValueError(f"Modality {m!r}: column {missing[0]!r} not in the frame ({len(missing)} missing).")
            dt = frame[cs].dtypes
            bad = [c for c in cs if not (pd.api.types.is_numeric_dtype(dt[c]) or pd.api.types.is_bool_dtype(dt[c]))]
            if bad:
                raise ValueError(f"Modality {m!r}: column {bad[0]!r} is not numeric ({dt[bad[0]]}).")
            self.columns[str(m)] = cs
        if id_column is not None and id_column not in cols:
            raise ValueError(f"No id column {id_column!r} in the frame.")
        self.id_column = id_column
        self.feature_names: dict[str, list[str]] = {m: list((feature_names or {}).get(m) or self.columns[m])
                                                    for m in self.modalities}
        # Modality -> {source column name: frame column}; None: every column under its own name.
        self._raw = None if raw is None else {m: dict(v) for m, v in raw.items()}
        self._n = n_samples
        self.report: dict = {}
        #: The ``distributed.Client`` the statistics run on (None: the default client, if any, else
        #: Dask's local scheduler). With a client, progress is reported per partition.
        self.client = client
        self._futures: list = []

    @classmethod
    def _from_frames(cls, frames: Mapping[str, Any]) -> "DaskSource":
        _, dd = _dask()
        renamed, cmap, names, raw = [], {}, {}, {}
        for i, (m, df) in enumerate(frames.items()):
            own = [str(c) for c in df.columns]
            inner = {c: f"{i}\x1f{c}" for c in own}  # unique across frames, never a user's name
            renamed.append(df.rename(columns=inner))
            cmap[m] = [inner[c] for c in own]
            names[m] = own
            raw[m] = inner
        if len(renamed) == 1:
            frame = renamed[0]
        else:
            known = all(df.known_divisions for df in renamed)
            if not known and len({df.npartitions for df in renamed}) > 1:
                raise ValueError(
                    "The frames have unknown divisions and different numbers of partitions, so their rows cannot be "
                    "aligned: set_index on the sample id (sorted), or repartition them alike."
                )
            with warnings.catch_warnings():
                # Unknown divisions: aligned partition by partition (documented), which dask warns about.
                warnings.simplefilter("ignore", UserWarning)
                frame = dd.concat(renamed, axis=1, join="outer")
        return cls(frame, cmap, feature_names=names, raw=raw)

    @classmethod
    def from_parquet(cls, path: str, column_map: Mapping[str, Sequence[str]], id_column: str | None = None,
                     **read_parquet_kwargs) -> "DaskSource":
        """A partitioned Parquet dataset (a folder of ``.parquet`` files, or one file), read with
        ``dask.dataframe.read_parquet`` in the row order of :class:`hcl_explore.ParquetSource`
        (sorted file paths), so that both give the same statistics and folds. ``path`` may be any
        location Dask reads (``s3://...`` etc.: then Dask lists the files)."""
        _, dd = _dask()
        need = list(dict.fromkeys([c for cs in column_map.values() for c in cs] + ([id_column] if id_column else [])))
        local = "://" not in str(path)
        files = parquet_files(str(path)) if local else str(path)
        n = None
        if local:
            import pyarrow.parquet as pq

            n = sum(int(pq.ParquetFile(f).metadata.num_rows) for f in files)
        frame = dd.read_parquet(files, columns=need, **read_parquet_kwargs)
        return cls(frame, column_map, id_column=id_column, n_samples=n)

    # ------------------------------------------------------------------ access
    @property
    def dims(self) -> dict[str, int]:
        return {m: len(self.columns[m]) for m in self.modalities}

    @property
    def npartitions(self) -> int:
        return int(self.frame.npartitions)

    @property
    def n_samples(self) -> int:
        if self._n is None:
            self._n = int(len(self.frame))
        return self._n

    def __repr__(self) -> str:
        dims = ", ".join(f"{m}: {d}" for m, d in self.dims.items())
        return f"DaskSource({self.npartitions} partitions; {dims})"

    def _partitions(self, ids: bool = False) -> list:
        cols = [c for m in self.modalities for c in self.columns[m]]
        keep = list(dict.fromkeys(cols + ([self.id_column] if ids and self.id_column else [])))
        return list(self.frame[keep].to_delayed())

    def iter_chunks(self, chunk_size: int = 16384):
        """Chunks streamed to this process, one partition computed at a time (for consumers of
        ``iter_chunks`` such as the contrastive estimator; the linear fit uses
        :meth:`covariance_stats`, which keeps the data on the workers)."""
        from .data import Chunk

        layout = [(m, len(self.columns[m])) for m in self.modalities]
        cols = [c for m in self.modalities for c in self.columns[m]]
        sl = block_slices(self.modalities, self.dims)
        for part in self._partitions(ids=True):
            pdf = part.compute()
            if len(pdf) == 0:
                continue
            A = _values(pdf, cols)
            obs = _observed(A, layout)
            ids = np.asarray(pdf[self.id_column] if self.id_column else pdf.index)
            for s0 in range(0, len(pdf), int(chunk_size)):
                s1 = s0 + int(chunk_size)
                yield Chunk({m: A[s0:s1, sl[m]] for m in self.modalities}, obs[s0:s1], ids[s0:s1])

    # ------------------------------------------------------------------ statistics
    def covariance_stats(self, chunk_size: int = 16384, device=None, callback: L.Callback | None = None,
                         folds: bool = False) -> L.CovStats:
        """:func:`hcl_explore.linear.covariance_stats` computed per partition and tree-reduced.

        Every partition is cut into chunks of ``chunk_size`` rows accumulated as in-process (a
        float32 GEMM into float64 sums, around one shift common to all partitions: the first
        chunk's means, as in-process), so the statistics equal the in-process pass to float
        rounding. ``device`` is ignored: partitions are reduced on the workers' CPUs. Runs on
        :attr:`client`, else the active default ``distributed.Client``, else Dask's local scheduler.

        ``callback`` gets ``("covariance", {"rows", "n_samples", "partitions", "partitions_done"})``:
        on a distributed client after every partition (``rows``: the rows of the partitions done),
        and once the reduction is done. An exception in it (how a run is cancelled), or any other
        interruption, cancels the futures still outstanding on the cluster before it propagates.
        """
        dask, _ = _dask()
        from dask import delayed

        mods, cols = self.modalities, [c for m in self.modalities for c in self.columns[m]]
        dims = self.dims
        layout = [(m, len(self.columns[m])) for m in mods]
        parts = self._partitions()
        if not parts:
            raise ValueError("No samples to fit (the frame has no partitions).")
        chunk_size = int(chunk_size)
        # The common shift: the first chunk's means (the first non-empty of the first partitions).
        shift = delayed(_shift_from, pure=True)(cols, layout, chunk_size, *parts[:4])
        n_parts = 2 if folds else 1
        names = [c for m in mods for c in self.feature_names[m]]
        sums = [delayed(_partition_sums, pure=True)(p, cols, layout, shift, chunk_size, n_parts, i, names)
                for i, p in enumerate(parts)]
        part_sums = list(sums)
        while len(sums) > 1:  # an order-preserving binary tree
            nxt = [delayed(_merge, pure=True)(sums[k], sums[k + 1]) for k in range(0, len(sums) - 1, 2)]
            if len(sums) % 2:
                nxt.append(sums[-1])
            sums = nxt
        client = self.client if self.client is not None else _default_client()
        if client is None:
            total, shift_v = dask.compute(sums[0], shift)
        else:
            total, shift_v = self._compute_counted(client, part_sums, sums[0], shift, callback)
        n_total = int(total["n"])
        self._n = n_total
        if shift_v is None or n_total == 0:
            raise ValueError("No samples to fit.")
        if callback is not None:
            callback("covariance", {"rows": n_total, "n_samples": n_total, "partitions": len(parts),
                                    "partitions_done": len(parts)})
        Gs, Ns = total["G"], total["N"]
        if n_parts == 1:
            return stats_from_sums(mods, dims, shift_v, Gs[0], Ns[0], n_total, strict=True)
        out = stats_from_sums(mods, dims, shift_v, Gs[0] + Gs[1], Ns[0] + Ns[1], n_total, strict=True)
        out.folds = [stats_from_sums(mods, dims, shift_v, Gs[f], Ns[f], (n_total + 1 - f) // 2, strict=False)
                     for f in range(2)]
        return out

    def _compute_counted(self, client, part_sums: list, root, shift, callback) -> tuple[dict, Any]:
        """(the reduced sums, the shift) computed on ``client`` as futures, counting partitions as
        they finish; on any exception the outstanding futures are cancelled first."""
        from dask import delayed
        from distributed import as_completed

        # One small marker per partition (its row count): the client watches these, never holds a
        # partition's (D + M)^2 sums, which the scheduler frees once the merge above it has run.
        markers = [delayed(_rows_of, pure=True)(s) for s in part_sums]
        futs = client.compute([root, shift, *markers])
        self._futures = list(futs)
        n_known = self._n
        try:
            done = rows = 0
            for f in as_completed(futs[2:], loop=client.loop):
                rows += int(f.result())  # a partition's error (e.g. a missing cell) is raised here
                done += 1
                if callback is not None:
                    callback("covariance", {"rows": rows, "n_samples": n_known, "partitions": len(part_sums),
                                            "partitions_done": done})
            total, shift_v = client.gather(futs[:2])
        except BaseException:
            self.cancel()
            raise
        self._futures = []
        return total, shift_v

    def cancel(self) -> int:
        """Cancel this source's futures still outstanding on its client (a cancelled run's
        partitions stop being scheduled). Returns how many were outstanding."""
        futs, self._futures = [f for f in self._futures if not f.done()], []
        if futs:
            client = futs[0].client
            try:
                client.cancel(futs)
            except Exception:  # noqa: BLE001  a closed or lost client has nothing left to cancel
                pass
        return len(futs)


def connect(address: str, timeout: float = 20.0):
    """A ``distributed.Client`` connected to the scheduler at ``address`` (not made the default
    client). Errors say what to do: Dask not installed (ImportError with the install command), or
    the scheduler not reachable (ValueError naming the address)."""
    _dask()
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"distributed is not installed: a Dask scheduler needs it ({INSTALL_HINT}).") from exc
    address = str(address).strip()
    if not address or any(c.isspace() for c in address):
        raise ValueError(f"Not a Dask scheduler address: {address!r} (expected e.g. tcp://host:8786).")
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"Cannot reach the Dask scheduler at {address} within {timeout:.0f} s ({exc}); check the "
                         "address and that the scheduler is running.") from None


def _default_client():
    """The active default ``distributed.Client``, or None (no distributed, or no client)."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _rows_of(sums: dict) -> int:
    return int(sums["n"])


#: Rows per partition when :func:`from_data` cuts in-memory data for a cluster.
PARTITION_ROWS = 50_000


def from_data(data: MultimodalData, client: Any = None, npartitions: int | None = None) -> DaskSource:
    """A :class:`DaskSource` holding in-memory data, cut into partitions for a cluster (the app's
    runs that target a scheduler: the dataset is loaded and checked as for any run, then its
    covariance pass runs on the cluster). Rows lacking a modality are all-NaN in its columns.
    ``npartitions``: default two per worker of ``client``, and at most :data:`PARTITION_ROWS` rows
    each. The source keeps the data's feature names and its ``report`` (the preprocessing the
    fitted model records)."""
    _, dd = _dask()
    n = int(data.n_samples)
    if npartitions is None:
        workers = 1
        if client is not None:
            try:
                workers = max(1, len(client.scheduler_info().get("workers", {})))
            except Exception:  # noqa: BLE001  a scheduler that does not say: one
                workers = 1
        npartitions = max(2 * workers, -(-n // PARTITION_ROWS))
    npartitions = int(max(1, min(int(npartitions), n)))
    blocks, cmap = [], {}
    for j, m in enumerate(data.modalities):
        X = np.asarray(data.X[m], dtype=np.float64)
        obs = np.asarray(data.observed)[:, j]
        if not obs.all():
            X = X.copy()
            X[~obs] = np.nan
        cmap[m] = [f"{j}\x1f{k}" for k in range(X.shape[1])]  # unique, never a user's name
        blocks.append(X)
    frame = pd.DataFrame(np.hstack(blocks), columns=[c for m in data.modalities for c in cmap[m]])
    if client is None:
        ddf = dd.from_pandas(frame, npartitions=npartitions, sort=False)
    else:
        # Sent to the workers directly (not inside the task graph, through the scheduler): at
        # 100,000 x 150 this took the pass on a 2-process LocalCluster from 30 s to a few.
        bounds = np.linspace(0, n, npartitions + 1).astype(int)
        parts = client.scatter([frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
        ddf = dd.from_delayed(parts, meta=frame.iloc[:0], verify_meta=False)
    src = DaskSource(ddf, cmap, feature_names=data.feature_names, n_samples=n, client=client)
    src.report = dict(getattr(data, "report", None) or {})
    return src


# ============================================================================ per-partition work
def _values(pdf: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    """The partition's feature block (c, D): float32 when every column is float32 (as a Parquet
    file of float32 columns gives), else float64; nulls are NaN."""
    sub = pdf[list(cols)]
    f32 = all(dt == np.float32 for dt in sub.dtypes)
    return sub.to_numpy(dtype=np.float32 if f32 else np.float64, na_value=np.nan)


def _observed(A: np.ndarray, layout) -> np.ndarray:
    obs = np.empty((A.shape[0], len(layout)), dtype=bool)
    s = 0
    for j, (_, d) in enumerate(layout):
        np.logical_not(np.isnan(A[:, s : s + d]).all(axis=1), out=obs[:, j])
        s += d
    return obs


def _shift_from(cols, layout, chunk_size: int, *pdfs) -> np.ndarray | None:
    """The first non-empty partition's first chunk means over observed rows, float32-representable
    (``linear.covariance_stats``' shift)."""
    for pdf in pdfs:
        if len(pdf) == 0:
            continue
        A = _values(pdf.iloc[:chunk_size], cols)
        obs = _observed(A, layout)
        shift = np.zeros(A.shape[1])
        s = 0
        for j, (_, d) in enumerate(layout):
            x = A[:, s : s + d]
            rows = x if obs[:, j].all() else x[obs[:, j]]
            if rows.shape[0]:
                if rows.dtype == np.float32:
                    mu = (np.ones(rows.shape[0], dtype=np.float32) @ rows).astype(np.float64) / rows.shape[0]
                else:
                    mu = rows.mean(axis=0, dtype=np.float64)
                if not np.isfinite(mu).all():
                    with np.errstate(all="ignore"):
                        mu = np.nan_to_num(np.nanmean(np.asarray(rows, dtype=np.float64), axis=0))
                shift[s : s + d] = mu.astype(np.float32)
            s += d
        return shift
    return None


def _partition_sums(pdf: pd.DataFrame, cols, layout, shift, chunk_size: int, n_parts: int, index: int,
                    names: Sequence[str] | None = None) -> dict:
    """``G`` (per fold: [Xc | O]^T [Xc | O], float64) and ``N`` (per fold: O^T O) of one partition,
    accumulated chunk by chunk as ``linear.covariance_stats`` does; folds by partition-local row
    parity. ``n``: the partition's rows."""
    M = len(layout)
    D = sum(d for _, d in layout)
    Daug = D + M
    Gs = [np.zeros((Daug, Daug)) for _ in range(n_parts)]
    Ns = [np.zeros((M, M), dtype=np.int64) for _ in range(n_parts)]
    n = len(pdf)
    if n == 0 or shift is None:
        return {"G": Gs, "N": Ns, "n": n}
    shift32 = shift.astype(np.float32)
    buf = None
    done = 0
    for start in range(0, n, chunk_size):
        A = _values(pdf.iloc[start : start + chunk_size], cols)
        obs_all = _observed(A, layout)
        c_all = A.shape[0]
        for f in range(n_parts):
            sel = slice(None) if n_parts == 1 else slice((f - done) % 2, None, 2)
            obs = obs_all[sel]
            c = obs.shape[0]
            if c == 0:
                continue
            if buf is None or buf.shape[0] < c:
                buf = np.empty((max(c, c_all), Daug), dtype=np.float32)
            Z = buf[:c]
            Xc = Z[:, :D]
            np.subtract(A[sel], shift32 if A.dtype == np.float32 else shift, out=Xc, casting="unsafe")
            s = 0
            for j, (_, d) in enumerate(layout):
                if not obs[:, j].all():
                    Xc[~obs[:, j], s : s + d] = 0.0
                s += d
            Z[:, D:] = obs
            Gc = Z.T @ Z
            if np.isnan(Gc[:D, D:]).any():
                _raise_nan(Xc, obs, layout, names or cols, pdf.index[start:][sel], index)
            Gs[f] += Gc
            ob = obs.astype(np.int64)
            Ns[f] += ob.T @ ob
        done += c_all
    return {"G": Gs, "N": Ns, "n": n}


def _raise_nan(Xc, obs, layout, cols, index_values, part: int) -> None:
    r, col = np.argwhere(np.isnan(Xc))[0]
    s = 0
    for m, d in layout:
        if s <= col < s + d:
            break
        s += d
    raise ValueError(
        f"Modality {m!r}: missing cell in column {cols[col]!r} of an observed row (partition {part}, index "
        f"{index_values[r]!r}); impute it or mark the whole row missing."
    )


def _merge(a: dict, b: dict) -> dict:
    """The sums of two consecutive row ranges. ``b``'s folds are by its own row parity: when ``a``
    has an odd number of rows they are swapped, so the result's folds are by parity from ``a``'s
    first row (the global parity at the root)."""
    if len(a["G"]) == 1:
        return {"G": [a["G"][0] + b["G"][0]], "N": [a["N"][0] + b["N"][0]], "n": a["n"] + b["n"]}
    order = (0, 1) if a["n"] % 2 == 0 else (1, 0)
    return {"G": [a["G"][f] + b["G"][order[f]] for f in range(2)],
            "N": [a["N"][f] + b["N"][order[f]] for f in range(2)], "n": a["n"] + b["n"]}


def stats_from_sums(*args: Any, **kwargs: Any) -> "L.CovStats":
    """The sums' finalization: :func:`hcl_explore.linear.stats_from_sums` (pairwise-complete means
    and covariances), imported on the client only when used."""
    from .linear import stats_from_sums as finish

    return finish(*args, **kwargs)


# ============================================================================ bulk scoring
def score_columns(model) -> list[str]:
    """The scores' column names: ``"<node label>:<k>"`` (k from 1) per present node, in the order
    of ``model.nodes_`` (the app's scores.csv names)."""
    from .lattice import node_label

    model._check_fitted()
    return [f"{node_label(n)}:{k + 1}" for n in model.nodes_ for k in range(int(model.ranks_[n]))]


def model_columns(model) -> dict[str, list[str]]:
    """The source columns each modality's features are computed from: the columns of the model's
    preprocessing (``load_modalities``' report) where it has one, else its feature names."""
    pre = getattr(model, "preprocessing_", None) or {}
    out = {}
    for m in model.modalities_:
        spec = (pre.get(m) or {}).get("columns")
        out[m] = list(dict.fromkeys(e["source"] for e in spec)) if spec else list(model.feature_names_[m])
    return out


def _numeric(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        v = pd.to_numeric(s.astype("string").str.strip(), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isinf(v), np.nan, v)


def prepare_frame(model, pdf: pd.DataFrame, raw: Mapping[str, Mapping[str, str]] | None = None
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A raw table's rows as the model's inputs: ``(X, observed)``.

    With the model's preprocessing (a model fitted on ``load_modalities`` data): its columns and
    one-hot levels, rows missing more than half a modality's features lack it, other missing
    cells get the recorded means - as ``load_modalities(..., preprocessing=model.preprocessing_)``
    does. Without: the feature columns as they are; an all-missing row lacks the modality, a
    partly missing one is an error. ``raw``: per modality, source column -> column of ``pdf``.
    """
    pre = getattr(model, "preprocessing_", None) or {}
    n = len(pdf)
    X: dict[str, np.ndarray] = {}
    obs = np.zeros((n, len(model.modalities_)), dtype=bool)

    def column(m: str, c: str) -> pd.Series:
        name = raw[m].get(c) if raw is not None else c
        if name is None or name not in pdf.columns:
            raise ValueError(f"Modality {m!r}: column {c!r}, which the model uses, is not in the data.")
        return pdf[name]

    for j, m in enumerate(model.modalities_):
        spec = (pre.get(m) or {}).get("columns")
        if spec:
            A = np.empty((n, len(spec)))
            for k, e in enumerate(spec):
                s = column(m, e["source"])
                if e["kind"] == "numeric":
                    A[:, k] = _numeric(s)
                else:
                    t = s.astype("string").str.strip()
                    t = t.mask(t == "")
                    A[:, k] = (t == e["level"]).astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
            nan = np.isnan(A)
            present = np.count_nonzero(nan, axis=1) <= MAX_MISSING_ROW * A.shape[1]
            fill = nan & present[:, None]
            if fill.any():
                mu = np.array([float(e.get("mean", 0.0)) for e in spec])
                np.copyto(A, np.broadcast_to(mu, A.shape), where=fill)
            A[~present] = np.nan
        else:
            A = np.column_stack([_numeric(column(m, c)) for c in model.feature_names_[m]])
            nan = np.isnan(A)
            present = ~nan.all(axis=1)
            partial = np.flatnonzero(present & nan.any(axis=1))
            if partial.size:
                i = int(partial[0])
                c = model.feature_names_[m][int(np.flatnonzero(nan[i])[0])]
                raise ValueError(f"Modality {m!r}: row {pdf.index[i]!r} misses column {c!r} but has others "
                                 f"({partial.size} such rows); the model has no imputation recorded.")
        X[m] = A
        obs[:, j] = present
    return X, obs


def score_frame(model, pdf: pd.DataFrame, raw=None, ids=None, id_name: str = "id", scale: str = "data",
                fill: float = 0.0) -> pd.DataFrame:
    """``model.transform`` scores of a raw table's rows (see :func:`prepare_frame`): the id column
    then one column per factor (:func:`score_columns`); a row with no modality gets NaN."""
    X, obs = prepare_frame(model, pdf, raw)
    cols = score_columns(model)
    out = np.full((len(pdf), len(cols)), np.nan)
    keep = obs.any(axis=1)
    if keep.any():
        rows = slice(None) if keep.all() else keep
        data = MultimodalData({m: X[m][rows] for m in model.modalities_}, feature_names=model.feature_names_,
                              _observed=obs[rows])
        Z = model.transform(data, fill=fill, scale=scale)
        out[rows] = np.hstack([np.asarray(Z[nd], dtype=np.float64) for nd in model.nodes_])
    df = pd.DataFrame(out, columns=cols)
    df.insert(0, id_name, np.asarray(pdf.index if ids is None else ids))
    return df


def _id_name(model, columns) -> str | None:
    """The id column of the model's preprocessing, when every modality used the same one and the
    table has it."""
    pre = getattr(model, "preprocessing_", None) or {}
    names = {(pre.get(m) or {}).get("id_column") for m in model.modalities_}
    names.discard(None)
    if len(names) == 1:
        name = names.pop()
        return name if name in columns else None
    return None


def score_parquet(model, path: str, out_path: str, id_column: str | None = None, batch_size: int = 16384,
                  scale: str = "data", fill: float = 0.0, callback: Callable[[int], None] | None = None) -> int:
    """Score a Parquet file or dataset folder (every modality's columns side by side) on one
    machine, streamed: one batch of ``batch_size`` rows at a time, written to the Parquet file
    ``out_path`` as it goes (memory: one decoded row group - Arrow decodes a row group at a time -
    plus one batch's scoring, about 80 bytes per cell). Values are read as they are stored
    (float64 stays float64), so the scores equal ``transform`` of the same rows in memory. Returns
    the rows written.

    ``id_column``: default the model's preprocessing's id column when the file has it; without
    one the ids are the row numbers (column ``row``). No Dask needed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = parquet_files(str(path))
    need = [c for cs in model_columns(model).values() for c in cs]
    schema = pq.ParquetFile(files[0]).schema_arrow
    if id_column is None:
        id_column = _id_name(model, schema.names)
    elif schema.get_field_index(id_column) < 0:
        raise ValueError(f"{files[0]}: no id column {id_column!r}.")
    for f in files:
        names = set(pq.ParquetFile(f).schema_arrow.names)
        missing = [c for c in need if c not in names]
        if missing:
            raise ValueError(f"{f}: column {missing[0]!r}, which the model uses, is not in the file "
                             f"({len(missing)} missing).")
    read = list(dict.fromkeys(need + ([id_column] if id_column else [])))
    writer = None
    done = 0
    tmp = f"{out_path}.partial"
    try:
        for f in files:
            # Buffered reads: column chunks are streamed through 4 MiB buffers, not read whole
            # next to their decoded copy (that doubled the peak on a one-row-group file).
            pf = pq.ParquetFile(f, pre_buffer=False, buffer_size=1 << 22)
            for batch in pf.iter_batches(batch_size=batch_size, columns=read):
                pdf = batch.to_pandas()
                ids = pdf[id_column].to_numpy() if id_column else np.arange(done, done + len(pdf))
                out = score_frame(model, pdf, ids=ids, id_name=id_column or "row", scale=scale, fill=fill)
                table = pa.Table.from_pandas(out, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
                done += len(pdf)
                if callback is not None:
                    callback(done)
        if writer is None:  # no rows: an empty table with the columns
            empty = score_frame(model, pd.DataFrame({c: pd.Series(dtype=float) for c in read}), ids=np.array([]),
                                id_name=id_column or "row")
            writer = pq.ParquetWriter(tmp, pa.Table.from_pandas(empty, preserve_index=False).schema)
        writer.close()
        writer = None
        os.replace(tmp, out_path)
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return done


def score_data(model, data: MultimodalData, out_path: str, chunk_size: int = 16384, id_name: str = "id",
               scale: str = "data", fill: float = 0.0) -> int:
    """Score an in-memory :class:`MultimodalData` (already cleaned, e.g. loaded with the model's
    preprocessing) chunk by chunk into the Parquet file ``out_path``. Returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = score_columns(model)
    writer = None
    tmp = f"{out_path}.partial"
    try:
        for start in range(0, data.n_samples, chunk_size):
            rows = np.arange(start, min(start + chunk_size, data.n_samples))
            obs = data.observed[rows]
            out = np.full((len(rows), len(cols)), np.nan)
            keep = obs.any(axis=1)
            Z = model.transform(data.subset(rows[keep]), fill=fill, scale=scale)
            out[keep] = np.hstack([np.asarray(Z[nd], dtype=np.float64) for nd in model.nodes_])
            df = pd.DataFrame(out, columns=cols)
            df.insert(0, id_name, np.asarray(data.ids[rows]))
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
        writer.close()
        writer = None
        os.replace(tmp, out_path)
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return data.n_samples


def _score_partition(pdf: pd.DataFrame, model, raw, id_column, id_name, scale, fill) -> pd.DataFrame:
    ids = pdf[id_column].to_numpy() if id_column else None
    return score_frame(model, pdf, raw=raw, ids=ids, id_name=id_name, scale=scale, fill=fill)


def transform_to_parquet(model, source, out_path: str, scale: str = "data", fill: float = 0.0,
                         id_column: str | None = None, **to_parquet_kwargs) -> str:
    """Bulk scoring on Dask: ``model.transform`` of every row, partition by partition on the
    workers, with the model's preprocessing (:func:`prepare_frame`), written as a Parquet dataset
    (one file per partition) at ``out_path``.

    ``source``: a :class:`DaskSource`, a dask DataFrame (one frame with every modality's columns)
    or a mapping modality -> dask DataFrame (aligned as :func:`from_dask` does), or the path of a
    Parquet file or dataset. Columns: the id (``id_column``, else the index, named after it or
    ``id``), then :func:`score_columns`. Returns ``out_path``.
    """
    dask, dd = _dask()
    from dask import delayed

    model._check_fitted()
    need = model_columns(model)
    if isinstance(source, (str, os.PathLike)):
        p = str(source)
        files = parquet_files(p) if "://" not in p else p
        cols = list(dict.fromkeys([c for cs in need.values() for c in cs] + ([id_column] if id_column else [])))
        frame, raw = dd.read_parquet(files, columns=cols), None
        if id_column is None:
            id_column = _id_name(model, cols)
    elif isinstance(source, DaskSource):
        frame, raw = source.frame, source._raw
        id_column = id_column or source.id_column
    elif isinstance(source, Mapping):
        if id_column is not None:
            source = {m: df.set_index(id_column) for m, df in source.items()}
            id_column = None
        src = DaskSource._from_frames(source) if all(_is_dask(v) for v in source.values()) else None
        if src is None:
            raise ValueError("Expected a mapping modality -> dask DataFrame.")
        frame, raw = src.frame, src._raw
    elif _is_dask(source):
        frame, raw = source, None
    else:
        raise ValueError(f"Cannot score a {type(source).__name__} on Dask: give a DaskSource, dask DataFrame(s) or a "
                         "Parquet path (score_data / score_parquet score on one machine).")
    id_name = id_column or (frame.index.name if frame.index.name is not None else "id")
    meta = _meta_frame(model, frame, id_column, id_name)
    m = delayed(model, pure=True)
    parts = [delayed(_score_partition, pure=True)(p, m, raw, id_column, id_name, scale, fill) for p in frame.to_delayed()]
    out = dd.from_delayed(parts, meta=meta, verify_meta=False)
    out.to_parquet(str(out_path), write_index=False, **to_parquet_kwargs)
    return str(out_path)


def _meta_frame(model, frame, id_column, id_name) -> pd.DataFrame:
    dt = frame._meta[id_column].dtype if id_column else frame._meta.index.dtype
    meta = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in score_columns(model)})
    meta.insert(0, id_name, pd.Series(dtype=dt))
    return meta
