#!/usr/bin/env python
"""Generate the SYNTHETIC demo datasets of ``sample_data/`` (no real patients, no real samples).

    python sample_data/make_sample_data.py                 # rewrite sample_data/clinical and sample_data/omics
    python sample_data/make_sample_data.py --out /tmp/sd   # write elsewhere
    python sample_data/make_sample_data.py --clinical-seed 3 --only clinical --out /tmp/sd3

Both datasets are drawn from a latent *linear factor model over a lattice of modality subsets*
(the model hcl_explore fits): every factor belongs to one node (a set of modalities) and loads on
features of those modalities only. For each feature j a latent, standardized value

    y_j = sum_k L[j, k] z_k + sqrt(1 - h_j) e_j,     z_k ~ N(0, 1), e_j ~ N(0, 1), var(y_j) = 1

is drawn and then put on a plausible scale: Gaussian (``mean + sd * y``), log-normal
(``median * exp(s * y)``), binary (``1[y > threshold]``, threshold set by the prevalence), or a
methylation beta value (``logistic(a + b * y)``). ``L`` is what ``truth.json`` reports
("loadings", on this latent standardized scale, in the order of the node's factors).

Everything is seeded and written with fixed per-column decimals, so a run reproduces the committed
files byte for byte (with the same numpy). numpy and pandas only; a few seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Sequence

import numpy as np
import pandas as pd

CLINICAL_SEED = 20240611
OMICS_SEED = 7
HERE = os.path.dirname(os.path.abspath(__file__))

# Features whose loading on a node has norm >= this (latent standardized scale) are that node's "support".
SUPPORT_THRESHOLD = 0.3


# ============================================================================ shared helpers
def _norm_ppf(p: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation + one Newton step)."""
    if not 0.0 < p < 1.0:
        raise ValueError(p)
    a = [-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00]
    b = [-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01]
    c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00]
    d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00]
    lo = 0.02425
    if p < lo:
        q = math.sqrt(-2 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    elif p > 1 - lo:
        q = math.sqrt(-2 * math.log(1 - p))
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    else:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    e = 0.5 * math.erfc(-x / math.sqrt(2)) - p
    u = e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
    return x - u / (1 + x * u / 2)


def _norm_pdf(x: float) -> float:
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _linear_share(kind: str, params: dict) -> float:
    """Share of a feature's variance that is linear in its latent value y (for var(y) = 1).

    Gaussian 1; log-normal s^2 / (e^{s^2} - 1); binary phi(t)^2 / (p (1 - p)). Used to give the
    features of one modality a similar *observed* communality.
    """
    if kind == "binary":
        p = params["prevalence"]
        t = _norm_ppf(1 - p)
        return _norm_pdf(t) ** 2 / (p * (1 - p))
    if kind == "lognormal":
        s2 = params["s"] ** 2
        return s2 / math.expm1(s2)
    if kind == "beta":  # logistic(a + b y): Gauss-Hermite quadrature
        x, w = np.polynomial.hermite_e.hermegauss(81)
        w = w / w.sum()
        v = 1.0 / (1.0 + np.exp(-(params["a"] + params["b"] * x)))
        mean = float(w @ v)
        return float((w @ (v * x)) ** 2 / (w @ (v - mean) ** 2))
    return 1.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _format_column(values: np.ndarray, decimals: int) -> list[str]:
    """Fixed-decimal strings; NaN -> '' (blank cell); no '-0.0'."""
    v = np.round(np.asarray(values, dtype=np.float64), decimals) + 0.0
    fmt = "{:.%df}" % decimals
    return ["" if x != x else fmt.format(x) for x in v.tolist()]


def write_csv(path: str, ids: Sequence[str], id_column: str, columns: list[tuple[str, np.ndarray, int | None]]) -> None:
    """Write a CSV byte-for-byte reproducibly: ``columns`` = (name, values, decimals or None for text)."""
    cols = [[str(x) for x in ids]]
    for _, values, dec in columns:
        cols.append([str(x) for x in values] if dec is None else _format_column(values, dec))
    header = ",".join([id_column] + [name for name, _, _ in columns])
    lines = [header] + [",".join(row) for row in zip(*cols)]
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(lines) + "\n")


def write_json(path: str, obj: dict) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def node_label(node: Sequence[str]) -> str:
    return "+".join(node)


def _node_order(nodes: list[tuple[str, ...]], mods: list[str]) -> list[tuple[str, ...]]:
    """Largest nodes first, then by modality order (the reverse of hcl_explore's lattice order)."""
    idx = {m: i for i, m in enumerate(mods)}
    return sorted(nodes, key=lambda n: (-len(n), [idx[m] for m in n]))


class FactorModel:
    """Latent factors grouped into nodes, features with sparse loading *weights*.

    ``factors``: list of dicts {id, name, node (tuple), description}. Each feature gives relative
    weights on some factors; the row is jittered (seeded), then scaled to a latent communality
    h_j = sum_k L[j, k]^2: either ``target`` itself (``scale="latent"``) or the h_j that makes the
    feature's observed *linear* communality about ``target`` (``scale="observed"``, which
    compensates the attenuation of log-normal and logistic transforms).
    """

    def __init__(self, modalities: list[str], factors: list[dict]):
        self.modalities = modalities
        self.factors = factors
        self.fid = {f["id"]: k for k, f in enumerate(factors)}
        for f in factors:
            assert all(m in modalities for m in f["node"]), f
        self.nodes = _node_order(list(dict.fromkeys(tuple(f["node"]) for f in factors)), modalities)

    def node_factors(self, node: tuple[str, ...]) -> list[int]:
        return [k for k, f in enumerate(self.factors) if tuple(f["node"]) == node]

    def loadings(self, weights: np.ndarray, kinds: list[str], params: list[dict], target: float, scale: str,
                 rng: np.random.Generator, jitter: float, h_max: float = 0.85) -> tuple[np.ndarray, np.ndarray]:
        """Scale (jittered) weight rows: returns L (d, K) and h (d,)."""
        W = weights * np.exp(jitter * rng.standard_normal(weights.shape))
        if scale == "latent":
            h = np.full(W.shape[0], min(target, h_max))
        else:
            h = np.array([min(target / _linear_share(k, p), h_max) for k, p in zip(kinds, params)])
        norms = np.linalg.norm(W, axis=1)
        assert np.all(norms > 0), "every feature needs some signal"
        L = W / norms[:, None] * np.sqrt(h)[:, None]
        return L, h


def _latent(Z: np.ndarray, L: np.ndarray, h: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = Z.shape[0]
    E = rng.standard_normal((n, L.shape[0]))
    return Z @ L.T + E * np.sqrt(1.0 - h)[None, :]


def _observe(y: np.ndarray, kind: str, p: dict) -> np.ndarray:
    if kind == "gaussian":
        x = p["mean"] + p["sd"] * y
    elif kind == "lognormal":
        x = p["median"] * np.exp(p["s"] * y)
    elif kind == "binary":
        return (y > _norm_ppf(1 - p["prevalence"])).astype(float)
    elif kind == "beta":
        x = _sigmoid(p["a"] + p["b"] * y)
    else:
        raise ValueError(kind)
    lo = p.get("min", 10.0 ** -p["decimals"] if kind == "lognormal" else -np.inf)
    return np.clip(x, lo, p.get("max", np.inf))


def _truth(fm: FactorModel, seed: int, names: dict[str, list[str]], L: dict[str, np.ndarray], extra_nodes: dict) -> dict:
    mods = fm.modalities
    nodes_out, ranks, supports, loadings = [], {}, {m: {} for m in mods}, {m: {} for m in mods}
    for node in fm.nodes:
        ks = fm.node_factors(node)
        lab = node_label(node)
        ranks[lab] = len(ks)
        entry = {
            "node": list(node),
            "label": lab,
            "name": extra_nodes[lab]["name"],
            "rank": len(ks),
            "factors": [fm.factors[k]["name"] for k in ks],
            "description": extra_nodes[lab]["description"],
            "factor_descriptions": {fm.factors[k]["name"]: fm.factors[k]["description"] for k in ks},
            "top_features": {},
        }
        for m in node:
            B = L[m][:, ks]
            loadings[m][lab] = np.round(B, 4).tolist()
            strength = np.linalg.norm(B, axis=1)
            sup = [names[m][j] for j in np.flatnonzero(strength >= SUPPORT_THRESHOLD)]
            supports[m][lab] = sup
            order = [j for j in np.argsort(-strength, kind="stable")[:5] if strength[j] > 0]
            entry["top_features"][m] = [
                {"feature": names[m][j], "loading": [round(float(x), 3) for x in B[j]]} for j in order
            ]
        nodes_out.append(entry)
    return {
        "synthetic": True,
        "seed": seed,
        "modalities": list(mods),
        "nodes": nodes_out,
        "ranks": ranks,
        "supports": supports,
        "support_threshold": SUPPORT_THRESHOLD,
        "loadings": loadings,
        "loadings_scale": (
            "latent standardized scale: feature j's latent value y_j = sum_k L[j,k] z_k + noise has "
            "variance 1; observed = transform(y_j) (see README); columns follow the node's 'factors'"
        ),
    }


# ============================================================================ clinical
CLIN_MODS = ["diagnoses", "labs", "vitals", "notes"]
ALL4 = ("diagnoses", "labs", "vitals", "notes")

CLIN_FACTORS = [
    {"id": "acuity", "name": "acuity", "node": ALL4,
     "description": "severity of the acute illness: shock, organ dysfunction, lactate, deranged vitals, "
                    "sicker-sounding notes"},
    {"id": "infection", "name": "infection/inflammation", "node": ("diagnoses", "labs", "notes"),
     "description": "infection and systemic inflammation: sepsis/UTI/cellulitis codes, WBC, CRP, "
                    "procalcitonin, low albumin, infection language in notes"},
    {"id": "cardioresp", "name": "cardiorespiratory", "node": ("diagnoses", "vitals", "notes"),
     "description": "heart failure / COPD / respiratory failure: I50, J44, J96 codes, tachycardia, "
                    "tachypnoea, low SpO2, dyspnoea language in notes"},
    {"id": "renal", "name": "renal function", "node": ("diagnoses", "labs"),
     "description": "kidney dysfunction: CKD/AKI codes, creatinine, BUN, potassium, phosphate up, "
                    "eGFR and bicarbonate down"},
    {"id": "glycemic", "name": "glycemic control", "node": ("diagnoses", "labs"),
     "description": "diabetes: E11 codes and insulin use, glucose, HbA1c, triglycerides"},
    {"id": "comorbidity", "name": "chronic comorbidity burden", "node": ("diagnoses",),
     "description": "accumulated chronic conditions coded at admission (hypertension, CAD, "
                    "hypothyroidism, osteoarthritis, GERD, ...)"},
    {"id": "mental", "name": "mental health and substance use", "node": ("diagnoses",),
     "description": "depression, anxiety, insomnia, nicotine/alcohol/opioid dependence codes"},
    {"id": "hematology", "name": "hematology (iron-deficiency pattern)", "node": ("labs",),
     "description": "haemoglobin and MCV down, RDW up"},
    {"id": "habitus", "name": "body habitus", "node": ("vitals",),
     "description": "weight and BMI, with higher blood pressure"},
    {"id": "author", "name": "note author", "node": ("notes",),
     "description": "who wrote the note (physician vs nursing vocabulary) - documentation style"},
    {"id": "template", "name": "note template", "node": ("notes",),
     "description": "which note template / length was used - documentation style"},
]

CLIN_NODES = {
    "diagnoses+labs+vitals+notes": {"name": "acuity", "description": "Global node: how acutely ill the patient is, "
                                    "visible in every modality."},
    "diagnoses+labs+notes": {"name": "infection", "description": "Infection and systemic inflammation: coded "
                             "infections, inflammatory labs and infection language in the notes (fever and "
                             "tachycardia are folded into acuity in this synthetic cohort, so vitals do not carry it)."},
    "diagnoses+vitals+notes": {"name": "cardiorespiratory", "description": "Heart failure, COPD and respiratory "
                               "failure: codes, tachycardia/tachypnoea/low SpO2 and dyspnoea language in notes "
                               "(no cardiac biomarkers among the labs, so labs do not carry it)."},
    "diagnoses+labs": {"name": "renal and glycemic", "description": "Two chronic-disease factors seen in codes and "
                       "labs only: renal function and glycemic control."},
    "diagnoses": {"name": "comorbidity and mental health", "description": "Private to diagnoses: chronic "
                  "comorbidity burden and mental health / substance use."},
    "labs": {"name": "hematology", "description": "Private to labs: iron-deficiency pattern (Hb, MCV down, RDW up)."},
    "vitals": {"name": "body habitus", "description": "Private to vitals: weight, BMI and blood pressure."},
    "notes": {"name": "documentation style", "description": "Private to notes: note author and note template."},
}

# (column, description, prevalence, {factor: weight})
DIAGNOSES = [
    # acuity
    ("A41.9_sepsis_unspecified", "Sepsis, unspecified organism", 0.08, {"acuity": 0.6, "infection": 0.8}),
    ("R65.20_severe_sepsis", "Severe sepsis without septic shock", 0.04, {"acuity": 0.8, "infection": 0.6}),
    ("R57.9_shock", "Shock, unspecified", 0.04, {"acuity": 1.0}),
    ("J96.01_acute_resp_failure_hypoxia", "Acute respiratory failure with hypoxia", 0.07, {"acuity": 0.6, "cardioresp": 0.8}),
    ("N17.9_acute_kidney_failure", "Acute kidney failure, unspecified", 0.12, {"renal": 0.7, "acuity": 0.6}),
    ("E87.1_hyponatremia", "Hypo-osmolality and hyponatremia", 0.06, {"acuity": 1.0}),
    ("E86.0_dehydration", "Dehydration", 0.10, {"acuity": 0.8, "renal": 0.3}),
    ("R41.82_altered_mental_status", "Altered mental status, unspecified", 0.08, {"acuity": 1.0}),
    ("G93.41_metabolic_encephalopathy", "Metabolic encephalopathy", 0.05, {"acuity": 0.9, "infection": 0.3}),
    # renal
    ("N18.3_ckd_stage_3", "Chronic kidney disease, stage 3", 0.14, {"renal": 1.0}),
    ("N18.4_ckd_stage_4", "Chronic kidney disease, stage 4", 0.05, {"renal": 1.0}),
    ("N18.6_end_stage_renal_disease", "End stage renal disease", 0.04, {"renal": 1.0}),
    ("I12.9_hypertensive_ckd", "Hypertensive chronic kidney disease", 0.12, {"renal": 0.8, "comorbidity": 0.4}),
    ("E87.5_hyperkalemia", "Hyperkalemia", 0.06, {"renal": 0.8, "acuity": 0.4}),
    ("D63.1_anemia_in_ckd", "Anemia in chronic kidney disease", 0.06, {"renal": 1.0}),
    ("N25.81_secondary_hyperparathyroidism", "Secondary hyperparathyroidism of renal origin", 0.04, {"renal": 1.0}),
    ("E11.22_t2dm_diabetic_ckd", "Type 2 diabetes with diabetic chronic kidney disease", 0.07, {"renal": 0.6, "glycemic": 0.8}),
    # glycemic
    ("E11.9_t2dm_no_complications", "Type 2 diabetes without complications", 0.20, {"glycemic": 1.0}),
    ("E11.65_t2dm_hyperglycemia", "Type 2 diabetes with hyperglycemia", 0.08, {"glycemic": 1.0}),
    ("E11.42_diabetic_polyneuropathy", "Type 2 diabetes with diabetic polyneuropathy", 0.05, {"glycemic": 0.9, "comorbidity": 0.3}),
    ("Z79.4_long_term_insulin", "Long term (current) use of insulin", 0.10, {"glycemic": 1.0}),
    ("E78.5_hyperlipidemia", "Hyperlipidemia, unspecified", 0.30, {"glycemic": 0.5, "comorbidity": 0.7}),
    # cardiorespiratory
    ("I50.9_heart_failure", "Heart failure, unspecified", 0.12, {"cardioresp": 1.0}),
    ("I50.23_acute_on_chronic_systolic_hf", "Acute on chronic systolic heart failure", 0.05, {"cardioresp": 0.9, "acuity": 0.4}),
    ("I48.91_atrial_fibrillation", "Unspecified atrial fibrillation", 0.12, {"cardioresp": 0.8, "comorbidity": 0.4}),
    ("J44.1_copd_exacerbation", "COPD with (acute) exacerbation", 0.08, {"cardioresp": 1.0}),
    ("J44.9_copd", "Chronic obstructive pulmonary disease, unspecified", 0.12, {"cardioresp": 0.8, "comorbidity": 0.3}),
    ("J18.9_pneumonia", "Pneumonia, unspecified organism", 0.10, {"cardioresp": 0.6, "infection": 0.7}),
    ("J81.0_acute_pulmonary_edema", "Acute pulmonary edema", 0.04, {"cardioresp": 0.9, "acuity": 0.4}),
    ("R06.02_shortness_of_breath", "Shortness of breath", 0.15, {"cardioresp": 1.0}),
    ("I26.99_pulmonary_embolism", "Other pulmonary embolism without acute cor pulmonale", 0.04, {"cardioresp": 0.8, "acuity": 0.4}),
    ("Z99.81_supplemental_oxygen", "Dependence on supplemental oxygen", 0.05, {"cardioresp": 1.0}),
    # infection
    ("N39.0_urinary_tract_infection", "Urinary tract infection, site not specified", 0.12, {"infection": 1.0}),
    ("L03.90_cellulitis", "Cellulitis, unspecified", 0.05, {"infection": 1.0}),
    ("A04.72_c_difficile_enterocolitis", "Enterocolitis due to Clostridioides difficile", 0.04, {"infection": 0.9, "acuity": 0.3}),
    ("B96.20_e_coli_infection", "Escherichia coli as the cause of disease", 0.05, {"infection": 1.0}),
    ("R50.9_fever", "Fever, unspecified", 0.10, {"infection": 0.9, "acuity": 0.3}),
    # chronic comorbidity (private)
    ("I10_essential_hypertension", "Essential (primary) hypertension", 0.35, {"comorbidity": 1.0}),
    ("I25.10_coronary_artery_disease", "Atherosclerotic heart disease of native coronary artery", 0.15, {"comorbidity": 0.8, "cardioresp": 0.3}),
    ("E03.9_hypothyroidism", "Hypothyroidism, unspecified", 0.10, {"comorbidity": 1.0}),
    ("M17.9_knee_osteoarthritis", "Osteoarthritis of knee, unspecified", 0.10, {"comorbidity": 1.0}),
    ("K21.9_gerd", "Gastro-esophageal reflux disease without esophagitis", 0.15, {"comorbidity": 1.0}),
    ("G47.33_obstructive_sleep_apnea", "Obstructive sleep apnea", 0.08, {"comorbidity": 0.8, "cardioresp": 0.3}),
    ("M81.0_osteoporosis", "Age-related osteoporosis", 0.06, {"comorbidity": 1.0}),
    ("Z79.01_long_term_anticoagulants", "Long term (current) use of anticoagulants", 0.10, {"cardioresp": 0.6, "comorbidity": 0.6}),
    # mental health and substance use (private)
    ("F32.9_major_depressive_disorder", "Major depressive disorder, single episode, unspecified", 0.15, {"mental": 1.0}),
    ("F41.9_anxiety_disorder", "Anxiety disorder, unspecified", 0.14, {"mental": 1.0}),
    ("F17.210_nicotine_dependence", "Nicotine dependence, cigarettes, uncomplicated", 0.18, {"mental": 0.7, "cardioresp": 0.3}),
    ("F10.20_alcohol_dependence", "Alcohol dependence, uncomplicated", 0.06, {"mental": 0.9, "acuity": 0.3}),
    ("F11.20_opioid_dependence", "Opioid dependence, uncomplicated", 0.04, {"mental": 1.0}),
    ("G47.00_insomnia", "Insomnia, unspecified", 0.08, {"mental": 1.0}),
]

# (column, description, kind, params, {factor: weight})
LABS = [
    ("sodium_mmol_L", "Sodium", "gaussian", {"mean": 138, "sd": 4.0, "decimals": 0}, {"acuity": -0.8, "glycemic": -0.3}),
    ("potassium_mmol_L", "Potassium", "gaussian", {"mean": 4.2, "sd": 0.5, "decimals": 1}, {"renal": 0.9, "acuity": 0.3}),
    ("bicarbonate_mmol_L", "Bicarbonate (total CO2)", "gaussian", {"mean": 24, "sd": 3.5, "decimals": 0}, {"renal": -0.6, "acuity": -0.7}),
    ("bun_mg_dL", "Blood urea nitrogen", "lognormal", {"median": 18, "s": 0.4, "decimals": 0, "min": 2}, {"renal": 0.9, "acuity": 0.4}),
    ("creatinine_mg_dL", "Creatinine", "lognormal", {"median": 1.0, "s": 0.4, "decimals": 2}, {"renal": 1.0, "acuity": 0.3}),
    ("egfr_mL_min", "Estimated GFR (mL/min/1.73 m2)", "gaussian", {"mean": 70, "sd": 22, "decimals": 0, "min": 5, "max": 140}, {"renal": -1.0, "acuity": -0.3}),
    ("phosphate_mg_dL", "Phosphate", "gaussian", {"mean": 3.6, "sd": 0.8, "decimals": 1, "min": 0.5}, {"renal": 1.0}),
    ("calcium_mg_dL", "Calcium", "gaussian", {"mean": 9.0, "sd": 0.6, "decimals": 1}, {"renal": -0.5, "acuity": -0.6}),
    ("glucose_mg_dL", "Glucose", "lognormal", {"median": 120, "s": 0.3, "decimals": 0}, {"glycemic": 0.9, "acuity": 0.3}),
    ("hba1c_pct", "Hemoglobin A1c", "lognormal", {"median": 6.1, "s": 0.17, "decimals": 1}, {"glycemic": 1.0}),
    ("triglycerides_mg_dL", "Triglycerides", "lognormal", {"median": 140, "s": 0.4, "decimals": 0}, {"glycemic": 1.0}),
    ("albumin_g_dL", "Albumin", "gaussian", {"mean": 3.5, "sd": 0.5, "decimals": 1, "min": 1.0}, {"acuity": -0.7, "infection": -0.5}),
    ("lactate_mmol_L", "Lactate", "lognormal", {"median": 1.4, "s": 0.35, "decimals": 1}, {"acuity": 1.0, "infection": 0.3}),
    ("troponin_ng_L", "High-sensitivity troponin T", "lognormal", {"median": 12, "s": 0.5, "decimals": 0, "min": 3}, {"acuity": 0.7, "renal": 0.6}),
    ("wbc_10e9_L", "White blood cell count", "lognormal", {"median": 8.5, "s": 0.3, "decimals": 1}, {"infection": 1.0, "acuity": 0.3}),
    ("crp_mg_L", "C-reactive protein", "lognormal", {"median": 15, "s": 0.5, "decimals": 1}, {"infection": 1.0, "acuity": 0.3}),
    ("procalcitonin_ng_mL", "Procalcitonin", "lognormal", {"median": 0.15, "s": 0.5, "decimals": 3}, {"infection": 0.9, "acuity": 0.4}),
    ("platelets_10e9_L", "Platelet count", "gaussian", {"mean": 240, "sd": 70, "decimals": 0, "min": 10}, {"infection": 0.5, "hematology": -0.6}),
    ("hemoglobin_g_dL", "Hemoglobin", "gaussian", {"mean": 12.3, "sd": 1.9, "decimals": 1, "min": 4.0}, {"hematology": 0.9, "renal": -0.4}),
    ("mcv_fL", "Mean corpuscular volume", "gaussian", {"mean": 90, "sd": 6, "decimals": 0}, {"hematology": 1.0}),
    ("rdw_pct", "Red cell distribution width", "gaussian", {"mean": 14.2, "sd": 1.6, "decimals": 1, "min": 10.0}, {"hematology": -0.9, "acuity": 0.3}),
]

VITALS = [
    ("heart_rate_bpm", "Heart rate", "gaussian", {"mean": 84, "sd": 15, "decimals": 0, "min": 35}, {"acuity": 0.7, "cardioresp": 0.6}),
    ("resp_rate_per_min", "Respiratory rate", "gaussian", {"mean": 18, "sd": 3.5, "decimals": 0, "min": 8}, {"acuity": 0.5, "cardioresp": 0.8}),
    ("spo2_pct", "Oxygen saturation (pulse oximetry)", "gaussian", {"mean": 95, "sd": 2.4, "decimals": 0, "min": 70, "max": 100}, {"cardioresp": -0.9, "acuity": -0.4}),
    ("temperature_C", "Temperature", "gaussian", {"mean": 36.9, "sd": 0.55, "decimals": 1}, {"acuity": 1.0}),
    ("sbp_mmHg", "Systolic blood pressure", "gaussian", {"mean": 128, "sd": 20, "decimals": 0, "min": 60}, {"habitus": 0.6, "acuity": -0.7}),
    ("dbp_mmHg", "Diastolic blood pressure", "gaussian", {"mean": 72, "sd": 12, "decimals": 0, "min": 30}, {"habitus": 0.7, "acuity": -0.5}),
    ("map_mmHg", "Mean arterial pressure", "gaussian", {"mean": 90, "sd": 13, "decimals": 0, "min": 40}, {"habitus": 0.6, "acuity": -0.7}),
    ("weight_kg", "Weight", "gaussian", {"mean": 81, "sd": 17, "decimals": 1, "min": 30}, {"habitus": 1.0}),
    ("bmi_kg_m2", "Body mass index", "gaussian", {"mean": 28.5, "sd": 5.5, "decimals": 1, "min": 12}, {"habitus": 1.0}),
]

# Units where the column-name suffix is not the unit as written (the rest: suffix with '/' for '_').
UNITS = {
    "egfr_mL_min": "mL/min/1.73 m2", "hba1c_pct": "%", "rdw_pct": "%", "spo2_pct": "%",
    "wbc_10e9_L": "10^9/L", "platelets_10e9_L": "10^9/L", "heart_rate_bpm": "beats/min",
    "resp_rate_per_min": "breaths/min", "temperature_C": "degC", "bmi_kg_m2": "kg/m2",
}

N_NOTE_DIMS = 64
NOTE_FACTORS = {"acuity": 1.0, "cardioresp": 0.9, "infection": 0.9, "author": 1.0, "template": 0.8}

# Communality per modality: (target, scale). Labs, vitals and notes: every feature explains about
# the same share of its *observed* variance (near-homoscedastic noise after standardizing).
# Diagnoses: the same *latent* (liability) communality for every code; equalizing the observed one
# would need very strong liabilities for rare codes, whose thresholding is then very non-linear.
CLIN_COMMUNALITY = {"diagnoses": (0.40, "latent"), "labs": (0.55, "observed"), "vitals": (0.55, "observed"),
                    "notes": (0.40, "observed")}
JITTER = 0.15  # log-sd of the multiplicative jitter of the hand-written weights

CLIN_N = 3000
LABS_ABSENT = 0.10     # share of patients with no labs at all
NOTES_ABSENT = 0.20    # share of patients with no notes
LAB_BLANK_CELLS = 0.005  # share of the remaining lab cells left blank

READMIT_PREVALENCE = 0.15
READMIT_COEF = {"acuity": 0.9, "renal": 0.7}
LOS_MEDIAN = 4.0
LOS_COEF = {"acuity": 0.35, "cardioresp": 0.25}
LOS_NOISE_SD = 0.45


def _clinical_tables(seed: int):
    rng = np.random.default_rng(seed)
    fm = FactorModel(CLIN_MODS, CLIN_FACTORS)
    K = len(CLIN_FACTORS)
    names: dict[str, list[str]] = {}
    kinds: dict[str, list[str]] = {}
    params: dict[str, list[dict]] = {}
    weights: dict[str, np.ndarray] = {}

    def spec_rows(m, rows):
        W = np.zeros((len(rows), K))
        for j, r in enumerate(rows):
            for fid, w in r[-1].items():
                assert m in CLIN_FACTORS[fm.fid[fid]]["node"], (m, r[0], fid)
                W[j, fm.fid[fid]] = w
        return W

    names["diagnoses"] = [r[0] for r in DIAGNOSES]
    kinds["diagnoses"] = ["binary"] * len(DIAGNOSES)
    params["diagnoses"] = [{"prevalence": r[2], "decimals": 0} for r in DIAGNOSES]
    weights["diagnoses"] = spec_rows("diagnoses", DIAGNOSES)
    for m, rows in (("labs", LABS), ("vitals", VITALS)):
        names[m] = [r[0] for r in rows]
        kinds[m] = [r[2] for r in rows]
        params[m] = [r[3] for r in rows]
        weights[m] = spec_rows(m, rows)
    # Note embeddings: dense random weights on the notes' factors (an embedding mixes everything).
    names["notes"] = [f"note_emb_{j:02d}" for j in range(N_NOTE_DIMS)]
    kinds["notes"] = ["gaussian"] * N_NOTE_DIMS
    Wn = np.zeros((N_NOTE_DIMS, K))
    for fid, w in NOTE_FACTORS.items():
        Wn[:, fm.fid[fid]] = w * rng.standard_normal(N_NOTE_DIMS)
    weights["notes"] = Wn
    note_mean = np.round(rng.normal(0.0, 0.03, N_NOTE_DIMS), 3)
    note_sd = np.round(rng.uniform(0.08, 0.14, N_NOTE_DIMS), 3)
    params["notes"] = [{"mean": float(a), "sd": float(b), "decimals": 3} for a, b in zip(note_mean, note_sd)]

    L, H = {}, {}
    for m in CLIN_MODS:
        jit = JITTER if m != "notes" else 0.0
        target, scale = CLIN_COMMUNALITY[m]
        L[m], H[m] = fm.loadings(weights[m], kinds[m], params[m], target, scale, rng, jit)

    n = CLIN_N
    ids = [f"P{i + 1:05d}" for i in range(n)]
    Z = rng.standard_normal((n, K))
    Y = {m: _latent(Z, L[m], H[m], rng) for m in CLIN_MODS}
    X = {m: np.column_stack([_observe(Y[m][:, j], k, p) for j, (k, p) in enumerate(zip(kinds[m], params[m]))])
         for m in CLIN_MODS}

    # Missingness: completely at random. Whole modalities absent; rare blank lab cells.
    rows = {m: np.arange(n) for m in CLIN_MODS}
    rows["labs"] = np.sort(rng.permutation(n)[int(round(LABS_ABSENT * n)):])
    rows["notes"] = np.sort(rng.permutation(n)[int(round(NOTES_ABSENT * n)):])
    labs = X["labs"][rows["labs"]].copy()
    n_blank = int(round(LAB_BLANK_CELLS * labs.size))
    cells = rng.choice(labs.size, size=n_blank, replace=False)
    labs.flat[cells] = np.nan
    X["labs"] = labs
    X["notes"] = X["notes"][rows["notes"]]

    # Outcomes from a few factors.
    z = {f["id"]: Z[:, k] for k, f in enumerate(CLIN_FACTORS)}
    eta = sum(c * z[f] for f, c in READMIT_COEF.items())
    lo, hi = -10.0, 5.0
    for _ in range(100):  # intercept so that the expected prevalence is READMIT_PREVALENCE
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _sigmoid(mid + eta).mean() < READMIT_PREVALENCE else (lo, mid)
    b0 = round((lo + hi) / 2, 4)
    readmit = (rng.random(n) < _sigmoid(b0 + eta)).astype(float)
    log_los = math.log(LOS_MEDIAN) + sum(c * z[f] for f, c in LOS_COEF.items()) + LOS_NOISE_SD * rng.standard_normal(n)
    los = np.maximum(np.exp(log_los), 0.1)

    return dict(fm=fm, ids=ids, names=names, kinds=kinds, params=params, L=L, H=H, Z=Z, X=X, rows=rows,
                readmit=readmit, los=los, b0=b0)


def make_clinical(out_dir: str, seed: int = CLINICAL_SEED) -> dict:
    t = _clinical_tables(seed)
    os.makedirs(out_dir, exist_ok=True)
    ids = np.array(t["ids"])
    files = {"diagnoses": "diagnoses.csv", "labs": "labs.csv", "vitals": "vitals.csv", "notes": "notes.csv"}
    for m in CLIN_MODS:
        dec = [p["decimals"] for p in t["params"][m]]
        cols = [(name, t["X"][m][:, j], dec[j]) for j, name in enumerate(t["names"][m])]
        write_csv(os.path.join(out_dir, files[m]), ids[t["rows"][m]], "patient_id", cols)
    write_csv(os.path.join(out_dir, "outcomes.csv"), ids, "patient_id",
              [("readmit_30d", t["readmit"], 0), ("length_of_stay_days", t["los"], 1)])
    fm = t["fm"]
    # Codebook: every feature with a description, unit and kind (not its loadings).
    cb_rows = []
    for r in DIAGNOSES:
        cb_rows.append(("diagnoses", r[0], r[1], "", "binary"))
    for m, rows in (("labs", LABS), ("vitals", VITALS)):
        for r in rows:
            unit = UNITS.get(r[0]) or r[0].split("_", 1)[1].replace("_", "/")
            cb_rows.append((m, r[0], r[1], unit, "lognormal" if r[2] == "lognormal" else "continuous"))
    for name in t["names"]["notes"]:
        cb_rows.append(("notes", name, "clinical-note embedding coordinate", "", "continuous"))
    with open(os.path.join(out_dir, "codebook.csv"), "w", encoding="utf-8", newline="\n") as fh:
        fh.write("modality,feature,description,unit,kind\n")
        for row in cb_rows:
            fh.write(",".join('"%s"' % x if "," in x else x for x in row) + "\n")

    manifest = {
        "name": "Synthetic EHR cohort (clinical)",
        "description": "SYNTHETIC electronic-health-record cohort of 3,000 made-up patients: ICD-10 diagnosis "
                       "indicators, labs, vitals and clinical-note embeddings, with 30-day readmission and "
                       "length of stay. Generated by sample_data/make_sample_data.py from a known hierarchy of "
                       "shared and private latent factors (truth.json). No real patient data.",
        "synthetic": True,
        "id_column": "patient_id",
        "modalities": files,
        "outcomes": "outcomes.csv",
        "truth": "truth.json",
    }
    write_json(os.path.join(out_dir, "dataset.json"), manifest)

    truth = _truth(fm, seed, t["names"], t["L"], CLIN_NODES)
    fid = {f["id"]: f["name"] for f in CLIN_FACTORS}
    node_of = {f["id"]: node_label(f["node"]) for f in CLIN_FACTORS}
    truth["outcomes"] = {
        "readmit_30d": {
            "type": "binary",
            "drivers": list(dict.fromkeys(node_of[f] for f in READMIT_COEF)),
            "factor_coefficients": {fid[f]: c for f, c in READMIT_COEF.items()},
            "model": "readmit_30d ~ Bernoulli(logistic(intercept + sum coef * factor score))",
            "intercept": t["b0"],
            "prevalence": round(float(t["readmit"].mean()), 4),
        },
        "length_of_stay_days": {
            "type": "continuous",
            "drivers": list(dict.fromkeys(node_of[f] for f in LOS_COEF)),
            "factor_coefficients": {fid[f]: c for f, c in LOS_COEF.items()},
            "model": f"log(LOS) = log({LOS_MEDIAN}) + sum coef * factor score + N(0, {LOS_NOISE_SD}^2)",
            "median": round(float(np.median(t["los"])), 2),
        },
    }
    truth["missingness"] = {
        "mechanism": "missing completely at random",
        "labs_absent_patients": int(CLIN_N - len(t["rows"]["labs"])),
        "notes_absent_patients": int(CLIN_N - len(t["rows"]["notes"])),
        "labs_blank_cells": int(np.isnan(t["X"]["labs"]).sum()),
    }
    truth["feature_transforms"] = {
        m: {name: {"kind": k, **{a: b for a, b in p.items() if a != "decimals"}}
            for name, k, p in zip(t["names"][m], t["kinds"][m], t["params"][m])}
        for m in ("diagnoses", "labs", "vitals")
    }
    write_json(os.path.join(out_dir, "truth.json"), truth)
    return truth


# ============================================================================ omics
OMICS_MODS = ["mrna", "methylation", "protein"]
OMICS_FACTORS = [
    {"id": "prolif", "name": "proliferation", "node": ("mrna", "methylation", "protein"),
     "description": "cell-cycle programme: proliferation genes up, their promoters hypomethylated, "
                    "phospho-proteins of growth signalling up"},
    {"id": "immune", "name": "immune infiltration", "node": ("mrna", "methylation", "protein"),
     "description": "immune cells in the sample: immune genes and proteins up, immune-cell-specific CpGs "
                    "hypomethylated"},
    {"id": "silencing", "name": "epigenetic silencing", "node": ("mrna", "methylation"),
     "description": "CpG-island hypermethylation silencing a set of genes (not visible at the protein "
                    "panel)"},
    {"id": "stroma", "name": "stromal content", "node": ("mrna",), "description": "stromal/ECM genes"},
    {"id": "libsize", "name": "library/batch effect", "node": ("mrna",), "description": "sequencing batch"},
    {"id": "array", "name": "array batch", "node": ("methylation",), "description": "methylation array batch"},
    {"id": "antibody", "name": "antibody lot", "node": ("protein",), "description": "protein assay lot effect"},
]
OMICS_NODES = {
    "mrna+methylation+protein": {"name": "tumour biology", "description": "Global node: proliferation and immune infiltration."},
    "mrna+methylation": {"name": "epigenetic silencing", "description": "Promoter hypermethylation silencing genes; "
                         "no protein on the panel reports it."},
    "mrna": {"name": "stroma and sequencing batch", "description": "Private to mRNA."},
    "methylation": {"name": "array batch", "description": "Private to methylation."},
    "protein": {"name": "antibody lot", "description": "Private to protein."},
}
OMICS_N = 200
OMICS_DIMS = {"mrna": 2000, "methylation": 400, "protein": 80}
# Share of each modality's features that load on each biological factor (every feature also loads on
# the modality's technical batch factor, OMICS_BATCH).
OMICS_SUPPORT = {
    "mrna": {"prolif": 0.08, "immune": 0.08, "silencing": 0.05, "stroma": 0.06},
    "methylation": {"prolif": 0.12, "immune": 0.12, "silencing": 0.25},
    "protein": {"prolif": 0.3, "immune": 0.3},
}
OMICS_BATCH = {"mrna": "libsize", "methylation": "array", "protein": "antibody"}
OMICS_TARGET = {"mrna": 0.45, "methylation": 0.45, "protein": 0.5}
METH_SLOPE = 0.25
METH_OFFSET_SD = 1.2
OMICS_RESPONSE_INTERCEPT = -0.4
OMICS_RESPONSE_COEF = {"immune": 1.2, "silencing": -0.8}


def _omics_tables(seed: int, n: int = OMICS_N) -> dict:
    rng = np.random.default_rng(seed)
    fm = FactorModel(OMICS_MODS, OMICS_FACTORS)
    K = len(OMICS_FACTORS)
    names = {
        "mrna": [f"GENE{j + 1:04d}" for j in range(OMICS_DIMS["mrna"])],
        "methylation": [f"cg{x:08d}" for x in np.sort(rng.choice(27_000_000, OMICS_DIMS["methylation"], replace=False))],
        "protein": [f"PROT{j + 1:03d}" for j in range(OMICS_DIMS["protein"])],
    }
    L, H, params, kinds = {}, {}, {}, {}
    for m in OMICS_MODS:
        d = OMICS_DIMS[m]
        W = np.zeros((d, K))
        for fid, share in OMICS_SUPPORT[m].items():
            sel = rng.choice(d, size=int(round(share * d)), replace=False)
            sign = 1.0 if fid in ("prolif", "immune") and m != "methylation" else rng.choice([-1.0, 1.0])
            W[sel, fm.fid[fid]] = sign * rng.uniform(0.6, 1.0, sel.size)
        # The technical (batch) factor touches every feature: weakly where a biological factor loads,
        # fully where none does.
        has = np.abs(W).sum(axis=1) > 0
        W[:, fm.fid[OMICS_BATCH[m]]] = np.where(has, rng.uniform(0.2, 0.5, d), 1.0)
        if m == "mrna":
            kinds[m] = ["gaussian"] * d
            params[m] = [{"mean": float(a), "sd": float(b), "decimals": 2, "min": 0.0}
                         for a, b in zip(rng.uniform(4.0, 12.0, d), rng.uniform(0.4, 1.6, d))]
        elif m == "methylation":
            kinds[m] = ["beta"] * d
            params[m] = [{"a": float(a), "b": METH_SLOPE, "decimals": 3} for a in rng.normal(0.0, METH_OFFSET_SD, d)]
        else:
            kinds[m] = ["gaussian"] * d
            params[m] = [{"mean": float(a), "sd": float(b), "decimals": 3}
                         for a, b in zip(rng.normal(0.0, 0.5, d), rng.uniform(0.3, 0.9, d))]
        L[m], H[m] = fm.loadings(W, kinds[m], params[m], OMICS_TARGET[m], "observed", rng, 0.0)

    ids = np.array([f"S{i + 1:0{max(3, len(str(n)))}d}" for i in range(n)])
    Z = rng.standard_normal((n, K))
    X = {}
    for m in OMICS_MODS:
        Y = _latent(Z, L[m], H[m], rng)
        X[m] = np.column_stack([_observe(Y[:, j], kinds[m][j], params[m][j]) for j in range(len(names[m]))])

    z = {f["id"]: Z[:, k] for k, f in enumerate(OMICS_FACTORS)}
    # Subtype: the dominant of the two global factors (or neither).
    score = np.column_stack([z["prolif"], z["immune"], np.full(n, 0.6)]) + 0.5 * rng.standard_normal((n, 3))
    levels = np.array(["proliferative", "immune_hot", "quiescent"])
    subtype = levels[np.argmax(score, axis=1)]
    eta = OMICS_RESPONSE_INTERCEPT + sum(c * z[f] for f, c in OMICS_RESPONSE_COEF.items())
    response = (rng.random(n) < _sigmoid(eta)).astype(float)
    return dict(fm=fm, ids=ids, names=names, kinds=kinds, params=params, L=L, H=H, Z=Z, X=X,
                subtype=subtype, levels=levels, response=response)


def make_omics(out_dir: str, seed: int = OMICS_SEED) -> dict:
    t = _omics_tables(seed)
    fm, ids, names, L = t["fm"], t["ids"], t["names"], t["L"]
    subtype, levels, response = t["subtype"], t["levels"], t["response"]
    resp_coef = OMICS_RESPONSE_COEF
    os.makedirs(out_dir, exist_ok=True)
    files = {"mrna": "mrna.csv", "methylation": "methylation.csv", "protein": "protein.csv"}
    for m in OMICS_MODS:
        cols = [(name, t["X"][m][:, j], t["params"][m][j]["decimals"]) for j, name in enumerate(names[m])]
        write_csv(os.path.join(out_dir, files[m]), ids, "sample_id", cols)
    write_csv(os.path.join(out_dir, "outcomes.csv"), ids, "sample_id", [("subtype", subtype, None), ("response", response, 0)])

    manifest = {
        "name": "Synthetic multi-omics cohort (omics)",
        "description": "SYNTHETIC multi-omics example: 200 made-up tumour samples with mRNA expression "
                       "(2,000 genes, log2 scale), CpG methylation beta values (400 probes) and a protein "
                       "panel (80 proteins), a 3-level subtype and a binary treatment response. Generated by "
                       "sample_data/make_sample_data.py from a known hierarchy (truth.json). No real data.",
        "synthetic": True,
        "id_column": "sample_id",
        "modalities": files,
        "outcomes": "outcomes.csv",
        "truth": "truth.json",
    }
    write_json(os.path.join(out_dir, "dataset.json"), manifest)
    truth = _truth(fm, seed, names, L, OMICS_NODES)
    fid = {f["id"]: f["name"] for f in OMICS_FACTORS}
    node_of = {f["id"]: node_label(f["node"]) for f in OMICS_FACTORS}
    truth["outcomes"] = {
        "subtype": {"type": "categorical", "levels": levels.tolist(), "drivers": [node_of["prolif"]],
                    "model": "argmax(proliferation, immune infiltration, 0.6) + N(0, 0.5^2) noise: "
                             "proliferative / immune_hot / quiescent",
                    "counts": {str(k): int(v) for k, v in zip(*np.unique(subtype, return_counts=True))}},
        "response": {"type": "binary", "drivers": list(dict.fromkeys(node_of[f] for f in resp_coef)),
                     "factor_coefficients": {fid[f]: c for f, c in resp_coef.items()},
                     "model": f"Bernoulli(logistic({OMICS_RESPONSE_INTERCEPT} + sum coef * factor score))",
                     "prevalence": round(float(response.mean()), 4)},
    }
    truth["feature_transforms"] = {
        "mrna": "log2 expression = mean + sd * y (per-gene mean 3-12, sd 0.4-1.6)",
        "methylation": f"beta = logistic(a + {METH_SLOPE} * y), a ~ N(0, {METH_OFFSET_SD}^2) per probe",
        "protein": "log-scale abundance = mean + sd * y",
    }
    write_json(os.path.join(out_dir, "truth.json"), truth)
    return truth


# ============================================================================ loading (for checks)
def load_frames(folder: str) -> tuple[dict[str, pd.DataFrame], dict, dict]:
    """Read a dataset folder: ({modality: DataFrame indexed by id, blank cells mean-imputed},
    manifest, truth)."""
    with open(os.path.join(folder, "dataset.json"), encoding="utf-8") as fh:
        man = json.load(fh)
    with open(os.path.join(folder, man["truth"]), encoding="utf-8") as fh:
        truth = json.load(fh)
    frames = {}
    for m, f in man["modalities"].items():
        df = pd.read_csv(os.path.join(folder, f), index_col=man["id_column"])
        frames[m] = df.fillna(df.mean())
    return frames, man, truth


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE, help="folder to write clinical/ and omics/ into (default: next to this script)")
    ap.add_argument("--clinical-seed", type=int, default=CLINICAL_SEED)
    ap.add_argument("--omics-seed", type=int, default=OMICS_SEED)
    ap.add_argument("--only", choices=["clinical", "omics"], default=None)
    a = ap.parse_args(argv)
    if a.only in (None, "clinical"):
        make_clinical(os.path.join(a.out, "clinical"), a.clinical_seed)
    if a.only in (None, "omics"):
        make_omics(os.path.join(a.out, "omics"), a.omics_seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
