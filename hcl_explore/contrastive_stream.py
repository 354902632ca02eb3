"""Minibatches for the contrastive estimator streamed from Parquet row groups (data bigger than memory).

:class:`ParquetBatches` reads a :class:`hcl_explore.data.ParquetSource` (its files, columns and
modalities; it never calls ``iter_chunks``, which reads in file order) and serves:

* :meth:`ParquetBatches.scan` - one pass in file order: the per-feature means and standard
  deviations of the *training* rows observing each modality (float64 sums), the modality
  co-observation counts, and two bounded in-memory samples drawn by seeded global row index: the
  held-out validation rows (never trained on) and a sample of training rows (the harmonic rank
  search and the fit's summary read it).
* :meth:`ParquetBatches.epoch` - the training minibatches of one epoch, standardized float32.
  Shuffled twice: the row groups in a seeded order, and a **shuffle buffer**: rows enter the buffer
  slice by slice (``ParquetFile.iter_batches`` inside one row group), and once it is full every
  batch is ``batch_size`` rows drawn at random positions of it, whose places the next incoming
  rows take (tf.data's rule, one batch at a time). At the end of the epoch the rest of the buffer
  goes out in a random order.

Memory is bounded by design, whatever n is: the loader holds at most ``buffer_rows`` rows - the
store, the slice being read (a quarter of the buffer) and the batch being drawn - besides the
minibatch its consumer is using; ``peak_rows`` records the most it held (tests assert it,
counting rows rather than RSS). The validation and summary samples
are capped (``MAX_VAL_ROWS``, ``SAMPLE_ROWS``).

Seeded and resumable: epoch ``e`` is a function of ``(seed, e)`` and the file only, so a run
resumed from the checkpoint written after epoch ``e - 1`` draws exactly the batches the
uninterrupted run would have drawn (:func:`hcl_explore.contrastive.train` checkpoints per epoch).
Under ``torchrun`` every process draws the same global batches and encodes its share of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

#: Most validation rows held in memory (a seeded sample of the held-out share).
MAX_VAL_ROWS = 10_000
#: Training rows held in memory for the harmonic rank search and the fit's summary (output scale,
#: loadings); the rank search itself reads at most ``harmonics.MAX_ROWS`` of them.
SAMPLE_ROWS = 10_000
#: Default shuffle buffer (rows).
BUFFER_ROWS = 65_536


@dataclass
class HostBatch:
    """One minibatch on the host: ``X`` {m: (b, d_m) float32 standardized, 0 where missing},
    ``observed`` (b, M) bool, ``y`` (b,) float32 or None."""

    X: dict[str, np.ndarray]
    observed: np.ndarray
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.observed.shape[0])

    def rows(self, sel: np.ndarray | slice) -> "HostBatch":
        return HostBatch({m: x[sel] for m, x in self.X.items()}, self.observed[sel],
                         None if self.y is None else self.y[sel])


@dataclass
class ScanResult:
    """What :meth:`ParquetBatches.scan` gathers in one pass (global row indices, file order)."""

    mean: np.ndarray  # (D,) over the training rows observing each feature's modality
    sd: np.ndarray  # (D,) population sd over the same rows (1 where < 1e-12)
    n_train_obs: np.ndarray  # (M,) training rows observing each modality
    counts: np.ndarray  # (M, M) int64 rows observing both modalities, all rows
    val_rows: np.ndarray  # (V,) global indices of the held-out rows
    val_X: np.ndarray  # (V, D) float32 raw (NaN where missing)
    val_observed: np.ndarray  # (V, M)
    sample_rows: np.ndarray  # (S,) global indices of the training-row sample
    sample_X: np.ndarray  # (S, D) float32 raw
    sample_observed: np.ndarray  # (S, M)


class ParquetBatches:
    """Seeded, shuffled, bounded-memory minibatches of a ParquetSource (module docstring).

    ``val_rows``: sorted global row indices never served for training. ``mean``, ``scale``
    ``(D,)``: the standardization applied to every served row (set after :meth:`scan`).
    """

    def __init__(self, source, *, batch_size: int, buffer_rows: int = BUFFER_ROWS, seed: int = 0):
        if buffer_rows < 4 * batch_size:
            raise ValueError(f"shuffle_buffer ({buffer_rows} rows) must hold at least four batches "
                             f"(batch_size {batch_size}).")
        import pyarrow.parquet as pq

        self.source = source
        self.batch_size = int(batch_size)
        self.buffer_rows = int(buffer_rows)
        self.seed = int(seed)
        self.modalities = list(source.modalities)
        self.columns = [c for m in self.modalities for c in source.feature_names[m]]
        self.unique = list(dict.fromkeys(self.columns))
        self.slices: dict[str, slice] = {}
        start = 0
        for m in self.modalities:
            self.slices[m] = slice(start, start + len(source.feature_names[m]))
            start += len(source.feature_names[m])
        self.D = start
        #: (file index, row group, first global row, rows) of every non-empty row group, file order
        self.groups: list[tuple[int, int, int, int]] = []
        offset = 0
        self.file_first: list[int] = []  # global index of every file's first row
        for fi, f in enumerate(source.files):
            self.file_first.append(offset)
            md = pq.ParquetFile(f).metadata
            for g in range(md.num_row_groups):
                rows = md.row_group(g).num_rows
                if rows:
                    self.groups.append((fi, g, offset, rows))
                offset += rows
        self.n_samples = offset
        # A read slice is a quarter of the buffer and the batch being drawn takes one batch: the
        # store gets the rest (at least two batches), so the loader never holds more than
        # buffer_rows rows.
        self.read_rows = max(1, self.buffer_rows // 4)
        self.store_rows = self.buffer_rows - self.read_rows - self.batch_size
        self.val_rows = np.zeros(0, dtype=np.int64)
        self.mean = np.zeros(self.D)
        self.scale = np.ones(self.D)
        self.held = 0  # rows the loader holds now (buffer + slice being read)
        self.peak_rows = 0  # the most it ever held

    # ------------------------------------------------------------------ reading
    def _slices(self, group: tuple[int, int, int, int]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(rows, A, observed)`` per slice of one row group: global row indices, ``A`` (k, D)
        float32 raw (NaN = null) and ``observed`` (k, M); at most ``read_rows`` rows each."""
        import pyarrow.parquet as pq

        from .data import _float_values

        fi, g, first, _ = group
        pf = pq.ParquetFile(self.source.files[fi])
        where: dict[str, list[int]] = {}
        for j, c in enumerate(self.columns):
            where.setdefault(c, []).append(j)
        start = first
        for rb in pf.iter_batches(batch_size=self.read_rows, row_groups=[g], columns=self.unique):
            k = rb.num_rows
            A = np.empty((k, self.D), dtype=np.float32)
            for name, col in zip(rb.schema.names, rb.columns):
                vals = _float_values(col)
                for j in where[name]:
                    A[:, j] = vals
            obs = np.empty((k, len(self.modalities)), dtype=bool)
            for j, m in enumerate(self.modalities):
                miss = np.isnan(A[:, self.slices[m]])
                np.logical_not(miss.all(axis=1), out=obs[:, j])
                bad = np.flatnonzero(obs[:, j] & miss.any(axis=1))
                if bad.size:
                    row = start - self.file_first[fi] + int(bad[0])  # within its file, from 0
                    raise ValueError(f"{self.source.files[fi]}: row {row} has some but not all of "
                                     f"modality {m!r}'s columns missing; impute them first (or make them all null).")
            rows = np.arange(start, start + k, dtype=np.int64)
            start += k
            yield rows, A, obs

    def _standardize(self, A: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """``(A - mean) / scale`` in float32, 0 where a modality is missing (in place)."""
        A -= self.mean.astype(np.float32)
        A /= self.scale.astype(np.float32)
        for j, m in enumerate(self.modalities):
            A[~obs[:, j], self.slices[m]] = 0.0
        return A

    # ------------------------------------------------------------------ the first pass
    def scan(self, val_fraction: float, *, max_val_rows: int = MAX_VAL_ROWS, sample_rows: int = SAMPLE_ROWS,
             standardize: bool = True) -> ScanResult:
        """One pass in file order (see the module docstring); sets ``val_rows``, ``mean`` and
        ``scale``. The held-out rows are ``round(val_fraction * n)`` capped at ``max_val_rows``
        (none below n = 20, as in memory), drawn with ``seed``; the sample is drawn from the rest."""
        n = self.n_samples
        rng = np.random.default_rng(self.seed)
        n_val = min(int(round(float(val_fraction) * n)), int(max_val_rows)) if n >= 20 else 0
        n_smp = min(int(sample_rows), n - n_val)
        # only the chosen indices are drawn: O(n_val + n_smp) memory, not O(n)
        pick = _choose(rng, n, n_val + n_smp)
        val, smp = np.sort(pick[:n_val]), np.sort(pick[n_val:])
        M = len(self.modalities)
        s1, s2 = np.zeros(self.D), np.zeros(self.D)
        n_obs = np.zeros(M, dtype=np.int64)
        counts = np.zeros((M, M), dtype=np.int64)
        vX, vO = np.empty((n_val, self.D), np.float32), np.empty((n_val, M), bool)
        sX, sO = np.empty((n_smp, self.D), np.float32), np.empty((n_smp, M), bool)
        for group in self.groups:
            for rows, A, obs in self._slices(group):
                self._hold(A.shape[0])
                o = obs.astype(np.int64)
                counts += o.T @ o
                iv = _members(rows, val)
                if iv[0].size:
                    vX[iv[1]], vO[iv[1]] = A[iv[0]], obs[iv[0]]
                isx = _members(rows, smp)
                if isx[0].size:
                    sX[isx[1]], sO[isx[1]] = A[isx[0]], obs[isx[0]]
                train = np.ones(rows.size, dtype=bool)
                train[iv[0]] = False
                for j, m in enumerate(self.modalities):
                    r = train & obs[:, j]
                    x = A[r, self.slices[m]].astype(np.float64)
                    s1[self.slices[m]] += x.sum(0)
                    s2[self.slices[m]] += (x * x).sum(0)
                    n_obs[j] += int(r.sum())
                self._hold(-A.shape[0])
        mean, sd = np.zeros(self.D), np.ones(self.D)
        for j, m in enumerate(self.modalities):
            k = max(int(n_obs[j]), 1)
            mu = s1[self.slices[m]] / k
            mean[self.slices[m]] = mu
            var = np.maximum(s2[self.slices[m]] / k - mu * mu, 0.0)
            sd[self.slices[m]] = np.where(np.sqrt(var) > 1e-12, np.sqrt(var), 1.0) if standardize else 1.0
        self.val_rows, self.mean, self.scale = val, mean, sd
        return ScanResult(mean, sd, n_obs, counts, val, vX, vO, smp, sX, sO)

    def _hold(self, k: int) -> None:
        self.held += int(k)
        self.peak_rows = max(self.peak_rows, self.held)

    # ------------------------------------------------------------------ training batches
    def epoch(self, epoch: int) -> Iterator[HostBatch]:
        """The training minibatches of epoch ``epoch`` (0-based), standardized; validation rows
        left out. Full batches of ``batch_size`` rows; the last partial one is dropped, unless the
        epoch has no full batch (then it goes out if it has at least 2 rows)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        b, S, M = self.batch_size, self.store_rows, len(self.modalities)
        store = np.empty((S, self.D), dtype=np.float32)
        sobs = np.empty((S, M), dtype=bool)
        pX, pO = np.empty((b, self.D), dtype=np.float32), np.empty((b, M), dtype=bool)  # the batch being drawn
        k = p = sent = 0  # rows in the store, in the batch being drawn; batches sent
        self.held = 0
        try:
            for gi in rng.permutation(len(self.groups)):
                for rows, A, obs in self._slices(self.groups[gi]):
                    self._hold(rows.size)
                    keep = ~np.isin(rows, self.val_rows, assume_unique=True)
                    obs = obs[keep]
                    A = self._standardize(A[keep], obs)
                    i = 0
                    while i < A.shape[0]:
                        if k < S:  # filling the store
                            take = min(S - k, A.shape[0] - i)
                            store[k:k + take], sobs[k:k + take] = A[i:i + take], obs[i:i + take]
                            k, i = k + take, i + take
                            self._hold(take)
                            continue
                        # full: rows drawn at random positions go out, the next incoming rows
                        # take their places
                        take = min(b - p, A.shape[0] - i)
                        pos = rng.choice(S, size=take, replace=False)
                        pX[p:p + take], pO[p:p + take] = store[pos], sobs[pos]
                        store[pos], sobs[pos] = A[i:i + take], obs[i:i + take]
                        p, i = p + take, i + take
                        self._hold(take)
                        if p == b:
                            sent += 1
                            self._hold(-b)
                            p = 0
                            yield HostBatch(self._split(pX.copy()), pO.copy())
                    self._hold(-rows.size)
            # end of the epoch: the store's rows in a random order complete the batches
            order = rng.permutation(k)
            s0 = 0
            while s0 < k:
                take = min(b - p, k - s0)
                sel = order[s0:s0 + take]
                pX[p:p + take], pO[p:p + take] = store[sel], sobs[sel]
                p, s0 = p + take, s0 + take
                if p == b:
                    sent += 1
                    p = 0
                    yield HostBatch(self._split(pX.copy()), pO.copy())
            if p >= 2 and sent == 0:
                yield HostBatch(self._split(pX[:p].copy()), pO[:p].copy())
        finally:
            self.held = 0

    def _split(self, A: np.ndarray) -> dict[str, np.ndarray]:
        return {m: A[:, self.slices[m]] for m in self.modalities}


def _choose(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``k`` distinct integers of ``[0, n)`` in random order, without an ``O(n)`` permutation."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if 4 * k >= n:
        return rng.permutation(n)[:k].astype(np.int64)
    out = np.zeros(0, dtype=np.int64)
    while out.size < k:
        extra = rng.integers(0, n, size=2 * (k - out.size))
        out = np.concatenate([out, extra])
        _, first = np.unique(out, return_index=True)
        out = out[np.sort(first)]  # drop repeats, keep the order of first appearance
    return out[:k]


def _members(rows: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``rows`` (sorted, contiguous) of the entries of ``chosen`` (sorted) they hold,
    and those entries' positions in ``chosen``."""
    lo, hi = np.searchsorted(chosen, [rows[0], rows[-1] + 1])
    idx = np.arange(lo, hi)
    return (chosen[lo:hi] - rows[0]).astype(np.int64), idx


def stack(batches: Sequence[HostBatch]) -> HostBatch:
    """Concatenate host batches (tests and small files)."""
    mods = list(batches[0].X)
    return HostBatch({m: np.concatenate([b.X[m] for b in batches]) for m in mods},
                     np.concatenate([b.observed for b in batches]))
