"""Loading modality tables and outcomes from awkward files: each loads with an accurate report or
fails with a LoadError naming the file and the problem."""

import gzip
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hcl_explore as hx
from hcl_explore.cli import main

N = 30
IDS = [f"P{i:03d}" for i in range(N)]


@pytest.fixture
def base():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"patient_id": IDS, "x": rng.normal(size=N).round(3), "y": rng.normal(size=N).round(3)})


@pytest.fixture
def other(tmp_path):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"patient_id": IDS, "z": rng.normal(size=N).round(3), "w": rng.normal(size=N).round(3)})
    path = tmp_path / "other.csv"
    df.to_csv(path, index=False)
    return path


def _load(path, other):
    return hx.load_modalities({"m": path, "o": other})


def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _assert_values(d, base):
    np.testing.assert_allclose(d.X["m"][: len(base)], base[["x", "y"]].to_numpy())
    assert d.feature_names["m"] == ["x", "y"]
    assert list(d.ids[:N]) == IDS


# ------------------------------------------------------------------ files that load
@pytest.mark.parametrize("kind", ["bom", "crlf", "utf16", "gzip", "quoted", "tab_in_csv", "trailing_rows_only", "cr_only"])
def test_awkward_text_files_load_with_the_right_values(tmp_path, base, other, kind):
    txt = base.to_csv(index=False)
    if kind == "bom":
        p = _write(tmp_path, "f.csv", b"\xef\xbb\xbf" + txt.encode())
    elif kind == "crlf":
        p = _write(tmp_path, "f.csv", txt.replace("\n", "\r\n").encode())
    elif kind == "cr_only":
        p = _write(tmp_path, "f.csv", txt.replace("\n", "\r").encode())
    elif kind == "utf16":
        p = _write(tmp_path, "f.csv", txt.encode("utf-16"))
    elif kind == "gzip":
        p = _write(tmp_path, "f.csv.gz", gzip.compress(txt.encode(), mtime=0))
    elif kind == "quoted":
        p = _write(tmp_path, "f.csv", base.to_csv(index=False, quoting=1).encode())
    elif kind == "tab_in_csv":
        p = _write(tmp_path, "f.csv", base.to_csv(index=False, sep="\t").encode())
    else:
        lines = txt.strip("\n").split("\n")
        p = _write(tmp_path, "f.csv", (lines[0] + "\n" + "\n".join(ln + "," for ln in lines[1:]) + "\n").encode())
    d = _load(p, other)
    _assert_values(d, base)
    rep = d.report["modalities"]["m"]
    assert rep["dropped"] == [] and rep["cells_imputed"] == 0
    if kind == "tab_in_csv":
        assert rep["delimiter"] == "tab" and "extension" in rep["notes"][0]
    if kind == "bom":
        assert "BOM" in rep["encoding"] and d.feature_names["m"][0] == "x"


def test_latin1_and_mixed_encodings_keep_their_names(tmp_path, base, other):
    txt = base.rename(columns={"x": "x_café"}).to_csv(index=False)
    d = _load(_write(tmp_path, "latin.csv", txt.encode("latin-1")), other)
    assert d.feature_names["m"][0] == "x_café"
    assert d.report["modalities"]["m"]["encoding"] == "cp1252"
    # UTF-8 text with one Latin-1 byte in a later column name: UTF-8 kept, the bad byte replaced.
    mixed = base.rename(columns={"x": "x_café", "y": "y_\u00fc"}).to_csv(index=False).encode()
    mixed = mixed.replace("y_\u00fc".encode(), "y_\u00fc".encode("latin-1"))
    d = _load(_write(tmp_path, "mixed.csv", mixed), other)
    assert d.feature_names["m"][0] == "x_café" and d.feature_names["m"][1].startswith("y_")
    assert "mixes text encodings" in d.report["modalities"]["m"]["notes"][0]
    np.testing.assert_allclose(d.X["m"][:N], base[["x", "y"]].to_numpy())


def test_thousands_separators_bounds_and_decimal_commas(tmp_path, base, other):
    lines = ["patient_id,x,y"] + [f'{i},"{a * 1e4:,.1f}",<{abs(b):.3f}' for i, a, b in zip(IDS, base.x, base.y)]
    d = _load(_write(tmp_path, "t.csv", ("\n".join(lines) + "\n").encode()), other)
    np.testing.assert_allclose(d.X["m"][:N, 0], (base.x * 1e4).round(1))
    np.testing.assert_allclose(d.X["m"][:N, 1], base.y.abs().round(3))
    conv = {c["column"]: " ".join(c["notes"]) for c in d.report["modalities"]["m"]["converted"]}
    assert "thousands" in conv["x"] and "bound" in conv["y"]
    # A semicolon file with decimal commas: '0,126' is 0.126, not 126.
    semi = base.to_csv(index=False, sep=";", decimal=",")
    d = _load(_write(tmp_path, "s.csv", semi.encode()), other)
    _assert_values(d, base)
    assert d.report["modalities"]["m"]["delimiter"] == "semicolon"


def test_trailing_empty_columns_are_dropped_and_reported(tmp_path, base, other):
    txt = base.to_csv(index=False).replace("\n", ",,\n")
    d = _load(_write(tmp_path, "f.csv", txt.encode()), other)
    _assert_values(d, base)
    reasons = [x["reason"] for x in d.report["modalities"]["m"]["dropped"]]
    assert len(reasons) == 2 and all("empty" in r for r in reasons)


def test_column_kinds_are_cleaned_and_reported(tmp_path, other):
    rng = np.random.default_rng(3)
    df = pd.DataFrame({
        "patient_id": IDS,
        "age": rng.integers(20, 90, N),
        "sex": rng.choice(["F", "M"], N),
        "stage": rng.choice(["I", "II", "III"], N),
        "comment": [f"patient said {w} today" for w in rng.choice(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"], N)],
        "accession": [f"ACC{i:05d}" for i in range(N)],
        "site": "north",
        "admitted": pd.date_range("2024-01-01", periods=N).strftime("%Y-%m-%d"),
        "mostly_blank": [1.0, 2.0] + [np.nan] * (N - 2),
        "crp": rng.gamma(2, 3, N).round(1),
    })
    df.loc[[4, 9], "crp"] = np.nan
    df.loc[7, "age"] = np.nan
    p = tmp_path / "t.csv"
    df.to_csv(p, index=False)
    d = _load(p, other)
    rep = d.report["modalities"]["m"]
    dropped = {x["column"]: x["reason"] for x in rep["dropped"]}
    assert dropped["comment"].startswith("free text")
    assert dropped["accession"].startswith("id-like")
    assert dropped["site"].startswith("constant")
    assert dropped["admitted"] == "date/time"
    assert dropped["mostly_blank"].startswith("mostly missing")
    names = d.feature_names["m"]
    ref_sex = df.sex.value_counts().index[0]
    assert {"age", "crp", f"sex={'M' if ref_sex == 'F' else 'F'}"} <= set(names)
    assert sum(n.startswith("stage=") for n in names) == 2  # 3 levels, most frequent = reference
    assert rep["imputed"] == {"crp": 2, "age": 1} and rep["cells_imputed"] == 3
    crp = d.X["m"][:N, names.index("crp")]
    assert crp[4] == pytest.approx(np.nanmean(df.crp)) and crp[9] == crp[4]
    assert rep["features_kept"] == len(names) and rep["features_in"] == df.shape[1] - 1
    table = hx.report_frame(d.report)
    assert list(table.modality) == ["m", "o"] and int(table.loc[0, "cells_imputed"]) == 3
    assert int(table.loc[0, "shared_o"]) == N
    json.dumps(d.report)  # plain JSON, for the app and run directories


def test_non_numeric_cells_in_a_numeric_column_are_named(tmp_path, base, other):
    df = base.astype({"x": object})
    df.loc[5, "x"] = "n.d"
    d = _load(_write(tmp_path, "f.csv", df.to_csv(index=False).encode()), other)
    conv = d.report["modalities"]["m"]["converted"][0]
    assert conv["column"] == "x" and "row 6" in conv["notes"][0] and "'n.d'" in conv["notes"][0]
    assert d.report["modalities"]["m"]["imputed"] == {"x": 1}


def test_ids_match_across_files_stored_as_int_and_text(tmp_path):
    rng = np.random.default_rng(4)
    a = pd.DataFrame({"id": np.arange(1, 41), "u": rng.normal(size=40)})
    b = pd.DataFrame({"id": [f"{i:03d}" for i in range(21, 61)], "v": rng.normal(size=40)})
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    d = hx.load_modalities({"a": tmp_path / "a.csv", "b": tmp_path / "b.csv"})
    assert d.n_samples == 60  # 1..60; 21..40 shared
    assert d.overlap().loc["a", "b"] == 20
    assert d.report["modalities"]["a"]["shared"] == {"b": 20}
    # Samples present in only one file lack the other modality; none are dropped.
    assert d.observed.sum(axis=0).tolist() == [40, 40]
    i = list(d.ids).index("25")
    np.testing.assert_allclose(d.X["b"][i], b.v[4])


def test_empty_and_mostly_empty_rows_mean_the_modality_is_missing(tmp_path, base, other):
    df = base.copy()
    df["q"] = 1.0 + np.arange(N)
    df.loc[3, ["x", "y", "q"]] = np.nan
    df.loc[8, ["x", "y"]] = np.nan
    d = _load(_write(tmp_path, "f.csv", df.to_csv(index=False).encode()), other)
    j = d.modalities.index("m")
    assert not d.observed[3, j] and not d.observed[8, j] and d.observed[4, j]
    rep = d.report["modalities"]["m"]
    assert rep["samples"] == N - 2 and rep["empty_rows"] == 1 and rep["rows_treated_missing"] == 1
    assert rep["cells_imputed"] == 0


def test_parquet_nested_columns_are_flattened_or_dropped(tmp_path, base, other):
    t = pa.table({"patient_id": IDS, "x": base.x, "s": pa.array([{"a": float(i), "b": float(i % 7)} for i in range(N)]),
                  "l": pa.array([[1.0, 2.0]] * N)})
    pq.write_table(t, tmp_path / "n.parquet")
    d = _load(tmp_path / "n.parquet", other)
    assert d.feature_names["m"] == ["x", "s.a", "s.b"]
    assert "'l' dropped: nested" in d.report["modalities"]["m"]["notes"][0]
    # Format from content when the extension is wrong.
    pq.write_table(pa.table({"patient_id": IDS, "x": base.x, "y": base.y}), tmp_path / "really_parquet.csv")
    d = _load(tmp_path / "really_parquet.csv", other)
    _assert_values(d, base)


def test_dataframes_are_sources_too(base, other):
    d = hx.load_modalities({"m": base, "o": other})
    _assert_values(d, base)
    d2 = hx.load_modalities({"m": base.set_index("patient_id"), "o": other})
    _assert_values(d2, base)


def test_preprocessing_is_reused_for_new_samples(tmp_path, other):
    rng = np.random.default_rng(5)
    train = pd.DataFrame({"patient_id": IDS, "g": rng.choice(["a", "b", "c"], N), "x": rng.normal(size=N)})
    train.loc[2, "x"] = np.nan
    d = hx.load_modalities({"m": train, "o": other})
    spec = d.report["preprocessing"]
    new = pd.DataFrame({"patient_id": ["N1", "N2"], "g": ["c", "a"], "x": [np.nan, 2.0], "extra": [1, 2]})
    o_new = pd.DataFrame({"patient_id": ["N1", "N2"], "z": [0.0, 1.0], "w": [1.0, 0.0]})
    d2 = hx.load_modalities({"m": new, "o": o_new}, preprocessing=spec, min_samples=1)
    assert d2.feature_names == d.feature_names
    mean_x = float(np.nanmean(train.x))
    ix = d.feature_names["m"].index("x")
    assert d2.X["m"][0, ix] == pytest.approx(mean_x)  # the training mean, not the new samples'
    gc = d.feature_names["m"].index("g=c") if "g=c" in d.feature_names["m"] else None
    if gc is not None:
        assert d2.X["m"][0, gc] == 1.0 and d2.X["m"][1, gc] == 0.0
    with pytest.raises(hx.LoadError, match="column 'x' used by the fitted preprocessing is missing"):
        hx.load_modalities({"m": new.drop(columns="x"), "o": o_new}, preprocessing=spec, min_samples=1)


# ------------------------------------------------------------------ files that fail, clearly
BAD = {
    "binary.csv": (bytes(range(256)) * 10, "binary file"),
    "empty.csv": (b"", "empty"),
    "blank.csv": (b"\n\n  \n", "no text"),
    "header_only.csv": (b"patient_id,x,y\n", "no data rows"),
    "fake.xlsx": (b"PK\x03\x04" + b"\x00" * 100, "ZIP archive"),
    "fake.parquet": (b"patient_id,x\n1,2\n", "not a Parquet file"),
    "single.csv": (("patient_id\n" + "\n".join(IDS) + "\n").encode(), "only one column"),
    "mismatch.csv": (("patient_id\tx\ty\n" + "\n".join(f"{i},1,2" for i in IDS) + "\n").encode(), "mismatched delimiter"),
    "ragged.csv": (("patient_id,x,y\n" + "\n".join(f"{i},1,{k}" for k, i in enumerate(IDS)) + "\nP999,1,2,3\n").encode(),
                   "line 32 has 4 fields but the header has 3"),
    "noid.csv": (("x,y\n" + "\n".join(f"{k}.5,{k % 3}.25" for k in range(N)) + "\n").encode(), "no id column found"),
    "dupid.csv": (("patient_id,x,y\n" + "\n".join(f"{i},{k},{k}" for k, i in enumerate(IDS + IDS[:2])) + "\n").encode(),
                  "2 duplicate id(s) in column 'patient_id', e.g. 'P000' (rows 1, 31)"),
    "blankid.csv": (("patient_id,x,y\n" + "\n".join(f"{i},{k},{k}" for k, i in enumerate(IDS[:-1] + [""])) + "\n").encode(),
                    "blank in 1 row(s) (row 30)"),
    "nofeat.csv": (("patient_id,c,t\n" + "\n".join(f"{i},1,free text {i}" for i in IDS) + "\n").encode(),
                   "no usable feature column ('c': constant"),
    "few.csv": (b"patient_id,x,y\nP000,1,2\nP001,2,3\nP002,5,1\n", "3 sample(s) with data; at least 10"),
    "disjoint.csv": (("patient_id,x,y\n" + "\n".join(f"Q{k},{k},{k % 4}" for k in range(N)) + "\n").encode(),
                     "groups with no sample in common: {m} / {o}"),
    "dupcol.csv": (("patient_id,x,x\n" + "\n".join(f"{i},1,2" for i in IDS) + "\n").encode(), "duplicate column name"),
    "extra_field.csv": (("patient_id,x\n" + "\n".join(f"{i},{k},{k * 2}" for k, i in enumerate(IDS)) + "\n").encode(),
                        "one more field than the header"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_fail_with_a_message_naming_the_file(tmp_path, other, name):
    data, expect = BAD[name]
    p = _write(tmp_path, name, data)
    with pytest.raises(hx.LoadError) as err:
        _load(p, other)
    msg = str(err.value)
    assert expect in msg
    if "groups" not in expect:
        assert msg.startswith(name + ":"), msg


def test_missing_file_and_too_large_file(tmp_path, base, other):
    with pytest.raises(hx.LoadError, match="nope.csv: file not found"):
        _load(tmp_path / "nope.csv", other)
    p = tmp_path / "big.csv"
    base.to_csv(p, index=False)
    with pytest.raises(hx.LoadError, match=r"big.csv: .* needs about .* in memory .*ParquetSource"):
        hx.load_modalities({"m": p, "o": other}, memory_limit=1000)


def test_given_id_column_must_exist(tmp_path, base, other):
    with pytest.raises(hx.LoadError, match="f.csv: no id column 'pid'"):
        hx.load_modalities({"m": _write(tmp_path, "f.csv", base.to_csv(index=False).encode()), "o": other}, id_column="pid")


# ------------------------------------------------------------------ outcomes
def test_outcomes_kinds_and_matching(tmp_path):
    rng = np.random.default_rng(6)
    data = hx.MultimodalData.from_arrays({"a": rng.normal(size=(N, 3))}, ids=IDS)
    out = pd.DataFrame({
        "patient_id": IDS[5:] + ["X1", "X2"],
        "readmit": rng.choice(["yes", "no"], N - 5 + 2),
        "los_days": rng.gamma(2, 2, N - 5 + 2).round(1),
        "discharge": rng.choice(["home", "snf", "rehab"], N - 5 + 2),
        "note": [f"free {i}" for i in range(N - 3)],
    })
    out.loc[0, "los_days"] = np.nan
    out.to_csv(tmp_path / "out.csv", index=False)
    oc = hx.load_outcomes(tmp_path / "out.csv")
    assert oc.kinds == {"readmit": "binary", "los_days": "continuous", "discharge": "multiclass"}
    assert oc.positive["readmit"] == "yes"
    assert oc.labels == {"readmit": ["no", "yes"], "discharge": ["home", "rehab", "snf"]}
    assert oc.report["dropped"][0]["column"] == "note"
    y = oc.codes("readmit", data)
    assert np.isnan(y[:5]).all() and set(np.unique(y[5:])) <= {0.0, 1.0}
    assert y[5] == float(out.readmit[0] == "yes")
    # y() keeps the original labels, categories in code order (negative, positive)
    cat = oc.y("readmit", data)
    assert list(cat.categories) == ["no", "yes"] and pd.isna(cat[:5]).all() and cat[5] == out.readmit[0]
    assert list(oc.align(data)["readmit"].iloc[5:8]) == list(out.readmit[:3])  # labels, not 0/1
    assert set(oc.codes("discharge", data)[5:]) == {0.0, 1.0, 2.0}
    m = oc.report["matching"]
    assert m["matched"] == N - 5 and m["samples_without_outcome_row"] == 5
    assert m["outcome_ids_not_in_data"] == 2 and m["examples_not_in_data"] == ["X1", "X2"]
    assert m["labelled"]["los_days"] == N - 6
    with pytest.raises(hx.LoadError, match="No outcome column 'nope'"):
        oc.y("nope", data)


def test_outcomes_errors(tmp_path):
    (tmp_path / "o.csv").write_text("patient_id,y\nA,1\nA,0\nB,1\n")
    with pytest.raises(hx.LoadError, match="o.csv: duplicate ids in column 'patient_id'"):
        hx.load_outcomes(tmp_path / "o.csv")
    (tmp_path / "c.csv").write_text("patient_id,y\nA,1\nB,1\nC,1\n")
    with pytest.raises(hx.LoadError, match=r"c.csv: no usable outcome column \('y': constant"):
        hx.load_outcomes(tmp_path / "c.csv")


# ------------------------------------------------------------------ CLI
def test_inspect_prints_the_report(tmp_path, base, other, capsys):
    df = base.copy()
    df["flag"] = 1
    p = tmp_path / "labs.csv"
    df.to_csv(p, index=False)
    (tmp_path / "out.csv").write_text("patient_id,dead\n" + "".join(f"{i},{k % 2}\n" for k, i in enumerate(IDS)))
    assert main(["inspect", str(p), f"other={other}", "--outcomes", str(tmp_path / "out.csv")]) == 0
    text = capsys.readouterr().out
    assert "30 samples" in text and "dropped 'flag': constant" in text
    assert "dead: binary, 30 labelled, 15 positive" in text and "matched to 30 of 30" in text
    assert main(["inspect", str(p), f"other={other}", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["data"]["modalities"]["labs"]["features_kept"] == 2
    assert main(["inspect", str(tmp_path / "missing.csv"), f"other={other}"]) == 2
    assert "missing.csv: file not found" in capsys.readouterr().err


def test_a_callers_dataframe_is_never_modified(other):
    rng = np.random.default_rng(9)
    df = pd.DataFrame({"patient_id": IDS, "x": rng.normal(size=N), "y": rng.normal(size=N)})
    df.loc[3, "x"] = np.nan
    df.loc[5, "y"] = np.inf
    before = df.copy(deep=True)
    d = hx.load_modalities({"m": df, "o": other})
    assert d.report["modalities"]["m"]["cells_imputed"] == 2
    pd.testing.assert_frame_equal(df, before)


# ------------------------------------------------------------------ wide tables, damaged archives, odd inputs
def _wide(rng, d, name="g"):
    X = rng.normal(size=(N, d)) * np.exp(rng.normal(size=(N, d)))  # full-precision floats (~20 chars each)
    df = pd.DataFrame(X, columns=[f"{name}{j}" for j in range(d)])
    df.insert(0, "patient_id", IDS)
    return df, X


@pytest.mark.parametrize("kind", ["long_rows", "long_header", "long_rows_gzip", "long_rows_tsv"])
def test_tables_wider_than_the_sniffed_head_load_exactly(tmp_path, other, kind):
    # Header plus first data row beyond 64 KiB: the sniffer read 64 KiB, dropped the cut line and
    # said "has a header line but no data rows" (or "holds no text").
    rng = np.random.default_rng(11)
    if kind == "long_header":  # 3,200 long names: the header line alone is ~130 KiB
        df, X = _wide(rng, 3200, name="ENSG00000000000.12_transcript_variant_")
    else:  # 5,000 full-precision floats: each data row is ~100 KiB
        df, X = _wide(rng, 5000)
    sep = "\t" if kind.endswith("tsv") else ","
    txt = df.to_csv(index=False, sep=sep).encode()
    assert len(txt.split(b"\n")[0]) + len(txt.split(b"\n")[1]) > 1 << 16
    if kind.endswith("gzip"):
        p = _write(tmp_path, "wide.csv.gz", gzip.compress(txt, mtime=0))
    else:
        p = _write(tmp_path, "wide.tsv" if sep == "\t" else "wide.csv", txt)
    d = _load(p, other)
    assert d.feature_names["m"] == list(df.columns[1:])
    np.testing.assert_array_equal(d.X["m"], X)  # exact, not approximately equal
    assert list(d.ids) == IDS
    assert d.report["modalities"]["m"]["delimiter"] == ("tab" if sep == "\t" else "comma")


def _gz_table():
    # ~300 KiB of text, so that a damage past the first 64 KiB is met by the parser, not the sniffer.
    df, _ = _wide(np.random.default_rng(12), 500)
    return gzip.compress(df.to_csv(index=False).encode(), mtime=0)


def _damage(raw: bytes, how: str) -> bytes:
    b = bytearray(raw)
    if how == "truncated":
        return raw[: len(raw) // 2]
    if how == "truncated_in_head":
        return raw[:200]
    if how == "bad_crc":
        b[-8] ^= 0xFF
    elif how == "corrupt_data":
        for k in range(len(b) // 2, len(b) // 2 + 64):
            b[k] ^= 0xA5
    elif how == "bad_header":
        b[2] = 7  # an unknown compression method
    elif how == "trailing_garbage":
        b += b"not gzip at all"
    return bytes(b)


@pytest.mark.parametrize("how", ["truncated", "truncated_in_head", "bad_crc", "corrupt_data", "bad_header", "trailing_garbage"])
def test_damaged_gzip_files_fail_naming_the_file(tmp_path, other, capsys, how):
    p = _write(tmp_path, "labs.csv.gz", _damage(_gz_table(), how))
    with pytest.raises(hx.LoadError) as err:
        _load(p, other)
    msg = str(err.value)
    assert msg.startswith("labs.csv.gz: ") and "gzip" in msg, msg
    assert main(["inspect", str(p), f"other={other}"]) == 2  # a message, not a traceback
    assert "labs.csv.gz: " in capsys.readouterr().err
    with pytest.raises(hx.LoadError, match="^labs.csv.gz: "):
        hx.load_outcomes(p)


def test_duplicate_dataframe_and_parquet_columns_are_named(tmp_path, other):
    rng = np.random.default_rng(13)
    df = pd.DataFrame(rng.normal(size=(N, 4)), columns=["x", "y", "x", "z"])
    df.insert(0, "patient_id", IDS)
    # Files with a repeated header name are refused (see BAD["dupcol.csv"]); DataFrames alike.
    with pytest.raises(hx.LoadError, match=r"^<DataFrame 'm'>: duplicate column name\(s\): \['x'\]"):
        hx.load_modalities({"m": df, "o": other})
    # Names that only collide once made text (1 and '1').
    df2 = pd.DataFrame({"patient_id": IDS, 1: rng.normal(size=N), "1": rng.normal(size=N), "y": rng.normal(size=N)})
    with pytest.raises(hx.LoadError, match=r"duplicate column name\(s\): \['1'\]"):
        hx.load_modalities({"m": df2, "o": other})
    # An id index whose name is also a column.
    df3 = df.loc[:, ~df.columns.duplicated()].set_index("patient_id", drop=False)
    with pytest.raises(hx.LoadError, match=r"duplicate column name\(s\): \['patient_id'\]"):
        hx.load_modalities({"m": df3, "o": other})
    with pytest.raises(hx.LoadError, match=r"^<outcomes DataFrame>: duplicate column name\(s\): \['x'\]"):
        hx.load_outcomes(df)
    t = pa.Table.from_arrays([pa.array(IDS)] + [pa.array(df.iloc[:, k + 1]) for k in range(4)],
                             names=["patient_id", "x", "y", "x", "z"])
    pq.write_table(t, tmp_path / "dup.parquet")
    with pytest.raises(hx.LoadError, match=r"^dup.parquet: duplicate column name\(s\): \['x'\]"):
        _load(tmp_path / "dup.parquet", other)


ODD_NAMES = ["file:x.csv", "http:x.csv", "s3:x.csv", "a#b?.csv", "50% {1} [2].csv", "é ü.csv", "new\nline.csv",
             "file:x.parquet", "s3:x.parquet", "a#b?.parquet", "é ü.parquet"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_files_with_odd_names_load_and_are_named_as_given(tmp_path, base, other, monkeypatch, name):
    # A relative name that looks like a URL ('file:x.csv', 's3:x.parquet') was opened as one by
    # pandas or pyarrow.
    monkeypatch.chdir(tmp_path)
    parquet = name.endswith(".parquet")
    if parquet:
        base.to_parquet(tmp_path / name)
    else:
        base.to_csv(tmp_path / name, index=False)
    for src in (name, tmp_path / name, str(tmp_path / name).encode()):
        _assert_values(hx.load_modalities({"m": src, "o": other}), base)
    (tmp_path / name).write_bytes(b"PAR1 broken" if parquet else b"patient_id,x,y\n")
    for src in (name, tmp_path / name, str(tmp_path / name).encode()):
        with pytest.raises(hx.LoadError) as err:
            hx.load_modalities({"m": src, "o": other})
        assert str(err.value).startswith(name + ": "), str(err.value)
        with pytest.raises(hx.LoadError) as err:
            hx.load_outcomes(src)
        assert str(err.value).startswith(name + ": "), str(err.value)


def test_infinite_outcomes_are_missing_and_reported(tmp_path):
    rng = np.random.default_rng(14)
    los = rng.gamma(2, 2, N).round(1).astype(object)
    los[[3, 7]] = ["inf", "-inf"]
    dead = (np.arange(N) % 2).astype(object)
    dead[5] = "inf"
    (tmp_path / "o.csv").write_text("patient_id,los,dead\n" + "".join(f"{i},{a},{b}\n" for i, a, b in zip(IDS, los, dead)))
    with pytest.warns(UserWarning) as rec:
        oc = hx.load_outcomes(tmp_path / "o.csv")
    msgs = sorted(str(w.message) for w in rec)
    assert msgs == ["o.csv: column 'dead': 1 infinite value(s) set missing.",
                    "o.csv: column 'los': 2 infinite value(s) set missing."]
    assert oc.kinds == {"los": "continuous", "dead": "binary"}
    assert np.isnan(oc.frame["los"].iloc[[3, 7]]).all() and np.isfinite(oc.frame["los"].drop(index=["P003", "P007"])).all()
    assert np.isnan(oc.frame["dead"].iloc[5]) and oc.positive["dead"] == "1"
    r = oc.report
    assert r["outcomes"]["los"]["labelled"] == N - 2 and np.isfinite(r["outcomes"]["los"]["mean"])
    assert np.isfinite(r["outcomes"]["los"]["sd"]) and r["outcomes"]["dead"]["labelled"] == N - 1
    assert r["converted"] == [{"column": "los", "notes": ["2 infinite value(s) set missing"]},
                              {"column": "dead", "notes": ["1 infinite value(s) set missing"]}]
    assert sorted(r["warnings"]) == msgs
    # A DataFrame source, and a column with nothing but infinities.
    df = pd.DataFrame({"patient_id": IDS, "y": rng.normal(size=N), "z": np.inf})
    df.loc[0, "y"] = -np.inf
    with pytest.warns(UserWarning, match="column 'y': 1 infinite"):
        oc = hx.load_outcomes(df)
    assert oc.kinds == {"y": "continuous"} and np.isnan(oc.frame["y"].iloc[0])
    assert oc.report["dropped"] == [{"column": "z", "reason": f"empty ({N} infinite value(s) set missing)"}]
