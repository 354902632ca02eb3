"""Prediction speed: ``hx.evaluate_prediction`` on 20,000 samples x 7 nodes with 5-fold CV.

In one process, for a binary, a continuous and a 4-class outcome (every sample labelled, so the
group lasso sees 15,000 training rows; the 4-class outcome is the integer code 0-3 of a multinomial
draw, multi-class by the outcome rule of hcl_explore/outcomes.py):
  fit        : one HCL fit on the same data (the reference: what the representation costs)
  evaluate   : evaluate_prediction without baselines (representation refit + CV path + bootstrap)
  + baselines: evaluate_prediction with all four baselines
and prints each time and its ratio to the single fit, plus the selected nodes. The model passed is
unfitted (as before), so the refit searches the structure on the training part; pass a fitted one
to keep its structure (fixed ranks, loadings refitted: no structure search).

    PYTHONPATH=. python benchmarks/bench_predict.py [--n 20000] [--tasks binary,continuous,multiclass]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import hcl_explore as hx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--tasks", default="binary,continuous,multiclass")
    args = ap.parse_args()
    mods = ["a", "b", "c"]
    lat = hx.Lattice.full(mods)
    data, truth = hx.simulate(n=args.n, dims={m: args.d for m in mods}, ranks={nd: 2 for nd in lat.nodes}, noise=0.5, seed=0)
    rng = np.random.default_rng(1)
    drivers = [("a", "b"), ("c",)]
    parts = [truth.Z[d] @ rng.normal(size=2) for d in drivers]
    eta = sum(p / p.std() for p in parts)
    E = 1.5 * np.c_[parts[0] / parts[0].std(), parts[1] / parts[1].std()] @ rng.normal(size=(2, 4))
    P = np.exp(E - E.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    outcomes = {
        "binary": (rng.random(args.n) < 1 / (1 + np.exp(-(1.5 * eta - 1.5)))).astype(float),
        "continuous": eta + rng.normal(size=args.n),
        "multiclass": (P.cumsum(axis=1) < rng.random(args.n)[:, None]).sum(axis=1),
    }
    outcomes = {k: v for k, v in outcomes.items() if k in args.tasks.split(",")}
    t = time.perf_counter()
    hx.HCL().fit(data)
    t_fit = time.perf_counter() - t
    print(f"n = {args.n:,}, 3 modalities x {args.d} features, 7 nodes x rank 2; one HCL fit: {t_fit:.2f} s")
    for task, y in outcomes.items():
        t = time.perf_counter()
        rep = hx.evaluate_prediction(hx.HCL(), data, y, baselines=False, cv=5)
        t_eval = time.perf_counter() - t
        t = time.perf_counter()
        rep_b = hx.evaluate_prediction(hx.HCL(), data, y, baselines=True, cv=5)
        t_all = time.perf_counter() - t
        sel = sorted(hx.node_label(n) for n in rep.selected_nodes)
        key = {"binary": "auroc", "multiclass": "accuracy"}.get(rep.task, "r2")
        assert rep.task == task, (rep.task, task)
        print(f"{task:10s} evaluate {t_eval:5.2f} s ({t_eval / t_fit:4.1f}x fit; group lasso {rep.timings['group_lasso']:.2f} s)  "
              f"+ baselines {t_all:5.2f} s ({t_all / t_fit:4.1f}x fit)  selected {sel}  {key} {rep.metric(key):.3f}")
        print("           " + ", ".join(f"{m}: {v:.3f}" for m, v in zip(rep_b.baselines.model, rep_b.baselines[key])))
        print(f"           warnings: {rep.warnings or 'none'}")


if __name__ == "__main__":
    main()
