"""The bundled SYNTHETIC datasets in sample_data/: reproducible, well-formed, and recoverable."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx
from hcl_explore.lattice import Lattice, node_label, parse_node_label

SD = Path(__file__).resolve().parents[1] / "sample_data"
DATASETS = ("clinical", "omics")

_spec = importlib.util.spec_from_file_location("make_sample_data", SD / "make_sample_data.py")
msd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(msd)  # type: ignore[union-attr]


def _manifest(ds: str) -> dict:
    return json.loads((SD / ds / "dataset.json").read_text(encoding="utf-8"))


def _truth(ds: str) -> dict:
    return json.loads((SD / ds / _manifest(ds)["truth"]).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample_data")
    subprocess.run([sys.executable, str(SD / "make_sample_data.py"), "--out", str(out)], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def clinical():
    frames, man, truth = msd.load_frames(str(SD / "clinical"))
    raw = {m: pd.read_csv(SD / "clinical" / f, index_col=man["id_column"]) for m, f in man["modalities"].items()}
    return frames, raw, man, truth


# ---------------------------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("ds", DATASETS)
def test_regeneration_is_byte_identical(regenerated, ds):
    committed = sorted(p.name for p in (SD / ds).iterdir() if p.is_file())
    fresh = sorted(p.name for p in (regenerated / ds).iterdir() if p.is_file())
    assert committed == fresh
    for name in committed:
        a, b = (SD / ds / name).read_bytes(), (regenerated / ds / name).read_bytes()
        assert a == b, f"{ds}/{name} differs from a fresh run of make_sample_data.py (seeded): regenerate and commit"


def test_files_are_small_and_plain():
    total = sum(p.stat().st_size for ds in DATASETS for p in (SD / ds).iterdir())
    assert total < 8_000_000
    for ds in DATASETS:
        for p in (SD / ds).iterdir():
            raw = p.read_bytes()
            assert b"\r" not in raw and raw.endswith(b"\n"), p.name


# ---------------------------------------------------------------------------------------------- manifests + truth
@pytest.mark.parametrize("ds", DATASETS)
def test_manifest_and_truth_are_consistent(ds):
    man, truth = _manifest(ds), _truth(ds)
    assert man["synthetic"] is True and truth["synthetic"] is True
    assert {"name", "description", "id_column", "modalities", "outcomes", "truth"} <= set(man)
    assert "SYNTHETIC" in man["description"]
    mods = list(man["modalities"])
    assert truth["modalities"] == mods
    lat = Lattice.full(mods)
    heads = {}
    for m, f in man["modalities"].items():
        header = (SD / ds / f).open(encoding="utf-8").readline().rstrip("\n").split(",")
        assert header[0] == man["id_column"]
        heads[m] = header[1:]
        assert len(set(heads[m])) == len(heads[m])
    labels = [n["label"] for n in truth["nodes"]]
    assert len(set(labels)) == len(labels)
    assert truth["ranks"] == {n["label"]: n["rank"] for n in truth["nodes"]}
    for n in truth["nodes"]:
        node = lat.node(n["node"])
        assert tuple(n["node"]) == node, "node modalities in manifest order"
        assert n["label"] == node_label(node) and parse_node_label(n["label"]) == node
        assert n["rank"] == len(n["factors"]) >= 1
        assert n["name"] and n["description"]
    for m in mods:
        assert set(truth["supports"][m]) == {lab for lab in labels if m in parse_node_label(lab)}
        for lab, feats in truth["supports"][m].items():
            assert feats, f"node {lab} has no clear feature in {m}"
            assert set(feats) <= set(heads[m])
        for lab, B in truth["loadings"][m].items():
            B = np.asarray(B)
            assert B.shape == (len(heads[m]), truth["ranks"][lab])
    # Every modality has a private node and some shared node.
    for m in mods:
        assert m in truth["ranks"]
    for name, o in truth["outcomes"].items():
        assert o["type"] in ("binary", "continuous", "categorical")
        assert o["drivers"] and set(o["drivers"]) <= set(labels)
    outcomes = pd.read_csv(SD / ds / man["outcomes"])
    assert set(truth["outcomes"]) == set(outcomes.columns) - {man["id_column"]}


# ---------------------------------------------------------------------------------------------- clinical content
def test_clinical_shapes_and_missingness(clinical):
    frames, raw, man, truth = clinical
    assert list(man["modalities"]) == ["diagnoses", "labs", "vitals", "notes"]
    ids = raw["diagnoses"].index
    assert len(ids) == 3000 and ids.is_unique and ids.is_monotonic_increasing
    assert all(ids.str.fullmatch(r"P\d{5}"))
    assert raw["vitals"].index.equals(ids)
    for m in ("labs", "notes"):
        assert raw[m].index.is_unique and set(raw[m].index) <= set(ids)
    assert len(raw["labs"]) / 3000 == pytest.approx(0.90, abs=0.01)
    assert len(raw["notes"]) / 3000 == pytest.approx(0.80, abs=0.01)
    blank = raw["labs"].isna().to_numpy()
    assert blank.mean() == pytest.approx(0.005, abs=0.002)
    assert not blank.all(axis=1).any()
    for m in ("diagnoses", "vitals", "notes"):
        assert not raw[m].isna().any().any()
    assert truth["missingness"]["labs_blank_cells"] == int(blank.sum())
    assert not any(f.isna().any().any() for f in frames.values())


def test_clinical_feature_content(clinical):
    _, raw, _, _ = clinical
    dx = raw["diagnoses"]
    assert 30 <= dx.shape[1] <= 60
    assert set(np.unique(dx.to_numpy())) == {0, 1}
    prev = dx.mean()
    assert prev.min() >= 0.025 and prev.max() <= 0.37
    assert all(c[0].isalpha() and c[1:3].isdigit() and "_" in c for c in dx.columns), "ICD-10 code + '_' + name"
    labs = raw["labs"]
    assert 15 <= labs.shape[1] <= 25
    for c in ("creatinine_mg_dL", "bun_mg_dL", "egfr_mL_min", "potassium_mmol_L", "sodium_mmol_L", "wbc_10e9_L",
              "hemoglobin_g_dL", "glucose_mg_dL", "crp_mg_L", "lactate_mmol_L", "albumin_g_dL", "troponin_ng_L"):
        assert c in labs.columns
    assert (labs.min() > 0).all()
    assert 130 < labs["sodium_mmol_L"].mean() < 145 and 3.5 < labs["potassium_mmol_L"].mean() < 5
    assert 0.7 < labs["creatinine_mg_dL"].median() < 1.3
    vit = raw["vitals"]
    assert 8 <= vit.shape[1] <= 10
    assert vit["spo2_pct"].max() <= 100 and 60 < vit["heart_rate_bpm"].mean() < 100
    assert 36 < vit["temperature_C"].mean() < 37.5
    notes = raw["notes"]
    assert list(notes.columns) == [f"note_emb_{j:02d}" for j in range(64)]
    z = (notes - notes.mean()) / notes.std()
    assert np.abs(z.skew()).max() < 0.3 and np.abs(z.kurt()).max() < 0.5, "note embeddings roughly Gaussian"


def test_clinical_outcomes(clinical):
    _, raw, man, truth = clinical
    out = pd.read_csv(SD / "clinical" / man["outcomes"], index_col=man["id_column"])
    assert list(out.columns) == ["readmit_30d", "length_of_stay_days"]
    assert out.index.equals(raw["diagnoses"].index)
    assert set(out["readmit_30d"].unique()) == {0, 1}
    assert 0.10 <= out["readmit_30d"].mean() <= 0.20
    los = out["length_of_stay_days"]
    assert (los > 0).all() and 3 <= los.median() <= 5
    assert truth["outcomes"]["readmit_30d"]["type"] == "binary"
    assert truth["outcomes"]["length_of_stay_days"]["type"] == "continuous"


def test_omics_shapes():
    man, truth = _manifest("omics"), _truth("omics")
    assert list(man["modalities"]) == ["mrna", "methylation", "protein"] and man["id_column"] == "sample_id"
    shapes = {}
    for m, f in man["modalities"].items():
        df = pd.read_csv(SD / "omics" / f, index_col="sample_id")
        assert df.index.is_unique and len(df) == 200 and not df.isna().any().any()
        shapes[m] = df.shape[1]
    assert shapes["mrna"] >= 2000 and 300 <= shapes["methylation"] <= 500 and 50 <= shapes["protein"] <= 100
    meth = pd.read_csv(SD / "omics" / "methylation.csv", index_col="sample_id")
    assert meth.columns.str.fullmatch(r"cg\d{8}").all() and meth.min().min() >= 0 and meth.max().max() <= 1
    out = pd.read_csv(SD / "omics" / "outcomes.csv", index_col="sample_id")
    assert out["subtype"].nunique() == 3 and not pd.api.types.is_numeric_dtype(out["subtype"])
    assert set(out["response"].unique()) == {0, 1}
    sizes = [len(parse_node_label(lab)) for lab in truth["ranks"]]
    assert sizes.count(3) == 1 and sizes.count(2) >= 1 and sizes.count(1) == 3


# ---------------------------------------------------------------------------------------------- recovery
@pytest.fixture(scope="module", params=[True, False], ids=["balanced", "unbalanced"])
def fitted(request, clinical):
    """The documented check: full lattice, automatic ranks, standardized features."""
    frames, _, man, truth = clinical
    mods = list(man["modalities"])
    data = hx.MultimodalData.from_frames(frames, id_column=None)
    model = hx.HCL(lattice=hx.Lattice.full(mods), ranks="auto", standardize=True,
                   balance_modalities=request.param, device="cpu", random_state=0).fit(data)
    true_ranks = {parse_node_label(k): v for k, v in truth["ranks"].items()}
    return model, true_ranks


def test_clinical_structure_is_recovered(fitted):
    model, true_ranks = fitted
    assert hx.metrics.structure_scores(true_ranks, model.ranks_)["f1"] == 1.0, model.ranks_


def test_clinical_ranks_are_exact(fitted):
    model, true_ranks = fitted
    found = {node_label(n): r for n, r in model.ranks_.items() if r > 0}
    assert found == {node_label(n): r for n, r in true_ranks.items()}


# ------------------------------------------------------------------------- the judged path, library defaults
@pytest.fixture(scope="module")
def loaded():
    ds = hx.load_dataset("clinical")
    model = hx.HCL(lattice=hx.Lattice.full(ds.data.modalities), ranks="auto").fit(ds.data)
    return ds, model


def test_loader_and_default_fit_recover_the_documented_structure(loaded):
    ds, model = loaded
    rep = ds.data.report["modalities"]
    assert rep["labs"]["cells_imputed"] > 0 and rep["labs"]["samples"] < ds.data.n_samples
    assert rep["notes"]["samples"] < ds.data.n_samples
    assert model.standardized_  # mixed units: 'auto' standardizes
    assert hx.metrics.structure_scores(hx.truth_ranks(ds.truth), model.ranks_)["f1"] == 1.0, model.ranks_


def test_readmission_drivers_are_the_selected_nodes(loaded):
    ds, model = loaded
    y = ds.outcomes.y("readmit_30d", ds.data)
    rep = hx.evaluate_prediction(model, ds.data, y, baselines=False, n_bootstrap=0)
    drivers = {parse_node_label(x) for x in ds.truth["outcomes"]["readmit_30d"]["drivers"]}
    assert set(rep.selected_nodes) == drivers
    assert rep.metric("auroc") > 0.65


def test_inspect_cli_on_the_bundled_dataset(capsys):
    from hcl_explore.cli import main

    assert main(["inspect", str(SD / "clinical")]) == 0
    out = capsys.readouterr().out
    assert "3000 samples" in out and "readmit_30d: binary" in out and "imputed (mean)" in out
