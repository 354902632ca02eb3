#!/usr/bin/env python
"""Check that hcl_explore recovers the documented hierarchy of the synthetic datasets.

    python sample_data/check_recovery.py                   # the shipped files in sample_data/
    python sample_data/check_recovery.py --seeds 1 2 3 4 5 # regenerate the clinical cohort per seed (tmp dir)

Loads each dataset's modality CSVs aligned on the id column (absent rows = missing modality, blank
cells mean-imputed), fits ``HCL(lattice=full, ranks="auto", standardize=True)`` (and with
``balance_modalities`` on and off) and compares the found node ranks with truth.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_sample_data as msd  # noqa: E402


def fit_and_score(folder: str, balance: bool | None = None) -> list[dict]:
    import hcl_explore as hx
    from hcl_explore.lattice import parse_node_label

    frames, man, truth = msd.load_frames(folder)
    mods = list(man["modalities"])
    data = hx.MultimodalData.from_frames(frames, id_column=None)
    true_ranks = {parse_node_label(k): v for k, v in truth["ranks"].items()}
    out = []
    for bal in ([balance] if balance is not None else [True, False]):
        t0 = time.perf_counter()
        model = hx.HCL(lattice=hx.Lattice.full(mods), ranks="auto", standardize=True, balance_modalities=bal,
                       device="cpu").fit(data)
        found = {n: r for n, r in model.ranks_.items() if r > 0}
        sc = hx.metrics.structure_scores(true_ranks, model.ranks_)
        out.append({
            "balance_modalities": bal,
            "f1": sc["f1"],
            "ranks_exact": found == {n: r for n, r in true_ranks.items() if r > 0},
            "found": {hx.node_label(n): r for n, r in found.items()},
            "true": truth["ranks"],
            "seconds": round(time.perf_counter() - t0, 2),
        })
    return out


def _show(tag: str, rows: list[dict]) -> None:
    for r in rows:
        diff = {k: (r["true"].get(k, 0), v) for k, v in r["found"].items() if r["true"].get(k, 0) != v}
        diff.update({k: (v, 0) for k, v in r["true"].items() if k not in r["found"]})
        print(f"{tag} balance={r['balance_modalities']!s:5} F1={r['f1']:.3f} exact={r['ranks_exact']!s:5} "
              f"({r['seconds']}s) " + ("" if not diff else f"(true, found) differ at {diff}"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="clinical generator seeds to regenerate and check")
    ap.add_argument("--omics", action="store_true", help="also fit the omics dataset")
    a = ap.parse_args()
    if not a.seeds:
        _show("clinical (shipped)", fit_and_score(os.path.join(HERE, "clinical")))
        if a.omics:
            _show("omics (shipped)", fit_and_score(os.path.join(HERE, "omics")))
        return 0
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for s in a.seeds:
            folder = os.path.join(tmp, f"clinical_{s}")
            msd.make_clinical(folder, s)
            rows = fit_and_score(folder)
            ok &= all(r["f1"] == 1.0 for r in rows)
            _show(f"clinical seed={s}", rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
