import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx


def test_from_arrays_observed_mask_from_all_nan_rows():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    b[1] = np.nan
    a[3] = np.nan
    d = hx.MultimodalData.from_arrays({"a": a, "b": b}, ids=list("vwxyz"))
    assert d.modalities == ["a", "b"]
    assert d.n_samples == 5
    assert d.observed.tolist() == [[True, True], [True, False], [True, True], [False, True], [True, True]]
    assert d.feature_names == {"a": ["a_0", "a_1", "a_2"], "b": ["b_0", "b_1"]}
    assert list(d.ids) == list("vwxyz")
    assert d.overlap().loc["a", "b"] == 3


def test_from_arrays_errors():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="rows"):
        hx.MultimodalData.from_arrays({"a": x, "b": np.zeros((3, 2))})
    y = x.copy()
    y[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2 has missing cells"):
        hx.MultimodalData.from_arrays({"a": y})
    z = np.full((4, 2), np.nan)
    z[0] = 1
    with pytest.raises(ValueError, match="no modality at all"):
        hx.MultimodalData.from_arrays({"a": z})
    with pytest.raises(ValueError, match="Duplicate sample ids"):
        hx.MultimodalData.from_arrays({"a": x}, ids=[1, 2, 2, 3])
    with pytest.raises(ValueError, match="numeric"):
        hx.MultimodalData.from_arrays({"a": np.array([["u", "v"]] * 4)})


def test_from_frames_aligns_ids_and_marks_missing():
    labs = pd.DataFrame({"pid": [1, 2, 3], "na": [1.0, 2.0, 3.0], "k": [4.0, 5.0, 6.0]})
    notes = pd.DataFrame({"pid": [3, 4], "e0": [0.1, 0.2]})
    d = hx.MultimodalData.from_frames({"labs": labs, "notes": notes}, id_column="pid")
    assert list(d.ids) == [1, 2, 3, 4]
    assert d.observed.tolist() == [[True, False], [True, False], [True, True], [False, True]]
    assert d.feature_names["labs"] == ["na", "k"]
    np.testing.assert_allclose(d.X["labs"][2], [3.0, 6.0])
    with pytest.raises(ValueError, match="non-numeric column 'txt'"):
        hx.MultimodalData.from_frames({"a": pd.DataFrame({"pid": [1], "txt": ["x"]})}, id_column="pid")
    with pytest.raises(ValueError, match="duplicate ids"):
        hx.MultimodalData.from_frames({"a": pd.DataFrame({"pid": [1, 1], "v": [1.0, 2.0]})}, id_column="pid")


def test_subset_and_chunks():
    data, _ = hx.simulate(n=100, dims=(3, 4), ranks=1, missing=0.3, seed=1)
    sub = data.subset(np.arange(10, 20))
    assert sub.n_samples == 10
    np.testing.assert_array_equal(sub.observed, data.observed[10:20])
    chunks = list(data.iter_chunks(32))
    assert [c.observed.shape[0] for c in chunks] == [32, 32, 32, 4]


def test_parquet_source_streams_batches(tmp_path):
    data, _ = hx.simulate(n=250, dims=(3, 2), ranks=1, missing=0.2, seed=2)
    df = pd.DataFrame(np.hstack([data.X["a"], data.X["b"]]), columns=["a0", "a1", "a2", "b0", "b1"])
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    src = hx.ParquetSource(str(path), {"a": ["a0", "a1", "a2"], "b": ["b0", "b1"]}, batch_size=100)
    assert src.n_samples == 250
    chunks = list(src.iter_chunks())
    assert [c.observed.shape[0] for c in chunks] == [100, 100, 50]
    np.testing.assert_array_equal(np.vstack([c.observed for c in chunks]), data.observed)
    with pytest.raises(ValueError, match="column 'zz'"):
        hx.ParquetSource(str(path), {"a": ["zz"]})
