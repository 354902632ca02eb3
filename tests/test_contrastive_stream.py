"""The contrastive estimator on data bigger than memory: minibatches streamed from Parquet row
groups (hcl_explore/contrastive_stream.py), shuffled by row group and a bounded buffer, seeded and
resumable; HCL(estimator="contrastive").fit(ParquetSource) never loads the file whole."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import hcl_explore as hx
import hcl_explore.estimators.contrastive as EC
from hcl_explore.contrastive_stream import ParquetBatches

N, GROUP = 1_200, 150  # 8 row groups


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    """A nonlinear 3-modality file (some rows lack b), whose column ``a_0`` is replaced by the row
    index so that served rows can be told apart after standardization."""
    data, _ = hx.simulate(n=N, dims=(8, 6, 5), ranks=1, noise=0.2, seed=3, link="nonlinear", missing=0.1)
    obs = np.asarray(data.observed, dtype=bool)
    frames, cols = [], {}
    for j, m in enumerate(data.modalities):
        x = np.asarray(data.X[m], dtype=np.float64).copy()
        x[~obs[:, j]] = np.nan
        cols[m] = [f"{m}_{k}" for k in range(x.shape[1])]
        frames.append(pd.DataFrame(x, columns=cols[m]))
    df = pd.concat(frames, axis=1)
    idx_col = cols[data.modalities[0]][0]
    df[idx_col] = np.where(obs[:, 0], np.arange(N, dtype=float), np.nan)
    path = tmp_path_factory.mktemp("stream") / "cohort.parquet"
    df.to_parquet(path, row_group_size=GROUP)
    return hx.ParquetSource(str(path), cols), data, obs


def _row_ids(loader: ParquetBatches, batch) -> np.ndarray:
    """The file rows a batch holds (from the row-index column; -1 where modality a is missing)."""
    m = loader.modalities[0]
    raw = batch.X[m][:, 0] * loader.scale[0] + loader.mean[0]
    return np.where(batch.observed[:, 0], np.rint(raw), -1).astype(np.int64)


def test_loader_serves_every_training_row_once_per_epoch_within_its_buffer(parquet):
    src, _, obs = parquet
    loader = ParquetBatches(src, batch_size=32, buffer_rows=256, seed=5)
    assert len(loader.groups) == N // GROUP
    scan = loader.scan(0.1)
    assert scan.val_rows.size == N // 10 and scan.val_X.shape == (N // 10, sum(src.dims.values()))
    np.testing.assert_array_equal(scan.val_observed, obs[scan.val_rows])
    np.testing.assert_array_equal(scan.counts, obs.T.astype(np.int64) @ obs.astype(np.int64))
    batches = list(loader.epoch(0))
    # memory bounded by design: rows held (store + slice being read + batch being drawn) counted
    assert 0 < loader.peak_rows <= 256
    assert all(len(b) == 32 for b in batches)
    n_train = N - scan.val_rows.size
    assert len(batches) == n_train // 32
    ids = np.concatenate([_row_ids(loader, b) for b in batches])
    seen = ids[ids >= 0]
    assert np.unique(seen).size == seen.size  # no row twice
    assert not np.isin(seen, scan.val_rows).any()  # validation rows are never trained on
    # observed masks travel with their rows; missing modalities are zeros after standardization
    for b in batches:
        for j, m in enumerate(loader.modalities):
            assert not np.any(b.X[m][~b.observed[:, j]])
    # shuffled by row group and buffer: the first batch mixes several row groups
    first = _row_ids(loader, batches[0])
    assert np.unique(first[first >= 0] // GROUP).size >= 2


def test_loader_is_seeded_and_resumable_at_any_epoch(parquet):
    src = parquet[0]

    def epoch(seed: int, e: int, warm: bool) -> list:
        loader = ParquetBatches(src, batch_size=32, buffer_rows=256, seed=seed)
        loader.scan(0.1)
        if warm:
            list(loader.epoch(e - 1))
        return list(loader.epoch(e))

    a, b = epoch(5, 2, warm=True), epoch(5, 2, warm=False)  # a fresh loader resumes at epoch 2
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.observed, y.observed)
        for m in x.X:
            np.testing.assert_array_equal(x.X[m], y.X[m])
    other = epoch(5, 1, warm=False)
    assert not np.array_equal(a[0].X["a"], other[0].X["a"])  # another epoch, another order
    assert not np.array_equal(a[0].X["a"], epoch(6, 2, warm=False)[0].X["a"])  # another seed


def test_buffer_must_hold_four_batches(parquet):
    with pytest.raises(ValueError, match="shuffle_buffer"):
        ParquetBatches(parquet[0], batch_size=64, buffer_rows=200)


def test_fit_streams_parquet_without_loading_it(parquet, monkeypatch):
    src, data, _ = parquet
    loaders: list[ParquetBatches] = []
    real = EC.ParquetBatches

    def spy(*a, **k):
        loaders.append(real(*a, **k))
        return loaders[-1]

    def refuse(*a, **k):
        raise AssertionError("the streamed fit loaded the whole source")

    monkeypatch.setattr(EC, "ParquetBatches", spy)
    monkeypatch.setattr(EC, "in_memory", refuse)
    kw = dict(estimator="contrastive", ranks=1, hidden=(16,), batch_size=32, shuffle_buffer=256, max_epochs=3,
              patience=10, random_state=0, device="cpu")
    model = hx.HCL(**kw).fit(src)
    assert model.n_epochs_ == 3 and model.n_samples_ == N
    assert loaders and all(ld.peak_rows <= 256 for ld in loaders)
    assert model.counts_[0, 0] == int(np.asarray(data.observed)[:, 0].sum())
    Z = model.transform(data)
    assert all(np.isfinite(z).all() for z in Z.values())
    again = hx.HCL(**kw).fit(src)  # seeded: the same batches, the same network
    assert again.objective_history_ == model.objective_history_
    np.testing.assert_array_equal(again.W_, model.W_)


def test_streamed_fit_resumes_from_its_checkpoint(parquet, tmp_path):
    src = parquet[0]
    kw = dict(estimator="contrastive", ranks=1, hidden=(16,), batch_size=32, shuffle_buffer=256, patience=10,
              random_state=0, device="cpu", checkpoint_dir=str(tmp_path / "ck"))
    hx.HCL(**kw, max_epochs=2).fit(src)
    resumed = hx.HCL(**kw, max_epochs=4, resume=True).fit(src)
    straight = hx.HCL(**{**kw, "checkpoint_dir": None}, max_epochs=4).fit(src)
    np.testing.assert_allclose(resumed.objective_history_, straight.objective_history_, rtol=1e-6)


def test_streamed_fit_refuses_an_outcome(parquet):
    with pytest.raises(ValueError, match="in-memory"):
        hx.HCL(estimator="contrastive", ranks=1, max_epochs=1, device="cpu").fit(parquet[0], y=np.zeros(N))


def test_a_partly_missing_modality_is_named_by_file_and_row(tmp_path):
    df = pd.DataFrame({"a0": np.arange(40.0), "a1": np.ones(40), "b0": np.zeros(40)})
    df.loc[7, "a1"] = np.nan
    df.to_parquet(tmp_path / "x.parquet", row_group_size=10)
    loader = ParquetBatches(hx.ParquetSource(str(tmp_path / "x.parquet"), {"a": ["a0", "a1"], "b": ["b0"]}),
                            batch_size=4, buffer_rows=16)
    with pytest.raises(ValueError, match=r"x\.parquet: row 7 .*'a'"):
        loader.scan(0.1)
