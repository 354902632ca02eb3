"""Multimodal data: named modality tables aligned on sample ids, with a per-sample observed mask.

A sample may lack whole modalities. In arrays this is an all-NaN row; ``observed[i, m]`` is False
then. Rows that are partly NaN inside an observed modality are not allowed here (the loaders of
``hcl_explore.io`` impute them and report it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd


@dataclass
class Chunk:
    """A block of rows from a data source.

    ``X[m]`` is ``(c, d_m)`` float array with NaN rows where modality m is missing;
    ``observed`` is ``(c, M)`` bool.
    """

    X: dict[str, np.ndarray]
    observed: np.ndarray


class MultimodalData:
    """Named modality tables aligned on sample ids.

    Attributes
    ----------
    modalities : list of str
        Modality names in order.
    ids : ndarray of shape (n_samples,)
        Sample ids (unique).
    n_samples : int
    observed : ndarray of bool, shape (n_samples, M)
        Which modalities each sample has.
    feature_names : dict of str -> list of str
    report : dict
        What loading kept, dropped and imputed (filled by the file loaders).
    """

    def __init__(
        self,
        X: Mapping[str, np.ndarray],
        ids: Sequence | None = None,
        feature_names: Mapping[str, Sequence[str]] | None = None,
        report: dict | None = None,
        _observed: np.ndarray | None = None,
    ):
        """``_observed`` is for loaders that already know which rows are present and guarantee
        rows are either complete or all-NaN, with no infinities (skips a full scan)."""
        if len(X) == 0:
            raise ValueError("MultimodalData needs at least one modality.")
        self.modalities: list[str] = [str(m) for m in X]
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"Duplicate modality names: {self.modalities}.")
        arrays: dict[str, np.ndarray] = {}
        n = None
        for name, arr in X.items():
            a = np.asarray(arr)
            if a.ndim == 1:
                a = a[:, None]
            if a.ndim != 2:
                raise ValueError(f"Modality {name!r}: expected a 2-D array (samples x features), got shape {a.shape}.")
            if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
                raise ValueError(f"Modality {name!r}: values must be numeric, got dtype {a.dtype}.")
            if not np.issubdtype(a.dtype, np.floating):
                a = a.astype(np.float64)
            if a.shape[1] == 0:
                raise ValueError(f"Modality {name!r} has no features.")
            if n is None:
                n = a.shape[0]
            elif a.shape[0] != n:
                raise ValueError(
                    f"Modality {name!r} has {a.shape[0]} rows but {self.modalities[0]!r} has {n}; "
                    "rows must be aligned samples."
                )
            if _observed is None and np.isinf(a).any():
                r, c = np.argwhere(np.isinf(a))[0]
                raise ValueError(f"Modality {name!r}: infinite value at row {r}, column {c}.")
            arrays[str(name)] = a
        assert n is not None
        if n == 0:
            raise ValueError("MultimodalData needs at least one sample.")
        self.X: dict[str, np.ndarray] = arrays
        self.n_samples: int = int(n)

        obs = np.zeros((n, len(self.modalities)), dtype=bool)
        for j, m in enumerate(self.modalities if _observed is None else []):
            nan = np.isnan(arrays[m])
            row_all = nan.all(axis=1)
            row_any = nan.any(axis=1)
            partial = np.flatnonzero(row_any & ~row_all)
            if partial.size:
                i = int(partial[0])
                col = int(np.flatnonzero(nan[i])[0])
                raise ValueError(
                    f"Modality {m!r}: row {i} has missing cells (column {col}) but is not entirely "
                    f"missing ({partial.size} such rows). Impute them first, or load the file with "
                    "hcl_explore.load_modalities, which imputes and reports."
                )
            obs[:, j] = ~row_all
        if _observed is not None:
            obs = np.asarray(_observed, dtype=bool).reshape(n, len(self.modalities))
        empty = np.flatnonzero(~obs.any(axis=1))
        if empty.size:
            raise ValueError(
                f"{empty.size} sample(s) have no modality at all (first row: {int(empty[0])}); drop them."
            )
        self.observed: np.ndarray = obs

        if ids is None:
            ids_arr = np.arange(n)
        else:
            ids_arr = np.asarray(ids)
            if ids_arr.shape != (n,):
                raise ValueError(f"ids has shape {ids_arr.shape}, expected ({n},).")
            s = pd.Series(ids_arr)
            dup = s[s.duplicated(keep=False)]
            if len(dup):
                raise ValueError(f"Duplicate sample ids, e.g. {list(pd.unique(dup))[:5]}.")
        self.ids: np.ndarray = ids_arr

        fn: dict[str, list[str]] = {}
        for m in self.modalities:
            d = arrays[m].shape[1]
            names = None if feature_names is None else feature_names.get(m)
            if names is None:
                names = [f"{m}_{k}" for k in range(d)]
            names = [str(x) for x in names]
            if len(names) != d:
                raise ValueError(f"Modality {m!r}: {len(names)} feature names for {d} columns.")
            fn[m] = names
        self.feature_names: dict[str, list[str]] = fn
        self.report: dict = dict(report or {})

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        ids: Sequence | None = None,
        feature_names: Mapping[str, Sequence[str]] | None = None,
    ) -> "MultimodalData":
        """Build from arrays with aligned rows; an all-NaN row means the modality is missing.

        Parameters
        ----------
        arrays : mapping name -> array of shape (n, d_m)
        ids : sequence of length n, optional (default ``0..n-1``)
        feature_names : mapping name -> list of d_m str, optional
        """
        return cls(arrays, ids=ids, feature_names=feature_names)

    @classmethod
    def from_frames(cls, frames: Mapping[str, pd.DataFrame], id_column: str | None = None) -> "MultimodalData":
        """Build from DataFrames, aligned on sample ids.

        Ids come from ``id_column`` when given, else from each frame's index. A sample that is
        absent from a frame is missing that modality. Samples are ordered by first appearance.
        Columns must be numeric.
        """
        indexed: dict[str, pd.DataFrame] = {}
        for name, df in frames.items():
            if not isinstance(df, pd.DataFrame):
                raise ValueError(f"Modality {name!r}: expected a DataFrame, got {type(df).__name__}.")
            if id_column is not None:
                if id_column not in df.columns:
                    raise ValueError(f"Modality {name!r}: no id column {id_column!r} (columns: {list(df.columns)[:10]}).")
                df = df.set_index(id_column)
            dup = df.index[df.index.duplicated()]
            if len(dup):
                raise ValueError(f"Modality {name!r}: duplicate ids, e.g. {list(pd.unique(dup))[:5]}.")
            bad = [c for c in df.columns if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]
            if bad:
                raise ValueError(f"Modality {name!r}: non-numeric column {bad[0]!r} ({len(bad)} in all).")
            indexed[str(name)] = df
        all_ids = pd.Index(pd.unique(np.concatenate([np.asarray(df.index, dtype=object) for df in indexed.values()])))
        arrays = {m: df.reindex(all_ids).to_numpy(dtype=np.float64) for m, df in indexed.items()}
        names = {m: [str(c) for c in df.columns] for m, df in indexed.items()}
        return cls(arrays, ids=np.asarray(all_ids), feature_names=names)

    # ------------------------------------------------------------------ access
    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    @property
    def dims(self) -> dict[str, int]:
        """Number of features per modality."""
        return {m: self.X[m].shape[1] for m in self.modalities}

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{m}: {self.dims[m]} features, {int(self.observed[:, j].sum())} observed"
            for j, m in enumerate(self.modalities)
        )
        return f"MultimodalData(n_samples={self.n_samples}; {parts})"

    def _repr_html_(self) -> str:
        from . import display

        obs = self.observed.sum(axis=0)
        df = pd.DataFrame({"modality": self.modalities, "features": [self.dims[m] for m in self.modalities],
                           "samples": obs, "missing_share": 1 - obs / self.n_samples})
        lines = [f"{self.n_samples:,} samples; {int(self.observed.all(axis=1).sum()):,} have every modality"]
        w = self.report.get("warnings") if isinstance(self.report, dict) else None
        if w:
            lines.append(f"{len(w)} loading warning(s): see data.report['warnings']")
        return display.block("MultimodalData", lines, display.table(df))

    def plot_overlap(self):
        """How samples overlap across modalities (a plotly Figure; the app's figure)."""
        from .figures import overlap_figure

        return overlap_figure(self.observed, self.modalities)

    def subset(self, rows: np.ndarray | Sequence[int]) -> "MultimodalData":
        """A new MultimodalData with the given rows (integer positions or a bool mask)."""
        idx = np.asarray(rows)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return MultimodalData(
            {m: self.X[m][idx] for m in self.modalities},
            ids=self.ids[idx],
            feature_names=self.feature_names,
            report=self.report,
        )

    def iter_chunks(self, chunk_size: int = 8192) -> Iterator[Chunk]:
        """Yield row blocks of at most ``chunk_size`` samples."""
        for start in range(0, self.n_samples, chunk_size):
            stop = min(start + chunk_size, self.n_samples)
            yield Chunk({m: self.X[m][start:stop] for m in self.modalities}, self.observed[start:stop])

    def overlap(self) -> pd.DataFrame:
        """Samples shared by each pair of modalities (M x M DataFrame)."""
        o = self.observed.astype(np.int64)
        return pd.DataFrame(o.T @ o, index=self.modalities, columns=self.modalities)


@dataclass
class ParquetSource:
    """A Parquet file of all modalities' columns, read in row batches (never all at once).

    Parameters
    ----------
    path : str
    modalities : mapping name -> list of column names
    batch_size : int
        Rows per batch read from disk.

    A sample lacks a modality when all of that modality's columns are null in its row.
    Only :meth:`iter_chunks` reads data; ``HCL.fit`` accepts this object directly.
    """

    path: str
    modalities_columns: Mapping[str, Sequence[str]]
    batch_size: int = 65536
    modalities: list[str] = field(init=False)
    feature_names: dict[str, list[str]] = field(init=False)
    n_samples: int = field(init=False)

    def __post_init__(self) -> None:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        cols = set(pf.schema_arrow.names)
        for m, cs in self.modalities_columns.items():
            missing = [c for c in cs if c not in cols]
            if missing:
                raise ValueError(f"{self.path}: modality {m!r} column {missing[0]!r} not in the file.")
        self.modalities = [str(m) for m in self.modalities_columns]
        self.feature_names = {str(m): [str(c) for c in cs] for m, cs in self.modalities_columns.items()}
        self.n_samples = int(pf.metadata.num_rows)

    @property
    def dims(self) -> dict[str, int]:
        return {m: len(self.feature_names[m]) for m in self.modalities}

    def iter_chunks(self, chunk_size: int | None = None) -> Iterator[Chunk]:
        """Yield chunks of at most ``chunk_size`` rows, decoding one row group at a time.

        Each row group is decoded ``column_block`` columns at a time straight into float32
        arrays: decoding a whole row group (or ``iter_batches``) held several decoded copies
        and peaked above the size of the data in our benchmark.
        """
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path, pre_buffer=False)
        size = chunk_size or self.batch_size
        column_block = 128
        for g in range(pf.num_row_groups):
            rows = pf.metadata.row_group(g).num_rows
            X: dict[str, np.ndarray] = {}
            for m in self.modalities:
                cols = self.feature_names[m]
                a = np.empty((rows, len(cols)), dtype=np.float32)
                for s0 in range(0, len(cols), column_block):
                    table = pf.read_row_group(g, columns=cols[s0 : s0 + column_block])
                    for k in range(table.num_columns):
                        a[:, s0 + k] = table.column(k).to_numpy()
                    del table
                X[m] = a
            obs = np.stack([~np.isnan(X[m]).all(axis=1) for m in self.modalities], axis=1)
            for start in range(0, rows, size):
                stop = min(start + size, rows)
                yield Chunk({m: X[m][start:stop] for m in self.modalities}, obs[start:stop])
