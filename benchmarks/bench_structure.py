"""Benchmark of the structure search (``HCL(ranks="auto")``, linear estimator).

A. Simulated grid (``hx.simulate``): M = 3..8 modalities (M = 8 over the full 255-node lattice),
   ranks 1..8 per node, nested and overlapping nodes (global, a triple, overlapping pairs,
   privates), noise variance 0.5..1, 20 % of samples missing one modality. The loading scale of
   each case puts every factor at least 2x above the detection limit in every modality it loads
   on: the smallest squared singular value s^2 of the true loadings of modality m (all its nodes'
   columns together) obeys s^2 / sigma_m^2 >= 2 sqrt(d_m / n_m) (n_m = samples observing m); the
   script starts at 3x the limit for a typical column (a^2 ~ loading_scale^2) and raises the
   scale by 15 % steps until the drawn loadings pass, and prints the worst margin. Plus the "issue-2 speed setting": n = 50,000, 3 x 300 features, rank 5 on all
   7 nodes, noise 1. Per case: true vs found ranks where they differ, whether the structure is
   exact (node F1 = 1 and every rank exact), fit time, and fit time / max(0.1 s, one float32
   X.T @ X over the same data: modalities stacked, missing rows zero-filled; best of 3, numpy or
   torch, the faster) measured in the same process.
B. Real data (``benchmarks/data``, see ``real_data.py``): full lattice, ranks="auto", default
   ``standardize``: nodes and ranks found, total factors, fit time; ``model.stability`` and
   ``model.score`` (held-out log-likelihood, drop-one-factor check) when the library has them;
   a few-label classification check: multinomial logistic regression on 10 labelled samples per
   class (seeded) using the HCL scores vs PCA scores of the same total size.

Timings are wall-clock on whatever else the machine is running: on a shared machine use
``--repeat 2`` or more (the fastest fit of each case is timed).

Run: ``python benchmarks/bench_structure.py [--quick] [--seeds 0 1] [--threads 2] [--repeat 2]
[--skip-sim] [--skip-real] [--datasets mfeat]``
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer / smaller cases (a few minutes)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="simulation seeds (default 0..4; quick: 0 1)")
    p.add_argument("--threads", type=int, default=None, help="BLAS / torch threads (default: library default)")
    p.add_argument("--repeat", type=int, default=1, help="fits per simulated case; the fastest is timed (default 1)")
    p.add_argument("--skip-sim", action="store_true")
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--datasets", nargs="+", default=None, help="real data sets (default all)")
    p.add_argument("--resamples", type=int, default=None, help="stability resamples (default 20; quick: 5)")
    p.add_argument("--real-max-iter", type=int, default=None,
                   help="cap on the refinement iterations of the real-data fits (default: library default; quick: 100). "
                        "The ranks are chosen before the refinement, so the cap does not change them")
    p.add_argument("--max-drop", type=int, default=None, help="factors tried in the drop-one check (default all; quick: 30)")
    return p.parse_args(argv)


ARGS = _args() if __name__ == "__main__" else _args([])
if ARGS.threads:
    for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_v] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hcl_explore as hx  # noqa: E402
from hcl_explore import metrics, node_label  # noqa: E402

if ARGS.threads:
    torch.set_num_threads(ARGS.threads)


# ====================================================================== simulated grid
def _case(name, n, dims, ranks, noise, missing=0.2, loading_scale=None):
    """``ranks`` keys are 1-based modality index tuples; modalities are named a, b, c, ..."""
    mods = [chr(ord("a") + i) for i in range(len(dims))]
    r = {tuple(mods[i - 1] for i in key): v for key, v in ranks.items()}
    return dict(name=name, n=n, dims=list(dims), mods=mods, ranks=r, noise=noise, missing=missing,
                loading_scale=loading_scale)


def grid(quick: bool) -> list[dict]:
    cases = [
        _case("M3 nested", 3000, (30, 40, 50), {(1, 2, 3): 2, (1, 2): 1, (2, 3): 2, (1,): 1, (2,): 2, (3,): 3},
              noise=(0.5, 0.75, 1.0)),
        _case("M4 triple+pairs", 3000, (40, 40, 60, 60),
              {(1, 2, 3, 4): 3, (1, 2, 3): 2, (3, 4): 1, (2, 4): 2, (1,): 2, (4,): 1}, noise=0.5),
        _case("M5 overlap", 4000, (40, 50, 60, 50, 40),
              {(1, 2, 3, 4, 5): 4, (1, 2, 3): 2, (4, 5): 3, (2, 5): 1, (1,): 1, (3,): 2, (5,): 1},
              noise=(0.5, 0.6, 0.7, 0.8, 1.0)),
        _case("M6 ranks-8", 5000, (80, 60, 60, 80, 60, 60),
              {(1, 2, 3, 4, 5, 6): 8, (1, 2, 3): 3, (4, 5): 2, (2, 5): 1, (1,): 4, (6,): 2, (4,): 1},
              noise=0.8),
        _case("M7 overlap", 6000, (50,) * 7,
              {tuple(range(1, 8)): 2, (1, 2, 3): 2, (4, 5): 3, (2, 5): 1, (5, 6, 7): 1, (1,): 2, (7,): 1},
              noise=(0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0)),
        _case("M8 full-255", 4000 if quick else 8000, (40,) * 8,
              {tuple(range(1, 9)): 3, (1, 2, 3): 2, (4, 5): 2, (2, 5): 1, (6, 7, 8): 1, (1,): 1, (8,): 2},
              noise=0.7),
        _case("issue-2 speed", 50_000, (300, 300, 300), {k: 5 for k in
              [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]}, noise=1.0, missing=0.0, loading_scale=1.0),
    ]
    return cases


def _noise_of(c) -> dict[str, float]:
    nz = c["noise"]
    return {m: float(nz if np.ndim(nz) == 0 else nz[j]) for j, m in enumerate(c["mods"])}


def spike_margin(truth, data) -> float:
    """Worst factor's distance above the detection limit, in multiples of it: the minimum over
    modalities m of s_min(B_m)^2 / sigma_m^2 / sqrt(d_m / n_m), where B_m (d_m x sum of ranks)
    stacks the true loadings of every node holding m and n_m counts the samples observing m.
    (Stricter than per node block: factors of different nodes are not orthogonal in a modality.)"""
    worst = np.inf
    for j, m in enumerate(data.modalities):
        blocks = [B for (mm, _), B in truth.loadings.items() if mm == m and B.shape[1] > 0]
        if not blocks:
            continue
        n_m = int(data.observed[:, j].sum())
        lim = np.sqrt(truth.dims[m] / n_m)
        s = np.linalg.svd(np.hstack(blocks), compute_uv=False)
        worst = min(worst, float(s.min() ** 2 / truth.noise_var[m] / lim))
    return worst


def simulate_case(c, seed: int):
    """Simulate; raise the loading scale until every block is >= 2x the detection limit."""
    nv = _noise_of(c)
    lat = hx.Lattice.full(c["mods"])  # every case searches the full lattice (2^M - 1 nodes)
    if c["loading_scale"] is not None:
        scale = float(c["loading_scale"])
    else:
        n_eff = c["n"] * (1 - c["missing"])
        scale = max(np.sqrt(3 * np.sqrt(d / n_eff) * nv[m]) for m, d in zip(c["mods"], c["dims"]))
    for _ in range(12):
        data, truth = hx.simulate(n=c["n"], dims=dict(zip(c["mods"], c["dims"])), ranks=c["ranks"], noise=nv,
                                  missing=c["missing"], lattice=lat, loading_scale=scale, seed=seed)
        margin = spike_margin(truth, data)
        if margin >= 2.0 or c["loading_scale"] is not None:
            return data, truth, scale, margin, lat
        scale *= 1.15
    return data, truth, scale, margin, lat


def best_time(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return float(best)


def xtx_time(data) -> float:
    Xall = np.hstack([np.nan_to_num(data.X[m].astype(np.float32), nan=0.0) for m in data.modalities])
    Xall = np.ascontiguousarray(Xall)
    Xt = torch.from_numpy(Xall)
    t = min(best_time(lambda: Xall.T @ Xall), best_time(lambda: Xt.T @ Xt))
    del Xall, Xt
    return t


def _fmt_ranks(r: dict) -> str:
    return ", ".join(f"{node_label(n)}:{v}" for n, v in sorted(r.items(), key=lambda kv: (-len(kv[0]), kv[0])) if v)


def run_grid(quick: bool, seeds: list[int], repeat: int = 1) -> None:
    print("=" * 100)
    print("A. Simulated grid: ranks='auto' over the full lattice, device=cpu, float32 data")
    print("=" * 100)
    # warm-up (thread pools, torch kernels) so that the first case's time is not inflated
    d0, _ = hx.simulate(n=500, dims=(10, 10, 10), ranks=1, seed=0)
    hx.HCL(ranks="auto", device="cpu").fit(d0)
    rows = []
    for c in grid(quick):
        for seed in seeds:
            data, truth, scale, margin, lat = simulate_case(c, seed)
            data = hx.MultimodalData.from_arrays({m: data.X[m].astype(np.float32) for m in data.modalities},
                                                 feature_names=data.feature_names)
            t_xtx = xtx_time(data)
            t_fit = np.inf
            try:
                for _ in range(max(1, repeat)):
                    t = time.perf_counter()
                    model = hx.HCL(lattice=lat, ranks="auto", device="cpu").fit(data)
                    t_fit = min(t_fit, time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001  a library error is a result, not the end of the run
                print(f"\n[{c['name']} seed={seed}] FIT FAILED: {type(e).__name__}: {e}")
                rows.append((c["name"], seed, False, np.nan))
                continue
            true_r = {n: truth.ranks.get(n, 0) for n in lat.nodes}
            est_r = {n: model.ranks_.get(n, 0) for n in lat.nodes}
            f1 = metrics.structure_scores(true_r, est_r)["f1"]
            acc = metrics.rank_accuracy(true_r, est_r, nodes=lat.nodes)
            exact = f1 == 1.0 and acc == 1.0
            ratio = t_fit / max(0.1, t_xtx)
            rows.append((c["name"], seed, exact, ratio))
            print(f"\n[{c['name']} seed={seed}] n={c['n']:,} dims={c['dims']} nodes={len(lat.nodes)} "
                  f"missing={c['missing']} loading_scale={scale:.3f} worst spike margin={margin:.2f}x limit")
            print(f"  true : {_fmt_ranks(true_r)}")
            diff = {n: (true_r[n], est_r[n]) for n in lat.nodes if true_r[n] != est_r[n]}
            if diff:
                print("  differ (node: true -> found): " + ", ".join(
                    f"{node_label(n)}: {a}->{b}" for n, (a, b) in sorted(diff.items(), key=lambda kv: (-len(kv[0]), kv[0]))))
            stages = ", ".join(f"{k} {v:.2f}" for k, v in getattr(model, "timings_", {}).items() if k != "total")
            print(f"  exact={exact} (F1={f1:.3f}, rank accuracy={acc:.3f})  fit {t_fit:.2f} s [{stages}]  "
                  f"XtX {t_xtx:.3f} s  ratio {ratio:.1f}")
    k = sum(r[2] for r in rows)
    timed = [r for r in rows if np.isfinite(r[3])]
    worst = max(timed, key=lambda r: r[3]) if timed else ("-", "-", False, np.nan)
    failed = len(rows) - len(timed)
    print(f"\nSUMMARY simulated: structure exact {k}/{len(rows)} cases; max fit/XtX ratio {worst[3]:.1f} "
          f"({worst[0]} seed={worst[1]})" + (f"; {failed} fit(s) FAILED" if failed else ""))
    not_exact = [f"{r[0]} s{r[1]}" for r in rows if not r[2]]
    if not_exact:
        print("  not exact: " + "; ".join(not_exact))


# ====================================================================== real data
def logistic_fit_predict(Ftr, ytr, Fte, lam: float = 1.0, iters: int = 200) -> np.ndarray:
    """Multinomial logistic regression with intercept, L2 penalty 0.5*lam*||W||^2 (sklearn's
    default C=1), features centred on the training rows but not rescaled (so the penalty sees each
    score set in its own units); torch L-BFGS. Returns the predicted labels of ``Fte``."""
    mu = Ftr.mean(0)
    A = torch.tensor(Ftr - mu, dtype=torch.float64)
    B = torch.tensor(Fte - mu, dtype=torch.float64)
    classes, yi = np.unique(ytr, return_inverse=True)
    y = torch.tensor(yi)
    W = torch.zeros(A.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=iters, line_search_fn="strong_wolfe", tolerance_grad=1e-9)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(A @ W + b, y, reduction="sum") + 0.5 * lam * (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return classes[(B @ W + b).argmax(1).numpy()]


def labelled_split(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Boolean mask of labelled rows: ``per_class`` per class (at most half of a small class)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = min(per_class, len(idx) // 2)
        lab[rng.choice(idx, size=k, replace=False)] = True
    return lab


def pca_scores(data, k: int) -> np.ndarray:
    X = np.hstack([np.asarray(data.X[m], dtype=np.float64) for m in data.modalities])
    X = X - np.nanmean(X, 0)
    sd = np.nanstd(X, 0)
    X = np.nan_to_num(X / np.where(sd > 1e-12, sd, 1.0))
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    k = min(k, len(s))
    return U[:, :k] * s[:k]


def _drop_column(model, j: int):
    """A copy of a fitted linear model without column j of W_ (ranks_/nodes_ kept consistent)."""
    nodes_of_col = model.column_nodes()
    node = nodes_of_col[j]
    m2 = copy.deepcopy(model)
    m2.W_ = np.delete(np.asarray(model.W_), j, axis=1)
    m2.ranks_ = dict(model.ranks_)
    m2.ranks_[node] -= 1
    if m2.ranks_[node] == 0:
        m2.nodes_ = [n for n in model.nodes_ if n != node]
    return m2, node


def run_real(names: list[str], quick: bool, resamples: int, max_drop: int | None, max_iter: int | None) -> None:
    from real_data import REAL_DATASETS_INFO, load_real

    print("\n" + "=" * 100)
    print("B. Real data: full lattice, ranks='auto', standardize default, device=cpu")
    print("=" * 100)
    for name in names:
        data, labels = load_real(name)
        print(f"\n--- {name}: {REAL_DATASETS_INFO[name]}")
        print(f"    n={data.n_samples}, views {data.dims}")
        lat = hx.Lattice.full(data.modalities)
        kw = {} if max_iter is None else {"max_iter": max_iter}
        t = time.perf_counter()
        try:
            model = hx.HCL(lattice=lat, ranks="auto", device="cpu", **kw).fit(data)
        except Exception as e:  # noqa: BLE001
            print(f"  FIT FAILED: {type(e).__name__}: {e}")
            continue
        t_fit = time.perf_counter() - t
        found = {n: model.ranks_[n] for n in model.nodes_}
        n_shared = sum(v for n, v in found.items() if len(n) > 1)
        print(f"  fit {t_fit:.2f} s (lattice {len(lat.nodes)} nodes; standardized={getattr(model, 'standardized_', '?')}); "
              f"{len(found)} nodes, {sum(found.values())} factors ({n_shared} in shared nodes)")
        print(f"  found: {_fmt_ranks(found)}")
        stages = ", ".join(f"{k} {v:.2f}" for k, v in getattr(model, "timings_", {}).items() if k != "total")
        print(f"  stages [{stages}]; refine {getattr(model, 'n_iter_', '?')} iterations, "
              f"converged={getattr(model, 'converged_', '?')}" + ("" if max_iter is None else f" (cap {max_iter})"))
        nv = getattr(model, "noise_var_", None)
        if isinstance(nv, dict):
            print("  mean noise variance per modality (fitted units): "
                  + ", ".join(f"{m} {float(np.mean(v)):.3g}" for m, v in nv.items()))
        sig = getattr(model, "signal_rank_", None)
        if sig is not None:
            print(f"  per-modality signal rank (noise step): {sig}")

        # -- stability
        if hasattr(model, "stability"):
            try:
                t = time.perf_counter()
                st = model.stability(data, n_resamples=resamples, random_state=0)
                print(f"  stability ({resamples} resamples, {time.perf_counter() - t:.1f} s):")
                print("    " + st.to_string(max_rows=40).replace("\n", "\n    "))
            except Exception as e:  # noqa: BLE001
                print(f"  stability: failed ({type(e).__name__}: {e})")
        else:
            print("  stability: not in this library version (skipped)")

        # -- held-out score and drop-one-factor check
        if hasattr(model, "score"):
            try:
                rng = np.random.default_rng(0)
                perm = rng.permutation(data.n_samples)
                k = int(round(0.8 * data.n_samples))
                tr, te = data.subset(np.sort(perm[:k])), data.subset(np.sort(perm[k:]))
                m_tr = hx.HCL(lattice=lat, ranks="auto", device="cpu", **kw).fit(tr)
                s_tr, s_te = m_tr.score(tr), m_tr.score(te)
                R = int(np.asarray(m_tr.W_).shape[1])
                print(f"  score (mean log-lik / sample): train {s_tr:.3f}, held-out {s_te:.3f} "
                      f"({R} factors from the 80 % fit: {_fmt_ranks({n: m_tr.ranks_[n] for n in m_tr.nodes_})})")
                cols = list(range(R)) if max_drop is None else list(range(min(R, max_drop)))
                rises = []
                for j in cols:
                    m2, node = _drop_column(m_tr, j)
                    d = float(m2.score(te)) - s_te
                    if d > 0:
                        rises.append((node_label(node), j, d))
                print(f"  drop-one-factor: held-out score rises for {len(rises)}/{len(cols)} factors"
                      + (f" (of {R})" if len(cols) < R else "")
                      + ("" if not rises else ": " + ", ".join(f"{nd}[{j}] +{d:.3f}" for nd, j, d in rises[:15])
                         + (" ..." if len(rises) > 15 else "")))
            except Exception as e:  # noqa: BLE001
                print(f"  score / drop-one check: skipped ({type(e).__name__}: {e})")
        else:
            print("  score: not in this library version (held-out and drop-one checks skipped)")

        # -- few-label classification: HCL scores vs PCA scores of the same size
        try:
            classify(model, data, labels, quick)
        except Exception as e:  # noqa: BLE001
            print(f"  classification: failed ({type(e).__name__}: {e})")


def classify(model, data, labels: dict, quick: bool) -> None:
    """Accuracy on the unlabelled rows of a logistic regression trained on 10 labelled rows per
    class, for: all HCL scores (k columns) vs the first k PCA scores (raw, and whitened "PCA-w");
    and HCL scores of the shared nodes only (k_s columns) vs the first k_s PCA scores."""
    Z = model.transform(data)
    F = np.concatenate([Z[n] for n in model.nodes_], axis=1) if Z else np.zeros((data.n_samples, 0))
    shared = [n for n in model.nodes_ if len(n) > 1]
    Fs = np.concatenate([Z[n] for n in shared], axis=1) if shared else np.zeros((data.n_samples, 0))
    k, ks = F.shape[1], Fs.shape[1]
    P = pca_scores(data, max(k, 1))
    Pw = P / np.where(P.std(0) > 1e-12, P.std(0), 1.0)
    sets = {f"HCL[{k}]": F, f"PCA[{P.shape[1]}]": P, f"PCA-w[{P.shape[1]}]": Pw}
    if 0 < ks < k:
        sets.update({f"HCL-shared[{ks}]": Fs, f"PCA[{ks}]": P[:, :ks]})
    seeds = [0] if quick else [0, 1, 2, 3, 4]
    for lname, y in labels.items():
        accs: dict[str, list[float]] = {key: [] for key, v in sets.items() if v.shape[1] > 0}
        for s in seeds:
            lab = labelled_split(y, 10, s)
            for key in accs:
                pred = logistic_fit_predict(sets[key][lab], y[lab], sets[key][~lab])
                accs[key].append(float(np.mean(pred == y[~lab])))
        majority = float(np.max(np.unique(y[~lab], return_counts=True)[1]) / (~lab).sum())
        txt = ", ".join(f"{key} {np.mean(v):.3f}" for key, v in accs.items())
        print(f"  classify {lname!r} ({len(np.unique(y))} classes, {int(lab.sum())} labelled, {len(seeds)} split(s); "
              f"majority {majority:.3f}): {txt}")


def main() -> None:
    a = ARGS
    seeds = a.seeds if a.seeds is not None else ([0, 1] if a.quick else [0, 1, 2, 3, 4])
    resamples = a.resamples if a.resamples is not None else (5 if a.quick else 20)
    max_drop = a.max_drop if a.max_drop is not None else (30 if a.quick else None)
    max_iter = a.real_max_iter if a.real_max_iter is not None else (100 if a.quick else None)
    from real_data import REAL_DATASETS

    names = a.datasets or REAL_DATASETS
    print(f"hcl_explore {hx.__version__}; numpy {np.__version__}; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); quick={a.quick}; seeds={seeds}")
    t0 = time.perf_counter()
    if not a.skip_sim:
        run_grid(a.quick, seeds, a.repeat)
    if not a.skip_real:
        run_real(names, a.quick, resamples, max_drop, max_iter)
    print(f"\nTotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
