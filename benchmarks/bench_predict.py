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

``--real mfeat`` (issue 15): the 10-class digit outcome of the vendored mfeat data (2,000 samples,
6 views, benchmarks/data) through ``evaluate_prediction`` with a fitted model, as the app's
prediction run does (fixed structure, loadings refitted on the non-test samples). The fit is
saved to ``--model PATH`` and read from there on the next run (it takes minutes). Printed: the
time of every stage (wall and CPU seconds, with the load average), the group lasso's own time,
the accuracy and the selected nodes; ``--reference`` solves the multinomial paths with the plain
proximal gradient (every group, the global step, the whole path, BLAS threads as configured: the
solver before issue 15) for the before/after comparison.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import hcl_explore as hx


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def real(name: str, model_path: str, baselines: str, reference: bool) -> None:
    import os

    from benchmarks.real_data import load_real
    from hcl_explore import predict as P

    data, labels = load_real(name)
    y = labels["digit" if name == "mfeat" else sorted(labels)[0]]
    if model_path and os.path.exists(model_path):
        model = hx.HCL.load(model_path)
        print(f"{name}: model read from {model_path}")
    else:
        t, c = time.perf_counter(), time.process_time()
        model = hx.HCL().fit(data)
        print(f"{name}: HCL fit {time.perf_counter() - t:.1f} s ({time.process_time() - c:.1f} s CPU; load {_load()})")
        if model_path:
            model.save(model_path)
    R = sum(int(r) for r in model.ranks_.values())
    print(f"{name}: {data.n_samples:,} samples, {len(data.modalities)} views, {R} factors in "
          f"{sum(1 for r in model.ranks_.values() if r)} nodes; load average {_load()}")

    if reference:
        # Before issue 15: every group, the global Lipschitz step, the whole path, BLAS threads as set.
        P._MultiProblem.path = lambda self, lam, tol=1e-7, max_iter=5000: self.path_reference(lam, tol, max_iter)
        P._MultiProblem.path_iter = lambda self, lam, tol=1e-7, max_iter=5000: iter(
            self.path_reference(lam, tol, max_iter))
        P.CV_STOP_RISES = 10**9
    seen = {}
    fit_gl = P.fit_group_lasso

    def timed_gl(*a, **k):
        t, c = time.perf_counter(), time.process_time()
        out = (fit_gl.__wrapped__ if reference else fit_gl)(*a, **k)  # __wrapped__: no one-thread BLAS
        seen.setdefault("gl", []).append((time.perf_counter() - t, time.process_time() - c))
        return out

    P.fit_group_lasso = timed_gl
    steps = []
    t0, c0 = time.perf_counter(), time.process_time()
    evaluate = P.evaluate_prediction.__wrapped__ if reference else P.evaluate_prediction  # no one-thread BLAS
    rep = evaluate(model, data, y, baselines=[b for b in baselines.split(",") if b] or False,
                                 callback=lambda s, i: steps.append((s, i, time.perf_counter() - t0)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    P.fit_group_lasso = fit_gl
    print(f"{'reference (before)' if reference else 'fast (after)'} solver: evaluate_prediction {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU (load average after {_load()})")
    print("  stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in rep.timings.items()))
    print("  steps began at (s): " + ", ".join(f"{s_} {i.get('model', '')} {t_:.1f}".replace("  ", " ")
                                                for s_, i, t_ in steps))
    print("  group lasso fits (wall / CPU s): " + ", ".join(f"{w:.1f} / {c:.1f}" for w, c in seen.get("gl", [])))
    print(f"  accuracy {rep.metric('accuracy'):.3f}, macro-F1 {rep.metric('f1_macro'):.3f}, AUROC {rep.metric('auroc'):.3f}; "
          f"selected {sorted(hx.node_label(n) for n in rep.selected_nodes)}")
    if len(rep.baselines) > 1:
        print("  " + ", ".join(f"{m}: {v:.3f}" for m, v in zip(rep.baselines.model, rep.baselines["accuracy"])))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--tasks", default="binary,continuous,multiclass")
    ap.add_argument("--real", default="", help="a vendored real data set (mfeat): its labelled outcome, fitted model")
    ap.add_argument("--model", default="", help="--real: where the fitted model is saved / read")
    ap.add_argument("--baselines", default="raw,pca,shared_private,global_node", help="--real: comma list, '' = none")
    ap.add_argument("--reference", action="store_true", help="--real: the multinomial solver before issue 15")
    args = ap.parse_args()
    if args.real:
        real(args.real, args.model, args.baselines, args.reference)
        return
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
