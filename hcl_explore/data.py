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
    #: The rows' sample ids, where the source knows them (else None).
    ids: np.ndarray | None = None


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

    def observation_patterns(self, max_patterns: int = 40) -> pd.DataFrame:
        """How samples overlap across modalities, as a table (what :meth:`plot_overlap` draws): one
        row per observation pattern, most frequent first (ties in pattern order), one bool column
        per modality (present in the pattern), ``samples`` and ``share``. Past ``max_patterns`` the
        rarest patterns are summed into one last row with every modality column False and
        ``pattern`` "other patterns" (the ``pattern`` column names each row: "a+b", "(none)"). A
        modality named like one of those three columns gets the column "<name> (modality)"."""
        obs = np.asarray(self.observed, dtype=bool)
        n, M = obs.shape
        codes = obs.astype(np.int64) @ (1 << np.arange(M, dtype=np.int64))
        uniq, counts = np.unique(codes, return_counts=True)
        order = np.lexsort((uniq, -counts))
        uniq, counts = uniq[order], counts[order]
        cols = [f"{m} (modality)" if m in ("pattern", "samples", "share") else m for m in self.modalities]
        rows = [{"pattern": "+".join(m for j, m in enumerate(self.modalities) if c >> j & 1) or "(none)",
                 **{col: bool(c >> j & 1) for j, col in enumerate(cols)}, "samples": int(k)}
                for c, k in zip(uniq, counts)]
        if len(rows) > max_patterns:
            rest = sum(r["samples"] for r in rows[max_patterns - 1:])
            rows = rows[: max_patterns - 1] + [{"pattern": "other patterns", **{col: False for col in cols},
                                                  "samples": rest}]
        df = pd.DataFrame(rows, columns=["pattern", *cols, "samples"])
        df["share"] = df["samples"] / n if n else 0.0
        return df

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
            yield Chunk({m: self.X[m][start:stop] for m in self.modalities}, self.observed[start:stop],
                        self.ids[start:stop])

    def overlap(self) -> pd.DataFrame:
        """Samples shared by each pair of modalities (M x M DataFrame)."""
        o = self.observed.astype(np.int64)
        return pd.DataFrame(o.T @ o, index=self.modalities, columns=self.modalities)


#: Decoded bytes per read of a row group's columns (the row group is read in column blocks of
#: about this size: every column chunk is read and decoded once, never the whole row group twice).
_BLOCK_BYTES = 128 << 20
#: Columns per block are a multiple of this: 16 float32 fill a 64-byte cache line of a row, so each
#: line of the row-group array is written in one pass (half the scatter time of 8-column blocks).
_BLOCK_ALIGN = 16
#: Rows per sub-block when scattering decoded columns into the row-major float32 array: the
#: cache lines of one sub-block stay in L2 while its columns are written.
_SCATTER_ROWS = 4096


def parquet_files(path: str) -> list[str]:
    """The Parquet files of ``path``: the file itself, or a dataset folder's ``*.parquet`` files
    (recursively, hidden and ``_``-prefixed names skipped, as Dask and Spark write them) in
    sorted path order - the row order every reader of this package uses."""
    import os

    if not os.path.isdir(path):
        if not os.path.exists(path):
            raise ValueError(f"{path}: no such file or folder.")
        return [path]
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        out += [os.path.join(root, f) for f in files
                if f.endswith((".parquet", ".parq", ".pq")) and not f.startswith((".", "_"))]
    if not out:
        raise ValueError(f"{path}: a folder with no .parquet file.")
    return sorted(out)


def _float_values(col) -> np.ndarray:
    """One Arrow column as a numpy float array, nulls as NaN (no copy for null-free floats)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_floating(t) and col.null_count == 0:
        return col.to_numpy()
    if not pa.types.is_floating(t):
        col = pc.cast(col, pa.float64() if pa.types.is_integer(t) and t.bit_width > 16 else pa.float32())
    return col.to_numpy(zero_copy_only=False)


def _scatter(A: np.ndarray, cols: Sequence[int], arrays: Sequence[np.ndarray]) -> None:
    """``A[:, cols[k]] = arrays[k]`` (cast to A's dtype), row sub-block by row sub-block."""
    n = A.shape[0]
    for r0 in range(0, n, _SCATTER_ROWS):
        r1 = min(n, r0 + _SCATTER_ROWS)
        sub = A[r0:r1]
        for j, a in zip(cols, arrays):
            sub[:, j] = a[r0:r1]


@dataclass
class ParquetSource:
    """A Parquet file (or a folder of Parquet files: a partitioned dataset) holding all modalities'
    columns, read one row group at a time (never all at once).

    Parameters
    ----------
    path : str
        A ``.parquet`` file, or a folder of them (read in sorted path order, see
        :func:`parquet_files`).
    modalities : mapping name -> list of column names
    batch_size : int
        Rows per chunk when :meth:`iter_chunks` is given no size.
    id_column : str, optional
        A column of sample ids: chunks then carry ``ids`` (bulk scoring writes them).

    A sample lacks a modality when all of that modality's columns are null (or NaN) in its row.
    Only :meth:`iter_chunks` reads data; ``HCL.fit`` accepts this object directly. Columns may be
    any numeric or boolean Arrow type; they are fed as float32.
    """

    path: str
    modalities_columns: Mapping[str, Sequence[str]]
    batch_size: int = 65536
    id_column: str | None = None
    modalities: list[str] = field(init=False)
    feature_names: dict[str, list[str]] = field(init=False)
    n_samples: int = field(init=False)
    files: list[str] = field(init=False)

    def __post_init__(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = str(self.path)
        self.files = parquet_files(self.path)
        if not self.modalities_columns:
            raise ValueError("ParquetSource needs at least one modality (name -> list of columns).")
        n = 0
        for f in self.files:
            try:
                pf = pq.ParquetFile(f)
            except Exception as exc:  # noqa: BLE001  pyarrow's errors vary by damage
                raise ValueError(f"{f}: not a readable Parquet file ({exc}).") from None
            schema = pf.schema_arrow
            for m, cs in self.modalities_columns.items():
                if len(cs) == 0:
                    raise ValueError(f"Modality {m!r} has no columns.")
                for c in cs:
                    i = schema.get_field_index(str(c))
                    if i < 0:
                        raise ValueError(f"{f}: modality {m!r} column {c!r} not in the file.")
                    t = schema.field(i).type
                    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                            or pa.types.is_null(t)):
                        raise ValueError(f"{f}: modality {m!r} column {c!r} is not numeric ({t}).")
            if self.id_column is not None and schema.get_field_index(self.id_column) < 0:
                raise ValueError(f"{f}: no id column {self.id_column!r}.")
            n += int(pf.metadata.num_rows)
        self.modalities = [str(m) for m in self.modalities_columns]
        self.feature_names = {str(m): [str(c) for c in cs] for m, cs in self.modalities_columns.items()}
        self.n_samples = n

    @property
    def dims(self) -> dict[str, int]:
        return {m: len(self.feature_names[m]) for m in self.modalities}

    def iter_row_groups(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``(A, ids)`` per row group: ``A`` (rows, D) float32 with the modalities' columns side
        by side (NaN = null), ``ids`` the id column's values or None.

        Every column chunk is read and decoded once, in column blocks of about 128 MiB decoded (at
        least 16 columns), and scattered straight into ``A``: peak memory is the float32 row group
        plus one block.
        """
        import pyarrow.parquet as pq

        cols = [c for m in self.modalities for c in self.feature_names[m]]
        unique = list(dict.fromkeys(cols))  # a column shared by two modalities is read once
        where: dict[str, list[int]] = {}
        for j, c in enumerate(cols):
            where.setdefault(c, []).append(j)
        D = len(cols)
        for f in self.files:
            # Buffered reads: a block's column chunks stream through 4 MiB buffers instead of being
            # held whole next to their decoded copy.
            pf = pq.ParquetFile(f, pre_buffer=False, buffer_size=1 << 22)
            for g in range(pf.num_row_groups):
                rows = pf.metadata.row_group(g).num_rows
                if rows == 0:
                    continue
                A = np.empty((rows, D), dtype=np.float32)
                block = _BLOCK_BYTES // (8 * rows)
                block = int(min(len(unique), max(_BLOCK_ALIGN, block - block % _BLOCK_ALIGN)))
                for b0 in range(0, len(unique), block):
                    names = unique[b0 : b0 + block]
                    table = pf.read_row_group(g, columns=names)
                    arrays = [_float_values(table.column(k)) for k in range(table.num_columns)]
                    del table
                    pos = [j for c in names for j in where[c]]
                    arrs = [a for c, a in zip(names, arrays) for _ in where[c]]
                    _scatter(A, pos, arrs)
                    del arrays, arrs
                ids = None
                if self.id_column is not None:
                    ids = pf.read_row_group(g, columns=[self.id_column]).column(0).to_numpy(zero_copy_only=False)
                yield A, ids

    def iter_chunks(self, chunk_size: int | None = None) -> Iterator[Chunk]:
        """Yield chunks of at most ``chunk_size`` rows (views of one decoded row group at a time,
        see :meth:`iter_row_groups`); ``observed`` is False where all of a modality's columns are
        missing in a row."""
        size = int(chunk_size or self.batch_size)
        sl, start = {}, 0
        for m in self.modalities:
            sl[m] = slice(start, start + len(self.feature_names[m]))
            start += len(self.feature_names[m])
        for A, ids in self.iter_row_groups():
            for s0 in range(0, A.shape[0], size):
                block = A[s0 : s0 + size]
                X = {m: block[:, sl[m]] for m in self.modalities}
                obs = np.empty((block.shape[0], len(self.modalities)), dtype=bool)
                for j, m in enumerate(self.modalities):
                    np.logical_not(np.isnan(X[m]).all(axis=1), out=obs[:, j])
                yield Chunk(X, obs, None if ids is None else ids[s0 : s0 + size])
