"""Dask as the scale-out engine (hcl_explore.dask_source): statistics per partition on a
distributed.LocalCluster with 2 workers equal the in-process pass, fits are the same, bulk scoring
equals transform, and the library works without Dask."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx
from hcl_explore import linear as L

RANKS = {("a", "b", "c"): 2, ("a", "b"): 1, ("a",): 2, ("b",): 1, ("c",): 1}


@pytest.fixture(scope="module")
def dd():
    pytest.importorskip("dask")
    return pytest.importorskip("dask.dataframe")


@pytest.fixture(scope="module")
def client(dd):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl, \
            distributed.Client(cl) as c:
        yield c


@pytest.fixture(scope="module")
def sim():
    """3 modalities with an offset (the shifted accumulation), 20% of samples lacking one."""
    data, truth = hx.simulate(n=4001, dims=(12, 9, 7), ranks=RANKS, noise=0.3, missing=0.2, seed=5)
    X = {m: data.X[m] + 100.0 for m in data.modalities}
    names = {m: [f"{m}{k}" for k in range(data.dims[m])] for m in data.modalities}
    return hx.MultimodalData.from_arrays(X, feature_names=names), truth


def _frames(dd, data, npartitions=(5, 3, 4)):
    return {m: dd.from_pandas(pd.DataFrame(data.X[m], columns=data.feature_names[m]), npartitions=p)
            for m, p in zip(data.modalities, npartitions)}


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _assert_same_stats(a: L.CovStats, b: L.CovStats, tol=1e-6):
    assert a.modalities == b.modalities and a.dims == b.dims and a.n_samples == b.n_samples
    np.testing.assert_array_equal(a.counts, b.counts)
    assert _rel(a.cov, b.cov) <= tol
    # Means: relative to the data's scale (a mean near 0 has float32 rounding of the spread).
    scale = np.abs(b.mean).max() + np.sqrt(np.diag(b.cov).max())
    assert np.abs(a.mean - b.mean).max() <= tol * scale
    assert (a.folds is None) == (b.folds is None)
    for fa, fb in zip(a.folds or [], b.folds or []):
        assert fa.n_samples == fb.n_samples
        np.testing.assert_array_equal(fa.counts, fb.counts)  # the same rows: global even / odd
        assert _rel(fa.cov, fb.cov) <= tol
        assert np.abs(fa.mean - fb.mean).max() <= tol * scale


def test_statistics_on_a_two_worker_cluster_equal_the_in_process_pass(dd, client, sim):
    from hcl_explore.dask_source import from_dask

    data, _ = sim
    src = from_dask(_frames(dd, data))
    assert src.modalities == data.modalities and src.feature_names == data.feature_names
    assert src.n_samples == data.n_samples
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        for chunk, folds in [(16384, True), (333, True), (1000, False)]:
            ours = src.covariance_stats(chunk_size=chunk, folds=folds)
            ref = L.covariance_stats(data, chunk_size=chunk, folds=folds)
            _assert_same_stats(ours, ref)
    # The cluster did the work: both workers ran partition tasks.
    assert len({t["worker"] for t in ts.data}) == 2


def test_fit_on_dask_frames_gives_the_same_model(dd, client, sim):
    data, truth = sim
    a = hx.HCL().fit(_frames(dd, data))
    b = hx.HCL().fit(data)
    assert a.ranks_ == b.ranks_
    assert a.nodes_ == b.nodes_
    np.testing.assert_allclose(a.W_, b.W_, atol=1e-6 * np.abs(b.W_).max())
    np.testing.assert_allclose(a.mean_, b.mean_, rtol=1e-9)
    assert a.n_samples_ == b.n_samples_
    assert a.rank_diagnostics_["search"].get("confirm") == b.rank_diagnostics_["search"].get("confirm")


def test_one_frame_with_a_column_map(dd, client, sim):
    from hcl_explore.dask_source import from_dask

    data, _ = sim
    wide = pd.DataFrame(np.hstack([data.X[m] for m in data.modalities]),
                        columns=[c for m in data.modalities for c in data.feature_names[m]])
    wide["sid"] = [f"s{i}" for i in range(data.n_samples)]
    src = from_dask(dd.from_pandas(wide, npartitions=6), column_map=data.feature_names, id_column="sid")
    _assert_same_stats(src.covariance_stats(folds=True), L.covariance_stats(data, folds=True))
    # iter_chunks streams partitions to the client (for chunk consumers): same rows, ids attached.
    chunks = list(src.iter_chunks(700))
    assert np.concatenate([c.ids for c in chunks]).tolist() == wide["sid"].tolist()
    for m in data.modalities:
        np.testing.assert_array_equal(np.vstack([c.X[m] for c in chunks]), data.X[m])
    _assert_same_stats(L.covariance_stats(src, folds=True), L.covariance_stats(data, folds=True))
    with pytest.raises(ValueError, match="column_map"):
        from_dask(dd.from_pandas(wide, npartitions=2))
    with pytest.raises(ValueError, match="not in the frame"):
        from_dask(dd.from_pandas(wide, npartitions=2), column_map={"a": ["zz"]})


def test_samples_absent_from_a_frame_lack_that_modality(dd, client):
    """Frames aligned on their index: ids missing from one frame, and all-null rows, are missing
    modalities (pairwise-complete statistics), as MultimodalData.from_frames aligns them."""
    from hcl_explore.dask_source import from_dask

    data, _ = hx.simulate(n=3000, dims=(6, 5), ranks={("a", "b"): 2, ("a",): 1, ("b",): 1}, noise=0.3, seed=8)
    rng = np.random.default_rng(0)
    a = pd.DataFrame(data.X["a"], columns=[f"a{k}" for k in range(6)])
    b = pd.DataFrame(data.X["b"], columns=[f"b{k}" for k in range(5)]).iloc[np.sort(rng.permutation(3000)[:2200])]
    a.loc[rng.choice(b.index, 300, replace=False)] = np.nan  # all-null rows (of samples that have b)
    ref = hx.MultimodalData.from_frames({"a": a, "b": b})
    assert ref.observed.all(axis=1).sum() < 2000
    for frames in ({"a": dd.from_pandas(a, npartitions=4), "b": dd.from_pandas(b, npartitions=3)},
                   # Unknown divisions: aligned partition by partition (the same partitioning).
                   {"a": dd.from_pandas(a.loc[b.index.union(a.index)], npartitions=4, sort=False),
                    "b": dd.from_pandas(b.reindex(b.index.union(a.index)), npartitions=4, sort=False)}):
        ours = from_dask(frames).covariance_stats(folds=True)
        _assert_same_stats(ours, L.covariance_stats(ref, folds=True))


def test_a_partly_missing_row_is_a_clear_error(dd, client):
    from hcl_explore.dask_source import from_dask

    df = pd.DataFrame(np.random.default_rng(1).standard_normal((200, 3)), columns=["x", "y", "z"])
    df.iloc[150, 1] = np.nan
    with pytest.raises(ValueError, match=r"Modality 'a': missing cell in column 'y'.*index 150"):
        from_dask({"a": dd.from_pandas(df, npartitions=3)}).covariance_stats()


def test_a_partitioned_parquet_dataset(dd, client, sim, tmp_path):
    """DaskSource.from_parquet reads the files in ParquetSource's order: the same statistics and folds."""
    from hcl_explore.dask_source import DaskSource

    data, truth = sim
    wide = pd.DataFrame(np.hstack([data.X[m] for m in data.modalities]).astype(np.float32),
                        columns=[c for m in data.modalities for c in data.feature_names[m]])
    folder = tmp_path / "ds"
    folder.mkdir()
    for i, (s, e) in enumerate([(0, 1111), (1111, 2500), (2500, 4001)]):
        wide.iloc[s:e].to_parquet(folder / f"part.{i}.parquet", row_group_size=500)
    src = DaskSource.from_parquet(str(folder), data.feature_names)
    assert src.n_samples == data.n_samples and src.npartitions >= 3
    ref = L.covariance_stats(hx.ParquetSource(str(folder), data.feature_names), folds=True)
    _assert_same_stats(src.covariance_stats(folds=True), ref)
    assert hx.HCL().fit(src).ranks_ == hx.HCL().fit(hx.ParquetSource(str(folder), data.feature_names)).ranks_


def test_bulk_scoring_partition_by_partition_equals_transform(dd, client, sim, tmp_path):
    from hcl_explore.dask_source import from_dask, transform_to_parquet

    data, _ = sim
    model = hx.HCL().fit(data)
    Z = model.transform(data)
    ref = np.hstack([Z[nd] for nd in model.nodes_])
    cols = [f"{hx.node_label(nd)}:{k + 1}" for nd in model.nodes_ for k in range(model.ranks_[nd])]
    frames = _frames(dd, data)
    transform_to_parquet(model, frames, str(tmp_path / "s1"))
    got = dd.read_parquet(str(tmp_path / "s1")).compute()
    assert list(got.columns) == ["id"] + cols
    np.testing.assert_array_equal(got["id"].to_numpy(), np.arange(data.n_samples))
    np.testing.assert_allclose(got[cols].to_numpy(), ref, rtol=1e-9, atol=1e-12)
    wide = pd.DataFrame(np.hstack([data.X[m] for m in data.modalities]),
                        columns=[c for m in data.modalities for c in data.feature_names[m]])
    wide.insert(0, "sid", [f"s{i}" for i in range(data.n_samples)])
    src = from_dask(dd.from_pandas(wide, npartitions=3), column_map=data.feature_names, id_column="sid")
    transform_to_parquet(model, src, str(tmp_path / "s2"))
    got = dd.read_parquet(str(tmp_path / "s2")).compute()
    assert got["sid"].tolist() == wide["sid"].tolist()
    np.testing.assert_allclose(got[cols].to_numpy(), ref, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------- without Dask
def test_without_dask_the_library_imports_and_the_engine_says_how_to_install_it(monkeypatch):
    """Blocked imports stand for an environment without the extra."""
    code = (
        "import sys\n"
        "for name in ('dask', 'dask.dataframe', 'distributed'):\n"
        "    sys.modules[name] = None\n"
        "import numpy as np, hcl_explore as hx\n"
        "from hcl_explore import dask_source\n"
        "data, _ = hx.simulate(n=300, dims=(4, 3), ranks=1, noise=0.3, seed=0)\n"
        "assert hx.HCL().fit(data).ranks_\n"
        "try:\n"
        "    dask_source.from_dask({'a': object()})\n"
        "except ImportError as exc:\n"
        "    print('IMPORT-ERROR', exc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "IMPORT-ERROR" in r.stdout and "pip install hcl-explore[dask]" in r.stdout


def test_the_dask_entry_points_without_dask_raise_the_install_error(monkeypatch):
    import builtins

    from hcl_explore import dask_source

    real = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "dask" or name.startswith(("dask.", "distributed")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(ImportError, match=r"pip install hcl-explore\[dask\]"):
        dask_source.DaskSource.from_parquet("x.parquet", {"a": ["x"]})
    with pytest.raises(ImportError, match=r"pip install hcl-explore\[dask\]"):
        dask_source.transform_to_parquet(object(), "x.parquet", "out")
