"""The fault battery of issue 16, rebuilt: fault, bad-input and hostile-file cases against the library,
the CLI and the run folders. Each case runs in its own temporary folder and checks that nothing was
lost (the workspace's files hashed before and after), that a failure is a clear ``ValueError`` naming
the file / column / row (CLI: one line on stderr and a nonzero exit), and that results are right.

    .venv/bin/python benchmarks/fault_battery.py            # every case, a pass/fail table
    .venv/bin/python benchmarks/fault_battery.py -k gzip    # the cases whose name holds 'gzip'

The suite guards the same cases (tests/test_faults.py, test_safe_files.py, test_io.py, ...); this
script is the whole battery in one run, for a before/after count.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import traceback
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hcl_explore as hx  # noqa: E402
from hcl_explore import datasets, report, runs  # noqa: E402
from hcl_explore.runs import files as RF  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from workspace_helpers import wait_for_run, write_npz_bomb  # noqa: E402

CASES: list[tuple[str, str, callable]] = []
RANKS = {("a", "b"): 1, ("a",): 1, ("b",): 1}
RANKS_JSON = '{"a+b": 1, "a": 1, "b": 1}'


def case(category: str):
    def deco(fn):
        CASES.append((category, fn.__name__, fn))
        return fn
    return deco


# ------------------------------------------------------------------------------------------ helpers
def tree_hashes(root) -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for f in names:
            p = os.path.join(dirpath, f)
            if f.endswith(".lock"):
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def no_tmp(root) -> None:
    for dirpath, _, files in os.walk(root):
        stray = [f for f in files if f.endswith(".tmp") or ".tmp." in f]
        assert not stray, f"stray temporary files in {dirpath}: {stray}"


def expect_error(fn, *needles, exc=ValueError, peak_mb: float | None = None):
    """``fn()`` raises ``exc`` whose message holds every needle; returns the message. With
    ``peak_mb``, the Python allocations while it runs stay below that."""
    if peak_mb is not None:
        tracemalloc.start()
    try:
        fn()
    except exc as e:
        msg = str(e)
        for n in needles:
            assert str(n) in msg, f"message lacks {n!r}: {msg}"
        return msg
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"raised {type(e).__name__} (not {exc.__name__}): {e}") from None
    finally:
        if peak_mb is not None:
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            assert peak < peak_mb, f"allocated {peak:.0f} MB before refusing"
    raise AssertionError(f"no {exc.__name__} raised")


def sim_frames(n=120, dims=None, seed=0, id_col="sid", names=None):
    dims = dims or {"a": 5, "b": 4}
    data, _ = hx.simulate(n=n, dims=dims, ranks={k: v for k, v in RANKS.items() if all(m in dims for m in k)},
                          noise=0.3, seed=seed)
    out = {}
    for m in data.modalities:
        cols = (names or {}).get(m) or data.feature_names[m]
        df = pd.DataFrame(data.X[m], columns=cols).round(5)
        df.insert(0, id_col, [f"S{i}" for i in range(n)])
        out[m] = df
    return out


def write_csvs(t: Path, frames, suffix="") -> dict[str, str]:
    paths = {}
    for m, df in frames.items():
        p = t / f"{m}{suffix}.csv"
        df.to_csv(p, index=False)
        paths[m] = str(p)
    return paths


_MODEL_CACHE: dict[str, str] = {}


def fitted_model_file(kind="linear") -> str:
    """A small fitted model saved once per battery run (copied by the cases that damage it)."""
    if kind not in _MODEL_CACHE:
        d = tempfile.mkdtemp(prefix="battery-model-")
        frames = sim_frames()
        data = hx.load_modalities(write_csvs(Path(d), frames), id_column="sid")
        if kind == "linear":
            m = hx.HCL(lattice="full", ranks="auto", random_state=0).fit(data)
        else:
            m = hx.HCL(lattice="full", ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, estimator="contrastive",
                       max_epochs=2, hidden=[8], device="cpu", random_state=0).fit(data)
        p = os.path.join(d, f"{kind}.npz")
        m.save(p)
        _MODEL_CACHE[kind] = p
    return _MODEL_CACHE[kind]


def load_npz_raw(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_npz(path, arrays, meta=None, compress=False):
    arrays = dict(arrays)
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    (np.savez_compressed if compress else np.savez)(path, **arrays)


def model_variant(t: Path, mutate_meta=None, mutate_arrays=None, name="m.npz") -> str:
    z = load_npz_raw(fitted_model_file())
    meta = json.loads(str(z.pop("meta")[()]))
    if mutate_meta:
        meta = mutate_meta(meta) or meta
    if mutate_arrays:
        z = mutate_arrays(z) or z
    p = str(t / name)
    write_npz(p, z, meta)
    return p


def cli(*argv, env=None) -> tuple[int, str, str]:
    r = subprocess.run([sys.executable, "-m", "hcl_explore", *map(str, argv)], capture_output=True, text=True,
                       cwd=str(ROOT), env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}, timeout=600)
    return r.returncode, r.stdout, r.stderr


def cli_one_line_error(*argv, needles=()):
    rc, out, err = cli(*argv)
    assert rc != 0, f"exit 0: {out[-500:]}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"stderr is {len(lines)} lines: {err[-1500:]}"
    assert "Traceback" not in err and "Traceback" not in out, (out[-500:], err[-500:])
    for n in needles:
        assert str(n) in lines[0], f"{n!r} not in {lines[0]!r}"
    rc2, out2, err2 = cli("--debug", *argv)
    assert rc2 != 0 and "Traceback" in err2, f"--debug shows no traceback: {err2[-500:]}"
    return lines[0]


def stored_dataset(ws, frames_by_name: dict[str, bytes], outcomes: tuple[str, bytes] | None = None, id_column="sid"):
    staged = [datasets.stage_upload(ws, n, b, id_column=id_column) for n, b in frames_by_name.items()]
    if outcomes:
        staged.append(datasets.stage_upload(ws, outcomes[0], outcomes[1], "outcomes", id_column=id_column))
    return datasets.create_dataset(ws, staged, id_column=id_column)


def csv_bytes(df) -> bytes:
    return df.to_csv(index=False).encode()


def fit_run(ws, spec, **extra) -> str:
    rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full", "lattice_name": "full",
                               "ranks": "auto", **extra})
    rc = runs.run_worker(runs.run_path(ws, rid))
    assert rc == 0, runs.read_status(ws, rid)
    return rid


def predict_run(ws, parent, outcome, options=None) -> dict:
    rid = runs.create_run(ws, {"kind": "predict", "parent": parent, "outcome": outcome,
                               "options": options or {"n_bootstrap": 20, "cv": 3}})
    runs.run_worker(runs.run_path(ws, rid))
    return runs.read_status(ws, rid)


def outcome_frame(n=120, seed=0, cont=False):
    rng = np.random.default_rng(seed)
    frames = sim_frames(n=n)
    y = frames["a"].iloc[:, 1].to_numpy() + 0.3 * rng.normal(size=n)
    return pd.DataFrame({"sid": [f"S{i}" for i in range(n)], "y": y if cont else (y > 0).astype(int)})


# ============================================================================ wide and damaged tables
@case("loaders")
def wide_header_plus_first_row_over_64k(t):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(6, 3000)), columns=[f"feature_{j:05d}" for j in range(3000)])
    df.insert(0, "sid", [f"S{i}" for i in range(6)])
    p = t / "wide.csv"
    df.to_csv(p, index=False, float_format="%.17g")
    with open(p, "rb") as fh:
        first_two = fh.readline() + fh.readline()
    assert len(first_two) > 65536
    got, _ = hx.read_table(str(p))
    assert got.shape == (6, 3001) and np.allclose(got.iloc[:, 1:].to_numpy(), df.iloc[:, 1:].to_numpy())


@case("loaders")
def omics_30_by_5000(t):
    rng = np.random.default_rng(1)
    frames = {}
    for m in ("rna", "meth"):
        df = pd.DataFrame(rng.normal(size=(30, 5000)), columns=[f"{m}{j}" for j in range(5000)])
        df.insert(0, "sid", [f"S{i}" for i in range(30)])
        frames[m] = df
    paths = {}
    for m, df in frames.items():
        paths[m] = str(t / f"{m}.csv")
        df.to_csv(paths[m], index=False, float_format="%.17g")
    data = hx.load_modalities(paths, id_column="sid")
    assert data.n_samples == 30 and data.dims == {"rna": 5000, "meth": 5000}


@case("loaders")
def wide_tsv(t):
    rng = np.random.default_rng(2)
    df = pd.DataFrame(rng.normal(size=(5, 4000)), columns=[f"g{j}" for j in range(4000)])
    df.insert(0, "sid", [f"S{i}" for i in range(5)])
    p = t / "wide.tsv"
    df.to_csv(p, index=False, sep="\t", float_format="%.17g")
    got, info = hx.read_table(str(p))
    assert got.shape == (5, 4001) and info.delimiter == "\t"


@case("loaders")
def wide_csv_gz(t):
    rng = np.random.default_rng(3)
    df = pd.DataFrame(rng.normal(size=(4, 5000)), columns=[f"g{j}" for j in range(5000)])
    df.insert(0, "sid", [f"S{i}" for i in range(4)])
    p = t / "wide.csv.gz"
    df.to_csv(p, index=False, float_format="%.17g", compression="gzip")
    got, _ = hx.read_table(str(p))
    assert got.shape == (4, 5001)


@case("loaders")
def very_long_header_names(t):
    cols = ["c_" + "x" * 300 + str(j) for j in range(400)]  # a header line over 64 KiB by itself
    df = pd.DataFrame(np.arange(3 * 400).reshape(3, 400) * 0.5, columns=cols)
    df.insert(0, "sid", ["A", "B", "C"])
    p = t / "longnames.csv"
    df.to_csv(p, index=False)
    got, _ = hx.read_table(str(p))
    assert got.shape == (3, 401) and list(got.columns[1:]) == cols


@case("loaders")
def wide_semicolon_decimal_comma(t):
    rng = np.random.default_rng(4)
    vals = rng.normal(size=(12, 3000))
    header = ";".join(["sid"] + [f"v{j}" for j in range(3000)])
    rows = [";".join([f"S{i}"] + [f"{v:.15f}".replace(".", ",") for v in vals[i]]) for i in range(12)]
    p = t / "wide_semicolon.csv"
    p.write_text("\n".join([header] + rows) + "\n")
    data = hx.load_modalities({"x": str(p)}, id_column="sid")
    assert data.dims["x"] == 3000 and data.n_samples == 12


@case("loaders")
def truncated_csv_gz(t):
    df = sim_frames(n=2000)["a"]
    p = t / "t.csv.gz"
    df.to_csv(p, index=False, compression="gzip")
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    expect_error(lambda: hx.read_table(str(p)), "t.csv.gz")
    expect_error(lambda: hx.load_modalities({"a": str(p)}), "t.csv.gz")


@case("loaders")
def truncated_csv_gz_in_header(t):
    df = sim_frames(n=50)["a"]
    p = t / "h.csv.gz"
    df.to_csv(p, index=False, compression="gzip")
    p.write_bytes(p.read_bytes()[:30])
    expect_error(lambda: hx.read_table(str(p)), "h.csv.gz")


@case("loaders")
def corrupt_csv_gz_flipped(t):
    df = sim_frames(n=3000)["a"]
    p = t / "flip.csv.gz"
    df.to_csv(p, index=False, compression="gzip")
    raw = bytearray(p.read_bytes())
    for k in range(len(raw) // 2, len(raw) // 2 + 40):
        raw[k] ^= 0xFF
    p.write_bytes(bytes(raw))
    expect_error(lambda: hx.read_table(str(p)), "flip.csv.gz")


@case("loaders")
def gz_crc_damaged_tail(t):
    df = sim_frames(n=300)["a"]
    p = t / "crc.csv.gz"
    df.to_csv(p, index=False, compression="gzip")
    raw = bytearray(p.read_bytes())
    raw[-6] ^= 0xFF  # the CRC-32 in the trailer
    p.write_bytes(bytes(raw))
    expect_error(lambda: hx.read_table(str(p)), "crc.csv.gz")


@case("loaders")
def gz_of_binary(t):
    p = t / "bin.csv.gz"
    p.write_bytes(gzip.compress(bytes(range(256)) * 50))
    expect_error(lambda: hx.read_table(str(p)), "bin.csv.gz")


@case("loaders")
def truncated_parquet(t):
    df = sim_frames(n=500)["a"]
    p = t / "t.parquet"
    df.to_parquet(p, index=False)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    expect_error(lambda: hx.read_table(str(p)), "t.parquet")
    expect_error(lambda: hx.load_modalities({"a": str(p)}), "t.parquet")


@case("loaders")
def parquet_magic_then_garbage(t):
    p = t / "g.parquet"
    p.write_bytes(b"PAR1" + os.urandom(500) + b"PAR1")
    expect_error(lambda: hx.read_table(str(p)), "g.parquet")


@case("loaders")
def parquet_extension_not_parquet(t):
    p = t / "text.parquet"
    p.write_text("a,b\n1,2\n")
    expect_error(lambda: hx.read_table(str(p)), "text.parquet")


@case("loaders")
def empty_file(t):
    p = t / "empty.csv"
    p.write_bytes(b"")
    expect_error(lambda: hx.read_table(str(p)), "empty.csv")


@case("loaders")
def binary_as_csv(t):
    p = t / "fac.csv"
    p.write_bytes(os.urandom(4096))
    expect_error(lambda: hx.read_table(str(p)), "fac.csv")


@case("loaders")
def zip_as_csv(t):
    p = t / "book.csv"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.csv", "a,b\n1,2\n")
    expect_error(lambda: hx.read_table(str(p)), "book.csv")


@case("loaders")
def header_only(t):
    p = t / "hdr.csv"
    p.write_text("sid,x,y\n")
    expect_error(lambda: hx.read_table(str(p)), "hdr.csv", "no data rows")


@case("loaders")
def ragged_row_names_row(t):
    p = t / "ragged.csv"
    p.write_text("sid,x,y\n" + "".join(f"S{i},1,2\n" for i in range(20)) + "S99,1,2,3,4\n")
    msg = expect_error(lambda: hx.load_modalities({"r": str(p)}), "ragged.csv")
    assert "22" in msg or "line" in msg or "row" in msg, msg


@case("loaders")
def dataframe_duplicate_column_names(t):
    df = pd.DataFrame(np.ones((5, 3)), columns=["x", "x", "y"])
    df.insert(0, "sid", list("abcde"))
    expect_error(lambda: hx.load_modalities({"m": df}, id_column="sid"), "x")
    expect_error(lambda: hx.read_table(df, "frame"), "x")


@case("loaders")
def dataframe_columns_colliding_as_text(t):
    df = pd.DataFrame(np.ones((5, 2)), columns=[1, "1"])
    df.insert(0, "sid", list("abcde"))
    expect_error(lambda: hx.load_modalities({"m": df}, id_column="sid"), "1")


@case("loaders")
def csv_duplicate_column_names(t):
    p = t / "dupcols.csv"
    p.write_text("sid,x,x\nA,1,2\nB,3,4\nC,5,6\n")
    expect_error(lambda: hx.load_modalities({"m": str(p)}, id_column="sid"), "dupcols.csv", "x")


@case("loaders")
def duplicate_ids(t):
    df = sim_frames(n=30)["a"]
    df.loc[7, "sid"] = "S3"
    p = t / "dupids.csv"
    df.to_csv(p, index=False)
    expect_error(lambda: hx.load_modalities({"a": str(p)}, id_column="sid"), "dupids.csv", "S3")


@case("loaders")
def duplicate_ids_in_outcomes(t):
    frames = sim_frames(n=40)
    paths = write_csvs(t, frames)
    o = outcome_frame(n=40)
    o.loc[5, "sid"] = "S1"
    op = t / "outc.csv"
    o.to_csv(op, index=False)
    expect_error(lambda: hx.load_outcomes(str(op), id_column="sid"), "outc.csv", "S1")


@case("loaders")
def non_numeric_column_named(t):
    df = sim_frames(n=60)["a"]
    df["notes"] = [f"free text {i}" for i in range(60)]  # all distinct: not a category
    p = t / "mixed.csv"
    df.to_csv(p, index=False)
    try:
        data = hx.load_modalities({"a": str(p)}, id_column="sid")
    except ValueError as e:
        assert "notes" in str(e) and "mixed.csv" in str(e), e
        return
    assert "notes" not in data.feature_names["a"]
    assert "notes" in json.dumps(data.report, default=str)  # the drop is reported


@case("loaders")
def numbers_with_stray_text_cell_named(t):
    df = sim_frames(n=60)["a"].astype(object)
    df.iloc[17, 2] = "12..5"
    p = t / "cell.csv"
    df.to_csv(p, index=False)
    try:
        data = hx.load_modalities({"a": str(p)}, id_column="sid")
    except ValueError as e:
        assert "cell.csv" in str(e), e
        return
    rep = json.dumps(data.report, default=str)
    assert df.columns[2] in rep, rep[:500]


@case("loaders")
def inf_in_feature_values(t):
    df = sim_frames(n=60)["a"]
    df.iloc[4, 1] = np.inf
    p = t / "inf.csv"
    df.to_csv(p, index=False)
    try:
        data = hx.load_modalities({"a": str(p)}, id_column="sid")
    except ValueError as e:
        assert "inf.csv" in str(e), e
        return
    assert np.isfinite(np.nan_to_num(data.X["a"], nan=0.0)).all()


@case("loaders")
def utf16_csv_loads(t):
    df = sim_frames(n=20)["a"]
    p = t / "u16.csv"
    p.write_bytes(df.to_csv(index=False).encode("utf-16"))
    got, _ = hx.read_table(str(p))
    assert got.shape == df.shape


@case("loaders")
def missing_file_named(t):
    expect_error(lambda: hx.load_modalities({"a": str(t / "nope.csv")}), "nope.csv")


@case("loaders")
def folder_as_file(t):
    (t / "dir.csv").mkdir()
    expect_error(lambda: hx.read_table(str(t / "dir.csv")), "dir.csv")


@case("loaders")
def no_shared_ids_named(t):
    fa = sim_frames(n=30)["a"]
    fb = sim_frames(n=30)["b"]
    fb["sid"] = [f"Q{i}" for i in range(30)]
    pa, pb = t / "a.csv", t / "b.csv"
    fa.to_csv(pa, index=False)
    fb.to_csv(pb, index=False)
    expect_error(lambda: hx.load_modalities({"a": str(pa), "b": str(pb)}, id_column="sid"))


# ============================================================================ outcomes with inf / nan
def _cont_eval(t, mutate):
    model = hx.HCL.load(fitted_model_file())
    frames = sim_frames()
    data = hx.load_modalities(write_csvs(t, frames), id_column="sid")
    o = outcome_frame(cont=True)
    mutate(o)
    op = t / "y.csv"
    o.to_csv(op, index=False)
    try:
        out = hx.load_outcomes(str(op), id_column="sid")
        out.align(data)
        y = pd.Series(out.y("y", data), name="y")
        rep = hx.evaluate_prediction(model, data, y, task="continuous", n_bootstrap=30, cv=3)
    except ValueError as e:
        assert "y" in str(e), e
        return None
    d = rep.to_dict()
    for table in ("metrics", "baselines"):
        for row in d.get(table) or []:
            for k, v in row.items():
                if isinstance(v, float):
                    assert np.isfinite(v), f"{table} {row.get('model') or row.get('metric')}: {k} = {v}"
            lo, hi = row.get("ci_low"), row.get("ci_high")
            val = row.get("value")
            if all(isinstance(x, float) for x in (lo, hi, val)):
                assert lo - 1e-9 <= val <= hi + 1e-9, f"CI [{lo}, {hi}] excludes {val}"
    return rep


def _metrics_finite(rep):
    if rep is None:
        return
    txt = json.dumps(rep.to_dict(), default=str)
    assert "Infinity" not in txt, "an infinite value in the evaluation"


@case("outcomes")
def inf_in_continuous_outcome(t):
    def m(o):
        o.loc[3, "y"] = np.inf
    _metrics_finite(_cont_eval(t, m))


@case("outcomes")
def minus_inf_in_continuous_outcome(t):
    def m(o):
        o.loc[8, "y"] = -np.inf
    _metrics_finite(_cont_eval(t, m))


@case("outcomes")
def nan_in_continuous_outcome(t):
    def m(o):
        o.loc[[2, 9, 11], "y"] = np.nan
    rep = _cont_eval(t, m)
    assert rep is not None, "a few missing outcomes are not an error"
    _metrics_finite(rep)


@case("outcomes")
def inf_outcome_array_api(t):
    model = hx.HCL.load(fitted_model_file())
    data = hx.load_modalities(write_csvs(t, sim_frames()), id_column="sid")
    y = outcome_frame(cont=True)["y"].to_numpy().copy()
    y[5] = np.inf
    try:
        rep = hx.evaluate_prediction(model, data, y, task="continuous", n_bootstrap=30, cv=3)
    except ValueError:
        return
    _metrics_finite(rep)


@case("outcomes")
def text_inf_in_outcome_file(t):
    def m(o):
        o["y"] = o["y"].astype(object)
        o.loc[4, "y"] = "inf"
        o.loc[6, "y"] = "-Infinity"
    _metrics_finite(_cont_eval(t, m))


@case("outcomes")
def all_missing_outcome(t):
    model = hx.HCL.load(fitted_model_file())
    data = hx.load_modalities(write_csvs(t, sim_frames()), id_column="sid")
    y = np.full(120, np.nan)
    expect_error(lambda: hx.evaluate_prediction(model, data, y, task="continuous", n_bootstrap=10, cv=3))


# ============================================================================ untrusted model files
@case("model files")
def model_roundtrip_ok(t):
    m = hx.HCL.load(fitted_model_file())
    assert m.W_.shape[0] == 9


@case("model files")
def model_pickle_payload_refused(t):
    z = load_npz_raw(fitted_model_file())
    z["W"] = np.array([{"evil": 1}], dtype=object)
    p = t / "pickle.npz"
    np.savez(p, **z)
    expect_error(lambda: hx.HCL.load(str(p)), "pickle.npz")


def _declared_shape_npz(path, name, shape, dtype="<f8", extra=None, real_bytes=64):
    """A zip whose member ``name.npy`` declares ``shape`` but holds only ``real_bytes`` of data."""
    hdr = {"descr": dtype, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, hdr)
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in (extra or {}).items():
            b = io.BytesIO()
            np.lib.format.write_array(b, v, allow_pickle=False)
            zf.writestr(k + ".npy", b.getvalue())
        zf.writestr(name + ".npy", buf.getvalue() + b"\0" * real_bytes)


@case("model files")
def model_declared_shape_1e12(t):
    z = load_npz_raw(fitted_model_file())
    z.pop("W")
    p = t / "huge.npz"
    _declared_shape_npz(p, "W", (10**6, 10**6), extra=z)
    expect_error(lambda: hx.HCL.load(str(p)), "huge.npz", peak_mb=50)


@case("model files")
def model_declared_shape_overflow(t):
    z = load_npz_raw(fitted_model_file())
    z.pop("mean")
    p = t / "overflow.npz"
    _declared_shape_npz(p, "mean", (2**62, 2**62), extra=z)
    expect_error(lambda: hx.HCL.load(str(p)), "overflow.npz", peak_mb=50)


@case("model files")
def model_800mb_decompressed_member(t):
    """A member that inflates to 800 MB (a zip bomb of zeros) is refused before it is inflated."""
    import zlib

    z = load_npz_raw(fitted_model_file())
    meta = json.loads(str(z["meta"][()]))
    p = t / "bomb.npz"
    n = 100_000_000  # float64 -> 800 MB
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in z.items():
            if k == "objective_history":
                continue
            b = io.BytesIO()
            np.lib.format.write_array(b, v, allow_pickle=False)
            zf.writestr(k + ".npy", b.getvalue())
        with zf.open("objective_history.npy", "w", force_zip64=True) as fh:
            fh.write(hdr.getvalue())
            chunk = bytes(8 << 20)
            for _ in range(n * 8 // len(chunk)):
                fh.write(chunk)
            fh.write(bytes(n * 8 - (n * 8 // len(chunk)) * len(chunk)))
    assert os.path.getsize(p) < 5 << 20
    del meta, zlib
    expect_error(lambda: hx.HCL.load(str(p)), "bomb.npz", peak_mb=100)


@case("model files")
def model_big_unused_member(t):
    z = load_npz_raw(fitted_model_file())
    meta = json.loads(str(z.pop("meta")[()]))
    z["junk"] = np.zeros(20_000_000)  # 160 MB a model does not use
    p = t / "junk.npz"
    write_npz(p, z, meta, compress=True)
    try:
        tracemalloc.start()
        hx.HCL.load(str(p))
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    except ValueError as e:
        assert "junk.npz" in str(e)
        return
    finally:
        tracemalloc.stop()
    assert peak < 50, f"read an unused 160 MB member ({peak:.0f} MB)"


@case("model files")
def model_wrong_w_shape(t):
    p = model_variant(t, mutate_arrays=lambda z: z.update(W=z["W"][:, :-1]) or z, name="wshape.npz")
    expect_error(lambda: hx.HCL.load(p), "wshape.npz")


@case("model files")
def model_wrong_w_dtype_int(t):
    p = model_variant(t, mutate_arrays=lambda z: z.update(W=z["W"].astype(np.int64)) or z, name="wint.npz")
    expect_error(lambda: hx.HCL.load(p), "wint.npz")


@case("model files")
def model_wrong_w_dtype_str(t):
    p = model_variant(t, mutate_arrays=lambda z: z.update(W=z["W"].astype("U8")) or z, name="wstr.npz")
    expect_error(lambda: hx.HCL.load(p), "wstr.npz")


@case("model files")
def model_wrong_w_dtype_complex(t):
    p = model_variant(t, mutate_arrays=lambda z: z.update(W=z["W"].astype(complex)) or z, name="wc.npz")
    expect_error(lambda: hx.HCL.load(p), "wc.npz")


@case("model files")
def model_wrong_mean_length(t):
    p = model_variant(t, mutate_arrays=lambda z: z.update(mean=z["mean"][:3]) or z, name="mean.npz")
    expect_error(lambda: hx.HCL.load(p), "mean.npz")


@case("model files")
def model_missing_w(t):
    p = model_variant(t, mutate_arrays=lambda z: (z.pop("W"), z)[1], name="now.npz")
    expect_error(lambda: hx.HCL.load(p), "now.npz")


@case("model files")
def model_oversized_psi(t):
    def mut(z):
        z["psi"] = np.zeros(5_000_000)
        return z
    p = model_variant(t, mutate_arrays=mut, name="psi.npz")
    expect_error(lambda: hx.HCL.load(p), "psi.npz", peak_mb=30)


_META_BREAKS = {
    "meta_not_json": None,
    "meta_json_list": None,
    "no_modalities": lambda m: m.pop("modalities"),
    "dims_strings": lambda m: m.update(dims={k: "x" for k in m["dims"]}),
    "ranks_unknown_node": lambda m: m.update(ranks={**m["ranks"], "zz+yy": 1}),
    "nodes_not_list": lambda m: m.update(nodes="a+b"),
    "lattice_garbage": lambda m: m.update(lattice={"nodes": 5}),
    "feature_names_short": lambda m: m.update(feature_names={k: v[:-1] for k, v in m["feature_names"].items()}),
    "noise_var_missing": lambda m: m.update(noise_var={}),
    "params_unknown_keyword": lambda m: m["params"].update(bogus=1),
    "params_unknown_estimator": lambda m: m["params"].update(estimator="nope"),
    "params_not_dict": lambda m: m.update(params=[1, 2]),
    "newer_version": lambda m: m.update(version=10**6),
    "wrong_format": lambda m: m.update(format="something.else"),
    "n_samples_text": lambda m: m.update(n_samples="many"),
    "dims_negative": lambda m: m.update(dims={k: -1 for k in m["dims"]}),
    "ranks_huge": lambda m: m.update(ranks={k: 10**9 for k in m["ranks"]}),
    "total_var_list": lambda m: m.update(total_var=[1]),
    "preprocessing_garbage": lambda m: m.update(preprocessing=[["x"]]),
}


def _meta_break(kind):
    def run(t):
        name = f"{kind}.npz"
        if kind == "meta_not_json":
            z = load_npz_raw(fitted_model_file())
            z["meta"] = np.array("{not json")
            p = t / name
            np.savez(p, **z)
        elif kind == "meta_json_list":
            z = load_npz_raw(fitted_model_file())
            z["meta"] = np.array("[1, 2, 3]")
            p = t / name
            np.savez(p, **z)
        else:
            p = model_variant(t, mutate_meta=lambda m: (_META_BREAKS[kind](m), m)[1], name=name)
        expect_error(lambda: hx.HCL.load(str(p)), name)
        m = expect_error(lambda: report.load_model(str(p)), name)
        assert "Traceback" not in m
    run.__name__ = f"model_header_{kind}"
    return run


for _k in _META_BREAKS:
    case("model files")(_meta_break(_k))


@case("model files")
def model_truncated(t):
    p = t / "trunc.npz"
    raw = Path(fitted_model_file()).read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    expect_error(lambda: hx.HCL.load(str(p)), "trunc.npz")


@case("model files")
def model_empty(t):
    p = t / "empty.npz"
    p.write_bytes(b"")
    expect_error(lambda: hx.HCL.load(str(p)), "empty.npz")


@case("model files")
def model_flipped_bytes(t):
    raw = bytearray(Path(fitted_model_file()).read_bytes())
    for k in range(200, len(raw) - 200, 97):
        raw[k] ^= 0x55
    p = t / "flipped.npz"
    p.write_bytes(bytes(raw))
    expect_error(lambda: hx.HCL.load(str(p)), "flipped.npz")


@case("model files")
def model_one_bit_in_w(t):
    raw = bytearray(Path(fitted_model_file()).read_bytes())
    with zipfile.ZipFile(fitted_model_file()) as zf:
        info = zf.getinfo("W.npy")
    raw[info.header_offset + 30 + len(info.filename) + 140] ^= 0x01
    p = t / "bit.npz"
    p.write_bytes(bytes(raw))
    expect_error(lambda: hx.HCL.load(str(p)), "bit.npz")


@case("model files")
def model_is_a_csv(t):
    p = t / "model.npz"
    p.write_text("a,b\n1,2\n")
    expect_error(lambda: hx.HCL.load(str(p)), "model.npz")


@case("model files")
def model_many_members(t):
    p = t / "many.npz"
    with zipfile.ZipFile(p, "w") as zf:
        b = io.BytesIO()
        np.lib.format.write_array(b, np.zeros(1))
        for i in range(5000):
            zf.writestr(f"m{i}.npy", b.getvalue())
    expect_error(lambda: hx.HCL.load(str(p)), "many.npz")


@case("model files")
def model_member_path_traversal(t):
    p = t / "trav.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("../../evil.npy", b"x")
    expect_error(lambda: hx.HCL.load(str(p)), "trav.npz")
    assert not (t.parent / "evil.npy").exists()


@case("model files")
def model_header_huge_header_len(t):
    p = t / "hdr.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("W.npy", b"\x93NUMPY\x02\x00" + (10**9).to_bytes(4, "little") + b"{" * 100)
    expect_error(lambda: hx.HCL.load(str(p)), "hdr.npz", peak_mb=30)


@case("model files")
def model_header_python_expr(t):
    p = t / "expr.npz"
    with zipfile.ZipFile(p, "w") as zf:
        h = b"{'descr': __import__('os').system('touch PWNED'), 'fortran_order': False, 'shape': (1,)}"
        h = h + b" " * (63 - (len(h) + 10) % 64) + b"\n"
        zf.writestr("W.npy", b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + b"\0" * 8)
    expect_error(lambda: hx.HCL.load(str(p)), "expr.npz")
    assert not (ROOT / "PWNED").exists() and not Path("PWNED").exists()


@case("model files")
def model_load_folder(t):
    expect_error(lambda: hx.HCL.load(str(t)), str(t))


@case("model files")
def contrastive_module_spec_huge(t):
    z = load_npz_raw(fitted_model_file("contrastive"))
    meta = json.loads(str(z.pop("meta")[()]))
    spec = meta["module_spec"]
    txt = json.dumps(spec)
    assert "hidden" in txt or "8" in txt

    def blow(o):
        if isinstance(o, dict):
            return {k: ([10**6] * len(v) if k == "hidden" and isinstance(v, list) else blow(v)) for k, v in o.items()}
        if isinstance(o, list):
            return [blow(x) for x in o]
        return o
    meta["module_spec"] = blow(spec)
    p = t / "bigspec.npz"
    write_npz(p, z, meta)
    expect_error(lambda: hx.HCL.load(str(p)), "bigspec.npz", peak_mb=100)


@case("model files")
def contrastive_weight_wrong_shape(t):
    z = load_npz_raw(fitted_model_file("contrastive"))
    meta = json.loads(str(z.pop("meta")[()]))
    k = next(k for k in z if k.startswith("module.") and z[k].ndim == 2)
    z[k] = z[k][:, :-1]
    p = t / "cw.npz"
    write_npz(p, z, meta)
    expect_error(lambda: hx.HCL.load(str(p)), "cw.npz")


@case("model files")
def contrastive_roundtrip_ok(t):
    m = hx.HCL.load(fitted_model_file("contrastive"))
    assert m.estimator == "contrastive"


# ============================================================================ checkpoints
def _checkpoint_dir(t) -> tuple[str, dict]:
    frames = sim_frames()
    paths = write_csvs(t, frames)
    ck = t / "ck"
    rc, out, err = cli("fit", f"a={paths['a']}", f"b={paths['b']}", "--id-column", "sid", "--estimator", "contrastive",
                       "--epochs", "2", "--hidden", "8", "--ranks", RANKS_JSON, "--checkpoint-dir", ck,
                       "--device", "cpu")
    assert rc == 0, err[-2000:]
    assert (ck / "checkpoint.pt").exists()
    return str(ck), paths


def _resume(t, ck, paths):
    return cli_one_line_error("fit", f"a={paths['a']}", f"b={paths['b']}", "--id-column", "sid", "--estimator",
                              "contrastive", "--epochs", "3", "--hidden", "8", "--ranks", RANKS_JSON,
                              "--checkpoint-dir", ck, "--resume", "--device", "cpu", needles=("checkpoint",))


@case("checkpoints")
def checkpoint_truncated_resume(t):
    ck, paths = _checkpoint_dir(t)
    f = Path(ck) / "checkpoint.pt"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    _resume(t, ck, paths)


@case("checkpoints")
def checkpoint_empty_resume(t):
    ck, paths = _checkpoint_dir(t)
    (Path(ck) / "checkpoint.pt").write_bytes(b"")
    _resume(t, ck, paths)


@case("checkpoints")
def checkpoint_pickle_payload_resume(t):
    ck, paths = _checkpoint_dir(t)
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {t}/PWNED",))

    with open(Path(ck) / "checkpoint.pt", "wb") as fh:
        pickle.dump({"signature": Evil()}, fh)
    _resume(t, ck, paths)
    assert not (t / "PWNED").exists()


@case("checkpoints")
def checkpoint_flipped_resume(t):
    ck, paths = _checkpoint_dir(t)
    f = Path(ck) / "checkpoint.pt"
    raw = bytearray(f.read_bytes())
    for k in range(len(raw) // 3, len(raw) // 3 + 64):
        raw[k] ^= 0xAA
    f.write_bytes(bytes(raw))
    _resume(t, ck, paths)


# ============================================================================ exports: formula prefixes
_HOSTILE = ["=HYPERLINK(\"http://x\")", "+1+cmd", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


def _hostile_run(t):
    """A fit run whose feature names, modality names and sample ids start with formula characters."""
    ws = runs.workspace_dir(str(t / "ws"))
    frames = sim_frames(names={"a": _HOSTILE[:5] , "b": ["=b1", "+b2", "@b3", "-b4x"]})
    frames["a"]["sid"] = [("=id" if i % 2 else "@id") + str(i) for i in range(120)]
    frames["b"]["sid"] = frames["a"]["sid"]
    paths = write_csvs(t, frames)
    spec = {"modalities": {"=mod": paths["a"], "@mod": paths["b"]}, "id_column": "sid", "name": "=evil"}
    rid = fit_run(ws, spec)
    return ws, rid


def _cells(csv_text):
    import csv as _csv

    return [c for row in _csv.reader(io.StringIO(csv_text)) for c in row]


def _assert_no_formula(text, what):
    bad = [c for c in _cells(text) if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and not _is_number(c))]
    assert not bad, f"{what}: formula-like cells {bad[:5]}"


def _is_number(c):
    try:
        float(c)
        return True
    except ValueError:
        return False


@case("exports")
def formula_in_loadings_csv(t):
    ws, rid = _hostile_run(t)
    with zipfile.ZipFile(io.BytesIO(report.run_zip(runs.run_path(ws, rid)))) as z:
        _assert_no_formula(z.read("loadings.csv").decode(), "loadings.csv")


@case("exports")
def formula_in_summary_csv(t):
    ws, rid = _hostile_run(t)
    with zipfile.ZipFile(io.BytesIO(report.run_zip(runs.run_path(ws, rid)))) as z:
        _assert_no_formula(z.read(RF.SUMMARY).decode(), "summary.csv")


@case("exports")
def formula_in_scores_csv(t):
    ws, rid = _hostile_run(t)
    with zipfile.ZipFile(io.BytesIO(report.run_zip(runs.run_path(ws, rid)))) as z:
        _assert_no_formula(z.read("scores.csv").decode(), "scores.csv")


@case("exports")
def formula_in_run_folder_csvs(t):
    """The CSV files a run keeps in its own folder (opened from the workspace) are safe too."""
    ws, rid = _hostile_run(t)
    d = runs.run_path(ws, rid)
    for f in os.listdir(d):
        if f.endswith(".csv"):
            _assert_no_formula(Path(d, f).read_text(encoding="utf-8"), f)


@case("exports")
def formula_each_prefix_safe_csv(t):
    for pre in ("=", "+", "-", "@", "\t", "\r"):
        df = pd.DataFrame({"name": [pre + "cmd|' /C calc'!A0"], pre + "col": [1.0]})
        _assert_no_formula(report.safe_csv(df), repr(pre))
    # numbers stay numbers
    assert "-12" in report.safe_csv(pd.DataFrame({"id": ["-12"]}))


@case("exports")
def formula_in_prediction_export(t):
    ws, rid = _hostile_run(t)
    d = runs.run_path(ws, rid)
    frames = sim_frames()
    o = pd.DataFrame({"sid": [("=id" if i % 2 else "@id") + str(i) for i in range(120)],
                      "=outcome": (frames["a"].iloc[:, 1] > 0).astype(int)})
    # a prediction of an outcome whose name is a formula, filed in the run and exported
    op = t / "o.csv"
    o.to_csv(op, index=False)
    cfg = runs.read_json(RF.path(d, RF.CONFIG))
    cfg["dataset"]["outcomes"] = str(op)
    runs.write_json(RF.path(d, RF.CONFIG), cfg)
    st = predict_run(ws, rid, "=outcome")
    assert st["state"] == "done", st
    with zipfile.ZipFile(io.BytesIO(report.run_zip(d))) as z:
        for n in z.namelist():
            if n.endswith(".csv"):
                _assert_no_formula(z.read(n).decode(), n)


# ============================================================================ markdown / html names
@case("names")
def html_names_escaped_in_report(t):
    ws = runs.workspace_dir(str(t / "ws"))
    frames = sim_frames(names={"a": ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "x3", "x4", "x5"]})
    paths = write_csvs(t, frames)
    spec = {"modalities": {"<b>a</b>": paths["a"], "b": paths["b"]}, "id_column": "sid",
            "name": "<script>alert('ds')</script>"}
    rid = fit_run(ws, spec)
    html_text = report.run_html(runs.run_path(ws, rid), title="<script>t</script>")
    assert "<script>alert" not in html_text and "<img src=x" not in html_text and "<b>a</b>" not in html_text


@case("names")
def markdown_names_escaped_for_pages(t):
    from hcl_explore.ui import common as ui  # the page helpers' escaping

    for name in ("[click](http://evil)", "**bold**", "_x_", "<b>x</b>", "`code`", "# head", "![img](http://x/y.png)"):
        out = ui.md(name)
        assert "](" not in out.replace("\\](", "") or "\\[" in out, out
        assert "<b>" not in out, out


@case("names")
def traversal_upload_name_confined(t):
    ws = runs.workspace_dir(str(t / "ws"))
    frames = sim_frames(n=30)
    s = datasets.stage_upload(ws, "../../../../etc/evil.csv", csv_bytes(frames["a"]), id_column="sid")
    did = datasets.create_dataset(ws, [s], id_column="sid")
    man = datasets.read_manifest(ws, did)
    for e in man["modalities"].values():
        assert os.path.abspath(datasets._abs(ws, e["path"])).startswith(os.path.abspath(ws))
    assert not (t / "etc").exists()


# ============================================================================ colliding names
def _frames_bytes(seed, n=60):
    return csv_bytes(sim_frames(n=n, seed=seed)["a"])


@case("collisions")
def chinese_names_same_sanitized(t):
    ws = runs.workspace_dir(str(t / "ws"))
    b1, b2 = _frames_bytes(1), _frames_bytes(2)
    did = stored_dataset(ws, {"数据.csv": b1, "检查.csv": b2})
    spec = datasets.dataset_spec(ws, did)
    by_file = {meta["file"]: Path(p).read_bytes() for p, meta in spec["files"].items()}
    assert by_file["数据.csv"] == b1 and by_file["检查.csv"] == b2


@case("collisions")
def space_vs_underscore_names(t):
    ws = runs.workspace_dir(str(t / "ws"))
    b1, b2 = _frames_bytes(3), _frames_bytes(4)
    did = stored_dataset(ws, {"a b.csv": b1, "a_b.csv": b2})
    spec = datasets.dataset_spec(ws, did)
    by_file = {meta["file"]: Path(p).read_bytes() for p, meta in spec["files"].items()}
    assert by_file == {"a b.csv": b1, "a_b.csv": b2}
    data, _, _ = datasets.load(spec)
    assert len(data.modalities) == 2


@case("collisions")
def same_name_two_datasets(t):
    ws = runs.workspace_dir(str(t / "ws"))
    b1, b2 = _frames_bytes(5), _frames_bytes(6)
    d1 = stored_dataset(ws, {"fac.csv": b1})
    d2 = stored_dataset(ws, {"fac.csv": b2})
    s1, s2 = datasets.dataset_spec(ws, d1), datasets.dataset_spec(ws, d2)
    assert Path(next(iter(s1["files"]))).read_bytes() == b1
    assert Path(next(iter(s2["files"]))).read_bytes() == b2


@case("collisions")
def same_bytes_stored_once(t):
    ws = runs.workspace_dir(str(t / "ws"))
    b = _frames_bytes(7)
    stored_dataset(ws, {"x.csv": b})
    stored_dataset(ws, {"x.csv": b})
    n = sum(len([x for x in f if not x.endswith(".lock")]) for _, _, f in os.walk(os.path.join(ws, datasets.FILES)))
    assert n == 1, n


@case("collisions")
def case_only_names(t):
    ws = runs.workspace_dir(str(t / "ws"))
    b1, b2 = _frames_bytes(8), _frames_bytes(9)
    did = stored_dataset(ws, {"Data.csv": b1, "data.csv": b2})
    spec = datasets.dataset_spec(ws, did)
    got = sorted(Path(p).read_bytes() for p in spec["files"])
    assert got == sorted([b1, b2])


@case("collisions")
def outcome_names_collide_after_sanitizing(t):
    ws = runs.workspace_dir(str(t / "ws"))
    frames = sim_frames()
    paths = write_csvs(t, frames)
    o = outcome_frame()
    o = o.rename(columns={"y": "readmit 30d"})
    o["readmit_30d"] = 1 - o["readmit 30d"]
    o.loc[:30, "readmit_30d"] = 0
    op = t / "o.csv"
    o.to_csv(op, index=False)
    spec = {"modalities": paths, "id_column": "sid", "outcomes": str(op), "name": "sim"}
    rid = fit_run(ws, spec)
    st = predict_run(ws, rid, "readmit 30d")
    assert st["state"] == "done", st
    d = runs.run_path(ws, rid)
    assert runs.read_prediction(d, "readmit_30d") is None, "a result shown for an outcome never evaluated"
    st = predict_run(ws, rid, "readmit_30d")
    assert st["state"] == "done", st
    a, b = runs.read_prediction(d, "readmit 30d"), runs.read_prediction(d, "readmit_30d")
    assert a["outcome"] == "readmit 30d" and b["outcome"] == "readmit_30d"
    assert RF.prediction_path(d, "readmit 30d") != RF.prediction_path(d, "readmit_30d")


@case("collisions")
def outcome_names_case(t):
    d = str(t)
    assert RF.prediction_path(d, "Y") != RF.prediction_path(d, "y")
    assert RF.prediction_path(d, "../x") .startswith(d + os.sep) and "/" not in os.path.basename(RF.prediction_path(d, "a/b"))


@case("collisions")
def cli_modality_names_collide(t):
    frames = sim_frames()
    (t / "x").mkdir()
    (t / "y").mkdir()
    frames["a"].to_csv(t / "x" / "m.csv", index=False)
    frames["b"].to_csv(t / "y" / "m.csv", index=False)
    cli_one_line_error("inspect", t / "x" / "m.csv", t / "y" / "m.csv", "--id-column", "sid", needles=("m",))


# ============================================================================ uploads and stored datasets
@case("datasets")
def bad_upload_same_name_changes_nothing(t):
    ws = runs.workspace_dir(str(t / "ws"))
    good = _frames_bytes(10)
    did = stored_dataset(ws, {"fac.csv": good})
    before = tree_hashes(ws)
    added, errors = datasets.ingest(ws, did, [("fac.csv", os.urandom(4096), "modality")])
    assert not added and "fac.csv" in errors
    assert tree_hashes(ws) == before
    data, _, _ = datasets.load(datasets.dataset_spec(ws, did))
    assert data.n_samples == 60
    no_tmp(ws)


@case("datasets")
def other_projects_outcomes_refused(t):
    ws = runs.workspace_dir(str(t / "ws"))
    did = stored_dataset(ws, {"a.csv": _frames_bytes(11)})
    other = pd.DataFrame({"sid": [f"Q{i}" for i in range(40)], "y": [i % 2 for i in range(40)]})
    before = tree_hashes(ws)
    added, errors = datasets.ingest(ws, did, [("outcomes.csv", csv_bytes(other), "outcomes")])
    assert not added and "outcomes.csv" in errors["outcomes.csv"], errors
    assert tree_hashes(ws) == before


@case("datasets")
def upload_sharing_no_ids_refused(t):
    ws = runs.workspace_dir(str(t / "ws"))
    did = stored_dataset(ws, {"a.csv": _frames_bytes(12)})
    f = sim_frames(n=60, seed=13)["b"]
    f["sid"] = [f"Z{i}" for i in range(60)]
    before = tree_hashes(ws)
    added, errors = datasets.ingest(ws, did, [("b.csv", csv_bytes(f), "modality")])
    assert not added and "b.csv" in errors["b.csv"], errors
    assert tree_hashes(ws) == before


@case("datasets")
def truncated_gz_upload_named(t):
    ws = runs.workspace_dir(str(t / "ws"))
    did = stored_dataset(ws, {"a.csv": _frames_bytes(14)})
    raw = gzip.compress(_frames_bytes(15, n=2000))
    before = tree_hashes(ws)
    added, errors = datasets.ingest(ws, did, [("b.csv.gz", raw[: len(raw) // 2], "modality")])
    assert "b.csv.gz" in errors and "b.csv.gz" in errors["b.csv.gz"], errors
    assert tree_hashes(ws) == before


@case("datasets")
def removed_file_stays_removed(t):
    ws = runs.workspace_dir(str(t / "ws"))
    f = sim_frames(n=60, seed=16)
    did = stored_dataset(ws, {"a.csv": csv_bytes(f["a"]), "b.csv": csv_bytes(f["b"])})
    datasets.remove_file(ws, did, "b")
    extra = sim_frames(n=60, seed=16, dims={"c": 3})["c"]
    added, errors = datasets.ingest(ws, did, [("c.csv", csv_bytes(extra), "modality")])
    assert added == ["c.csv"], errors
    man = datasets.read_manifest(ws, did)
    assert set(man["modalities"]) == {"a", "c"}
    data, _, _ = datasets.load(datasets.dataset_spec(ws, did))
    assert set(data.modalities) == {"a", "c"}


@case("datasets")
def collect_garbage_keeps_referenced(t):
    ws = runs.workspace_dir(str(t / "ws"))
    f = sim_frames(n=60, seed=17)
    did = stored_dataset(ws, {"a.csv": csv_bytes(f["a"]), "b.csv": csv_bytes(f["b"])})
    spec = datasets.dataset_spec(ws, did)
    rid = fit_run(ws, spec)
    old = datasets.read_manifest(ws, did)["modalities"]["b"]["sha256"]
    # replace b: the old b is pinned by the run, so it stays
    added, errors = datasets.ingest(ws, did, [("b.csv", csv_bytes(sim_frames(n=60, seed=18)["b"]), "modality")])
    assert added, errors
    assert hasattr(datasets, "collect_garbage"), "no way to reclaim stored files no longer referenced"
    datasets.collect_garbage(ws, min_age_s=0)
    assert os.path.isdir(os.path.join(ws, datasets.FILES, old)), "a file a run pins was collected"
    for e in datasets.read_manifest(ws, did)["modalities"].values():
        assert os.path.exists(datasets._abs(ws, e["path"]))
    datasets.verify(runs.read_json(RF.path(runs.run_path(ws, rid), RF.CONFIG))["dataset"])


@case("datasets")
def collect_garbage_removes_unreferenced(t):
    ws = runs.workspace_dir(str(t / "ws"))
    f = sim_frames(n=60, seed=19)
    did = stored_dataset(ws, {"a.csv": csv_bytes(f["a"]), "b.csv": csv_bytes(f["b"])})
    gone = datasets.read_manifest(ws, did)["modalities"]["b"]["sha256"]
    datasets.remove_file(ws, did, "b")
    assert hasattr(datasets, "collect_garbage"), "no collect_garbage"
    removed = datasets.collect_garbage(ws, min_age_s=0)
    assert not os.path.exists(os.path.join(ws, datasets.FILES, gone))
    assert removed
    datasets.load(datasets.dataset_spec(ws, did))
    no_tmp(ws)


@case("datasets")
def collect_garbage_keeps_deleted_manifests_files(t):
    ws = runs.workspace_dir(str(t / "ws"))
    f = sim_frames(n=60, seed=20)
    did = stored_dataset(ws, {"a.csv": csv_bytes(f["a"])})
    sha = datasets.read_manifest(ws, did)["modalities"]["a"]["sha256"]
    datasets.delete_dataset(ws, did)
    assert hasattr(datasets, "collect_garbage"), "no collect_garbage"
    datasets.collect_garbage(ws, min_age_s=0)
    assert os.path.isdir(os.path.join(ws, datasets.FILES, sha))


@case("datasets")
def delete_dataset_used_by_runs_warns(t):
    ws = runs.workspace_dir(str(t / "ws"))
    f = sim_frames(n=60, seed=21)
    did = stored_dataset(ws, {"a.csv": csv_bytes(f["a"]), "b.csv": csv_bytes(f["b"])})
    rid = fit_run(ws, datasets.dataset_spec(ws, did))
    try:
        datasets.delete_dataset(ws, did)
    except datasets.DatasetInUse as e:
        assert rid in str(e) and rid in e.run_ids
    else:
        raise AssertionError("deleted a dataset used by a run without a warning")
    assert datasets.exists(ws, did)


@case("datasets")
def no_stray_tmp_after_uploads(t):
    ws = runs.workspace_dir(str(t / "ws"))
    did = stored_dataset(ws, {"a.csv": _frames_bytes(22)})
    datasets.ingest(ws, did, [("b.csv", b"\x00" * 100, "modality"), ("c.csv", _frames_bytes(23), "modality")])
    no_tmp(ws)
    stag = os.path.join(ws, datasets.STAGING)
    assert not os.path.isdir(stag) or not os.listdir(stag), os.listdir(stag)


@case("datasets")
def concurrent_uploads_same_dataset(t):
    ws = runs.workspace_dir(str(t / "ws"))
    did = stored_dataset(ws, {"a.csv": _frames_bytes(24)})
    errs = []

    def up(k):
        try:
            fr = sim_frames(n=60, seed=24, dims={f"m{k}": 3})[f"m{k}"]
            datasets.ingest(ws, did, [(f"m{k}.csv", csv_bytes(fr), "modality")])
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    th = [threading.Thread(target=up, args=(k,)) for k in range(4)]
    [x.start() for x in th]
    [x.join() for x in th]
    assert not errs, errs
    assert set(datasets.read_manifest(ws, did)["modalities"]) == {"a", "m0", "m1", "m2", "m3"}


@case("datasets")
def corrupt_manifest_listing_still_works(t):
    ws = runs.workspace_dir(str(t / "ws"))
    good = stored_dataset(ws, {"a.csv": _frames_bytes(25)})
    bad = []
    for k, content in enumerate([b"\x00\xff", b"[1]", b'{"id": "x"', b'{"modalities": [1, 2]}',
                                 b'{"modalities": {"a": {"file": "a.csv", "path": "../../etc/passwd", "sha256": "00"}}}']):
        did = stored_dataset(ws, {f"b{k}.csv": _frames_bytes(26 + k)})
        p = os.path.join(ws, datasets.DATASETS, did, "manifest.json")
        os.chmod(p, 0o644)
        Path(p).write_bytes(content)
        bad.append(did)
    before = tree_hashes(ws)
    ids = [m["id"] for m in datasets.list_datasets(ws)]
    assert good in ids and not set(bad) & set(ids), ids
    for did in bad:
        expect_error(lambda: datasets.dataset_spec(ws, did), did)
    datasets.load(datasets.dataset_spec(ws, good))
    assert tree_hashes(ws) == before


@case("datasets")
def stored_file_tampered_refused_on_load(t):
    ws = runs.workspace_dir(str(t / "ws"))
    did = stored_dataset(ws, {"a.csv": _frames_bytes(31)})
    spec = datasets.dataset_spec(ws, did)
    p = next(iter(spec["files"]))
    os.chmod(p, 0o644)
    Path(p).write_bytes(_frames_bytes(32))
    expect_error(lambda: datasets.load(spec), "a.csv")


# ============================================================================ runs pin their data
def _pinned(t):
    ws = runs.workspace_dir(str(t / "ws"))
    f = sim_frames(seed=0)
    o = outcome_frame()
    did = stored_dataset(ws, {"a.csv": csv_bytes(f["a"]), "b.csv": csv_bytes(f["b"])}, ("out.csv", csv_bytes(o)))
    spec = datasets.dataset_spec(ws, did)
    rid = fit_run(ws, spec)
    return ws, did, spec, rid


@case("pinning")
def run_records_dataset_and_hashes(t):
    ws, did, spec, rid = _pinned(t)
    cfg = runs.read_json(RF.path(runs.run_path(ws, rid), RF.CONFIG))
    assert cfg["dataset"]["dataset_id"] == did
    assert all(len(m["sha256"]) == 64 for m in cfg["dataset"]["files"].values())


@case("pinning")
def changed_file_prediction_refuses(t):
    ws, did, spec, rid = _pinned(t)
    p = next(p for p, m in spec["files"].items() if m["file"] == "a.csv")
    os.chmod(p, 0o644)
    with open(p, "ab") as fh:
        fh.write(b"S999,1,2,3,4,5\n")
    st = predict_run(ws, rid, "y")
    assert st["state"] == "failed" and "a.csv" in st["error"], st


@case("pinning")
def removed_file_prediction_refuses(t):
    ws, did, spec, rid = _pinned(t)
    p = next(p for p, m in spec["files"].items() if m["file"] == "out.csv")
    os.remove(p)
    st = predict_run(ws, rid, "y")
    assert st["state"] == "failed" and "out.csv" in st["error"], st


@case("pinning")
def new_upload_does_not_change_old_run(t):
    ws, did, spec, rid = _pinned(t)
    st = predict_run(ws, rid, "y")
    assert st["state"] == "done", st
    first = runs.read_prediction(runs.run_path(ws, rid), "y")["metrics"]
    f2 = sim_frames(seed=5)
    added, errors = datasets.ingest(ws, did, [("a.csv", csv_bytes(f2["a"]), "modality")])
    assert added, errors
    st = predict_run(ws, rid, "y")
    assert st["state"] == "done", st
    again = runs.read_prediction(runs.run_path(ws, rid), "y")["metrics"]
    assert json.dumps(first, sort_keys=True, default=str) == json.dumps(again, sort_keys=True, default=str)


@case("pinning")
def changed_file_export_refuses(t):
    ws, did, spec, rid = _pinned(t)
    p = next(p for p, m in spec["files"].items() if m["file"] == "b.csv")
    os.chmod(p, 0o644)
    Path(p).write_bytes(Path(p).read_bytes()[:-20])
    expect_error(lambda: report.run_zip(runs.run_path(ws, rid)), "b.csv")


@case("pinning")
def changed_file_report_refuses(t):
    ws, did, spec, rid = _pinned(t)
    p = next(p for p, m in spec["files"].items() if m["file"] == "b.csv")
    os.remove(p)
    expect_error(lambda: report.run_html(runs.run_path(ws, rid)), "b.csv")


@case("pinning")
def deleted_dataset_old_run_still_predicts(t):
    ws, did, spec, rid = _pinned(t)
    datasets.delete_dataset(ws, did, confirm_runs=[rid])
    st = predict_run(ws, rid, "y")
    assert st["state"] == "done", st


@case("pinning")
def export_after_untouched_data_works(t):
    ws, did, spec, rid = _pinned(t)
    report.run_zip(runs.run_path(ws, rid))
    report.run_html(runs.run_path(ws, rid))


# ============================================================================ corrupt run folders
def _two_good_runs(t):
    ws = runs.workspace_dir(str(t / "ws"))
    paths = write_csvs(t, sim_frames())
    spec = {"modalities": paths, "id_column": "sid", "name": "sim"}
    return ws, [fit_run(ws, spec) for _ in range(2)]


def _damage_and_list(t, damage):
    ws, good = _two_good_runs(t)
    bad = good[1]
    d = runs.run_path(ws, bad)
    damage(d)
    before = tree_hashes(runs.run_path(ws, good[0]))
    table = runs.list_runs(ws).set_index("run_id")
    assert table.loc[good[0], "state"] == "done"
    assert bad in table.index
    report.run_zip(runs.run_path(ws, good[0]))
    assert tree_hashes(runs.run_path(ws, good[0])) == before
    return ws, bad, d


for _name, _content in [("status_list", b"[1,2]"), ("status_string", b'"done"'), ("status_binary", b"\x00\xff\xfe"),
                        ("status_truncated", b'{"state": "do'), ("status_bad_state", b'{"state": 5}'),
                        ("status_bad_times", b'{"state": "done", "started": "yesterday"}'),
                        ("config_list", None), ("config_null", None), ("config_bad_dataset", None)]:
    def _mk(name=_name, content=_content):
        def run(t):
            def damage(d):
                if name.startswith("status"):
                    Path(d, RF.STATUS).write_bytes(content)
                else:
                    Path(d, RF.CONFIG).write_bytes({"config_list": b"[]", "config_null": b"null",
                                                    "config_bad_dataset": b'{"dataset": 3, "kind": 7}'}[name])
            ws, bad, d = _damage_and_list(t, damage)
            row = runs.list_runs(ws).set_index("run_id").loc[bad]
            assert row["state"] == "broken" and row["error"], row.to_dict()
            runs.read_status(ws, bad)
            runs.cancel(ws, bad)
        run.__name__ = f"run_folder_{name}"
        return run
    case("run folders")(_mk())


for _name in ("model_truncated", "model_empty", "model_flipped", "model_deleted", "scores_truncated", "scores_empty",
              "scores_deleted", "scores_flipped", "nodes_garbage"):
    def _mk2(name=_name):
        def run(t):
            def damage(d):
                f = RF.path(d, RF.MODEL if name.startswith("model") else RF.SCORES if name.startswith("scores")
                            else RF.SCORES_NODES)
                raw = Path(f).read_bytes()
                if name.endswith("truncated"):
                    Path(f).write_bytes(raw[: len(raw) // 2])
                elif name.endswith("empty"):
                    Path(f).write_bytes(b"")
                elif name.endswith("deleted"):
                    os.remove(f)
                elif name.endswith("flipped"):
                    b = bytearray(raw)
                    for k in range(100, len(b) - 100, 50):
                        b[k] ^= 0xFF
                    Path(f).write_bytes(bytes(b))
                else:
                    Path(f).write_text('{"x": 1}')
            ws, bad, d = _damage_and_list(t, damage)
            for fn in (lambda: report.run_zip(d), lambda: report.run_html(d), lambda: report.scores_table(d)):
                try:
                    fn()
                except ValueError as e:
                    assert d in str(e) or "model" in str(e) or "scores" in str(e), e
                except Exception as e:  # noqa: BLE001
                    raise AssertionError(f"{type(e).__name__}: {e}") from None
        run.__name__ = f"run_folder_{name}"
        return run
    case("run folders")(_mk2())


@case("run folders")
def run_folder_garbage_metrics_and_predictions(t):
    def damage(d):
        Path(d, RF.METRICS).write_bytes(b"\x00\xffnot json\n{")
        Path(d, "prediction_x.json").write_bytes(b"[1,")
        Path(d, "prediction_y.json").write_text('{"task": 5, "outcome": ["z"]}')
        Path(d, RF.STABILITY).write_text('{"rows": "no"}')
        Path(d, RF.WORKER).write_text('"pid"')
    ws, bad, d = _damage_and_list(t, damage)
    runs.read_metrics(ws, bad)
    runs.read_predictions(d)
    runs.read_stability(ws, bad)
    report.run_metrics(d)


@case("run folders")
def run_folder_stray_entries(t):
    ws, good = _two_good_runs(t)
    Path(ws, "runs", "not-a-folder").write_text("x")
    (Path(ws) / "runs" / "weird name!").mkdir()
    (Path(ws) / "runs" / "empty-run").mkdir()
    table = runs.list_runs(ws).set_index("run_id")
    assert all(table.loc[g, "state"] == "done" for g in good)


@case("run folders")
def run_folder_scores_zip_bomb(t):
    ws, good = _two_good_runs(t)
    d = runs.run_path(ws, good[1])
    z = load_npz_raw(RF.path(d, RF.SCORES))
    write_npz_bomb(RF.path(d, RF.SCORES), z, "node_0", 50_000_000)
    expect_error(lambda: report.scores_table(d), "scores.npz", peak_mb=50)
    assert runs.list_runs(ws).set_index("run_id").loc[good[0], "state"] == "done"


# ============================================================================ status race, tmp files
@case("status")
def status_done_never_overwritten_by_failed(t):
    ws = runs.workspace_dir(str(t / "ws"))
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = p.pid
    lost = 0
    for i in range(150):
        rid = runs.create_run(ws, {"kind": "fit", "dataset": {"name": "x"}}, run_id=f"race-{i}")
        d = runs.run_path(ws, rid)
        runs.write_json(RF.path(d, RF.STATUS), {"state": "running", "pid": dead, "created": time.time()})
        go = threading.Event()

        def finish():
            go.wait()
            runs._write_status(d, {"state": "done", "pid": dead, "created": time.time(), "finished": time.time()})
        th = threading.Thread(target=finish)
        th.start()
        go.set()
        runs.read_status(ws, rid)
        th.join()
        if runs.read_status(ws, rid)["state"] != "done":
            lost += 1
    assert lost == 0, f"{lost} of 150 done runs rewritten"


@case("status")
def cancel_finished_run_changes_nothing(t):
    ws, good = _two_good_runs(t)
    before = tree_hashes(runs.run_path(ws, good[0]))
    runs.cancel(ws, good[0])
    assert tree_hashes(runs.run_path(ws, good[0])) == before


@case("status")
def no_tmp_after_runs(t):
    ws, good = _two_good_runs(t)
    no_tmp(ws)


@case("status")
def save_into_folder_no_tmp(t):
    m = hx.HCL.load(fitted_model_file())
    expect_error(lambda: m.save(str(t)), str(t))
    no_tmp(t)


@case("status")
def save_into_missing_folder_no_tmp(t):
    m = hx.HCL.load(fitted_model_file())
    expect_error(lambda: m.save(str(t / "missing" / "m.npz")), "missing")
    no_tmp(t)


# ============================================================================ kill / restart / concurrent / cancel
def _slow_spec(t, seed):
    frames = sim_frames(n=4000, dims={"a": 60, "b": 60}, seed=seed)
    return {"modalities": write_csvs(t, frames, suffix=f"_{seed}"), "id_column": "sid", "name": f"big{seed}"}


@case("processes")
def kill9_running_worker(t):
    ws, good = _two_good_runs(t)
    before = {g: tree_hashes(runs.run_path(ws, g)) for g in good}
    rid = runs.create_run(ws, {"kind": "fit", "dataset": _slow_spec(t, 1), "lattice": "full"})
    pid = runs.launch(ws, rid)
    wait_for_run(ws, rid, ("running",) + runs.FINAL, timeout=180)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    st = wait_for_run(ws, rid, runs.FINAL, timeout=180)
    assert st["state"] in ("failed", "done"), st
    assert {g: tree_hashes(runs.run_path(ws, g)) for g in good} == before
    no_tmp(ws)


@case("processes")
def sigterm_running_worker(t):
    ws = runs.workspace_dir(str(t / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": _slow_spec(t, 2), "lattice": "full"})
    pid = runs.launch(ws, rid)
    wait_for_run(ws, rid, ("running",) + runs.FINAL, timeout=180)
    os.killpg(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
    st = wait_for_run(ws, rid, runs.FINAL, timeout=180)
    assert st["state"] in ("cancelled", "failed", "done"), st
    no_tmp(ws)


@case("processes")
def three_concurrent_runs(t):
    ws = runs.workspace_dir(str(t / "ws"))
    paths = write_csvs(t, sim_frames(n=300))
    spec = {"modalities": paths, "id_column": "sid", "name": "sim"}
    rids = [runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full"}) for _ in range(3)]
    pids = [runs.launch(ws, r) for r in rids]
    for r in rids:
        assert wait_for_run(ws, r, runs.FINAL, timeout=180)["state"] == "done"
    for p in pids:
        os.waitpid(p, 0)
    models = [hx.HCL.load(RF.path(runs.run_path(ws, r), RF.MODEL)) for r in rids]
    assert all(np.array_equal(models[0].W_, m.W_) for m in models[1:]), "concurrent runs differ"
    no_tmp(ws)


@case("processes")
def cancel_queued_and_running(t):
    ws = runs.workspace_dir(str(t / "ws"))
    q = runs.create_run(ws, {"kind": "fit", "dataset": {"name": "q"}})
    runs.cancel(ws, q)
    assert runs.read_status(ws, q)["state"] == "cancelled"
    rid = runs.create_run(ws, {"kind": "fit", "dataset": _slow_spec(t, 3), "lattice": "full"})
    pid = runs.launch(ws, rid)
    wait_for_run(ws, rid, ("running",) + runs.FINAL, timeout=180)
    runs.cancel(ws, rid)
    os.waitpid(pid, 0)
    assert wait_for_run(ws, rid, runs.FINAL, timeout=180)["state"] in ("cancelled", "done")
    no_tmp(ws)


@case("processes")
def restart_reads_the_same_runs(t):
    ws, good = _two_good_runs(t)
    before = tree_hashes(ws)
    code = ("import sys; from hcl_explore import runs; t = runs.list_runs(sys.argv[1]); "
            "print(','.join(sorted(t[t.state=='done'].run_id)))")
    out = subprocess.run([sys.executable, "-c", code, ws], capture_output=True, text=True, cwd=str(ROOT),
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.strip()
    assert out == ",".join(sorted(good)), out
    assert tree_hashes(ws) == before


@case("processes")
def kill9_right_after_launch(t):
    ws, good = _two_good_runs(t)
    before = {g: tree_hashes(runs.run_path(ws, g)) for g in good}
    rid = runs.create_run(ws, {"kind": "fit", "dataset": _slow_spec(t, 4), "lattice": "full"})
    pid = runs.launch(ws, rid)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    st = wait_for_run(ws, rid, runs.FINAL, timeout=180)
    assert st["state"] == "failed", st
    assert runs.list_runs(ws).set_index("run_id").loc[rid, "state"] == "failed"
    assert {g: tree_hashes(runs.run_path(ws, g)) for g in good} == before
    no_tmp(ws)


@case("processes")
def kill9_predict_run(t):
    ws = runs.workspace_dir(str(t / "ws"))
    paths = write_csvs(t, sim_frames(n=300))
    op = t / "o.csv"
    outcome_frame(n=300).to_csv(op, index=False)
    rid = fit_run(ws, {"modalities": paths, "id_column": "sid", "outcomes": str(op), "name": "sim"})
    before = tree_hashes(runs.run_path(ws, rid))
    pr = runs.create_run(ws, {"kind": "predict", "parent": rid, "outcome": "y", "options": {"n_bootstrap": 2000}})
    pid = runs.launch(ws, pr)
    wait_for_run(ws, pr, ("running",) + runs.FINAL, timeout=180)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert wait_for_run(ws, pr, runs.FINAL, timeout=180)["state"] in ("failed", "done")
    after = tree_hashes(runs.run_path(ws, rid))
    assert {k: v for k, v in after.items() if k in before} == before, "the fit run's files changed"
    no_tmp(ws)


@case("loaders")
def long_csv_no_sample_lost(t):
    n = 200_000
    rng = np.random.default_rng(5)
    df = pd.DataFrame(rng.normal(size=(n, 3)).round(5), columns=["x", "y", "z"])
    df.insert(0, "sid", [f"S{i}" for i in range(n)])
    p = t / "long.csv"
    df.to_csv(p, index=False)
    data = hx.load_modalities({"m": str(p)}, id_column="sid")
    assert data.n_samples == n and np.allclose(np.asarray(data.X["m"]), df[["x", "y", "z"]].to_numpy())


@case("cli")
def cli_inspect_wide_csv(t):
    rng = np.random.default_rng(6)
    df = pd.DataFrame(rng.normal(size=(30, 5000)), columns=[f"g{j}" for j in range(5000)])
    df.insert(0, "sid", [f"S{i}" for i in range(30)])
    p = t / "omics.csv"
    df.to_csv(p, index=False, float_format="%.17g")
    rc, out, err = cli("inspect", p, "--id-column", "sid")
    assert rc == 0, err[-800:]
    assert "5,000" in out or "5000" in out, out[-800:]


@case("cli")
def cli_predict_inf_outcome(t):
    paths = write_csvs(t, sim_frames())
    o = outcome_frame(cont=True)
    o.loc[3, "y"] = np.inf
    op = t / "o.csv"
    o.to_csv(op, index=False)
    rc, out, err = cli("predict", fitted_model_file(), f"a={paths['a']}", f"b={paths['b']}", "--id-column", "sid",
                       "--outcomes", op, "--bootstrap", "20", "--cv", "3", "--json", t / "r.json")
    if rc != 0:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err[-800:]
        return
    txt = (t / "r.json").read_text()
    assert "Infinity" not in txt and "NaN" not in json.dumps(json.loads(txt)["metrics"]), txt[:500]


# ============================================================================ CLI
@case("cli")
def cli_truncated_gz_inspect(t):
    p = t / "t.csv.gz"
    sim_frames(n=2000)["a"].to_csv(p, index=False, compression="gzip")
    p.write_bytes(p.read_bytes()[:3000])
    cli_one_line_error("inspect", p, needles=("t.csv.gz",))


@case("cli")
def cli_missing_file(t):
    cli_one_line_error("inspect", t / "nope.csv", needles=("nope.csv",))


@case("cli")
def cli_binary_file(t):
    p = t / "fac.csv"
    p.write_bytes(os.urandom(2000))
    cli_one_line_error("inspect", p, needles=("fac.csv",))


@case("cli")
def cli_fit_out_missing_folder_before_work(t):
    paths = write_csvs(t, sim_frames())
    cli_one_line_error("fit", f"a={paths['a']}", f"b={paths['b']}", "--id-column", "sid", "--out",
                       t / "missing" / "m.npz", needles=("--out",))


@case("cli")
def cli_fit_out_is_folder(t):
    paths = write_csvs(t, sim_frames())
    cli_one_line_error("fit", f"a={paths['a']}", f"b={paths['b']}", "--id-column", "sid", "--out", t,
                       needles=("--out",))


@case("cli")
def cli_predict_json_missing_folder(t):
    paths = write_csvs(t, sim_frames())
    op = t / "o.csv"
    outcome_frame().to_csv(op, index=False)
    cli_one_line_error("predict", fitted_model_file(), f"a={paths['a']}", f"b={paths['b']}", "--id-column", "sid",
                       "--outcomes", op, "--json", t / "nope" / "r.json", needles=("--json",))


@case("cli")
def cli_summary_corrupt_model(t):
    p = t / "bad.npz"
    p.write_bytes(Path(fitted_model_file()).read_bytes()[:700])
    cli_one_line_error("summary", p, needles=("bad.npz",))


@case("cli")
def cli_summary_missing_model(t):
    cli_one_line_error("summary", t / "none.npz", needles=("none.npz",))


@case("cli")
def cli_summary_crafted_model(t):
    p = model_variant(t, mutate_meta=lambda m: m.update(dims={k: "x" for k in m["dims"]}), name="crafted.npz")
    cli_one_line_error("summary", p, needles=("crafted.npz",))


@case("cli")
def cli_run_bad_workspace(t):
    paths = write_csvs(t, sim_frames())
    f = t / "afile"
    f.write_text("x")
    cli_one_line_error("run", f"a={paths['a']}", f"b={paths['b']}", "--id-column", "sid", "--workspace", f,
                       needles=("--workspace",))


@case("cli")
def cli_run_failing_data_one_line(t):
    p = t / "bad.csv"
    p.write_text("sid,x\n" + "".join(f"S{i},1\n" for i in range(10)) + "S1,2,3,4\n")
    p2 = t / "ok.csv"
    sim_frames(n=11)["a"].to_csv(p2, index=False)
    line = cli_one_line_error("run", f"a={p}", f"b={p2}", "--id-column", "sid", "--workspace", t / "ws",
                              needles=("bad.csv",))
    assert "Traceback" not in line


@case("cli")
def cli_score_bad_batch(t):
    paths = write_csvs(t, sim_frames())
    cli_one_line_error("score", fitted_model_file(), f"a={paths['a']}", f"b={paths['b']}", "--out", t / "s.parquet",
                       "--batch-size", "0", needles=("--batch-size",))


@case("cli")
def cli_predict_wrong_outcome(t):
    paths = write_csvs(t, sim_frames())
    op = t / "o.csv"
    outcome_frame().to_csv(op, index=False)
    cli_one_line_error("predict", fitted_model_file(), f"a={paths['a']}", f"b={paths['b']}", "--id-column", "sid",
                       "--outcomes", op, "--outcome", "zzz", needles=("zzz",))


@case("cli")
def cli_bad_ranks(t):
    paths = write_csvs(t, sim_frames())
    cli_one_line_error("fit", f"a={paths['a']}", f"b={paths['b']}", "--id-column", "sid", "--ranks", '{"a+b": "x", "a": 1, "b": 1}',
                       needles=("a+b",))


@case("cli")
def cli_fit_ok_writes_model(t):
    paths = write_csvs(t, sim_frames())
    rc, out, err = cli("fit", f"a={paths['a']}", f"b={paths['b']}", "--id-column", "sid", "--out", t / "m.npz")
    assert rc == 0, err[-1000:]
    hx.HCL.load(str(t / "m.npz"))
    no_tmp(t)


# ============================================================================ API messages
def _data(t):
    return hx.load_modalities(write_csvs(t, sim_frames()), id_column="sid")


@case("api")
def api_ranks_huge(t):
    expect_error(lambda: hx.HCL(ranks=10**6).fit(_data(t)))


@case("api")
def api_rank_text_names_node(t):
    expect_error(lambda: hx.HCL(ranks={("a", "b"): "x", ("a",): 1, ("b",): 1}).fit(_data(t)), "a+b")


@case("api")
def api_rank_negative(t):
    expect_error(lambda: hx.HCL(ranks={("a", "b"): -1, ("a",): 1, ("b",): 1}).fit(_data(t)), "a+b")


@case("api")
def api_hidden_negative(t):
    expect_error(lambda: hx.HCL(estimator="contrastive", hidden=(-5,), max_epochs=1, device="cpu").fit(_data(t)),
                 "hidden")


@case("api")
def api_transform_ndarray(t):
    m = hx.HCL.load(fitted_model_file())
    expect_error(lambda: m.transform(np.zeros((5, 9))), exc=(TypeError if False else ValueError))


@case("api")
def api_cv_1(t):
    model = hx.HCL.load(fitted_model_file())
    data = _data(t)
    y = outcome_frame()["y"].to_numpy()
    expect_error(lambda: hx.evaluate_prediction(model, data, y, cv=1, n_bootstrap=10), "cv")


@case("api")
def api_test_size_bad(t):
    model = hx.HCL.load(fitted_model_file())
    data = _data(t)
    y = outcome_frame()["y"].to_numpy()
    expect_error(lambda: hx.evaluate_prediction(model, data, y, test_size=1.5, n_bootstrap=10), "test_size")


@case("api")
def api_y_wrong_length(t):
    model = hx.HCL.load(fitted_model_file())
    data = _data(t)
    expect_error(lambda: hx.evaluate_prediction(model, data, np.zeros(7), n_bootstrap=10))


@case("api")
def api_unknown_estimator(t):
    expect_error(lambda: hx.HCL(estimator="nope").fit(_data(t)), "nope")


# ------------------------------------------------------------------------------------------- runner
def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default=None, help="run the cases whose name holds this")
    ap.add_argument("-v", action="store_true", help="print each failure's traceback")
    ap.add_argument("--skip", action="append", default=[], help="skip the cases whose name holds this")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--json", default=None, help="write {case: error or null} here")
    args = ap.parse_args(argv)
    chosen = [c for c in CASES if (not args.k or args.k in c[1] or args.k == c[0])
              and not any(s in c[1] for s in args.skip)]
    if args.list:
        for cat, name, _ in chosen:
            print(f"{cat:12s} {name}")
        print(len(chosen))
        return 0
    results = {}
    t_all = time.monotonic()
    for cat, name, fn in chosen:
        tmp = Path(tempfile.mkdtemp(prefix=f"battery-{name[:30]}-"))
        t0 = time.monotonic()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                fn(tmp)
            err = None
        except BaseException as e:  # noqa: BLE001
            if isinstance(e, KeyboardInterrupt):
                raise
            err = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            if args.v:
                traceback.print_exc()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        results[name] = err
        print(f"{'PASS' if err is None else 'FAIL'} {cat:12s} {name} ({time.monotonic() - t0:.1f}s)"
              + ("" if err is None else f"\n     {err}"), flush=True)
    n_pass = sum(v is None for v in results.values())
    print(f"\n{n_pass} of {len(results)} cases pass ({time.monotonic() - t_all:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if n_pass == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
