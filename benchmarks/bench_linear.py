"""Speed and memory of the linear HCL estimator.

1. d = 3 x 300, n = 50,000, full 7-node lattice, ranks="auto": total fit time as a ratio to one
   float32 ``X.T @ X`` over the same data in the same process (numpy and torch, the faster counts).
2. n = 500,000 streamed in chunks from a Parquet file: fit time and peak resident memory of the
   fitting process against the size of the data (float32 and float64).

Run: ``python benchmarks/bench_linear.py [--n 50000] [--big-n 500000] [--skip-big]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

RANKS = {"a": 3, "b": 3, "c": 3, "a+b": 3, "a+c": 2, "b+c": 4, "a+b+c": 3}


def _truth_ranks(hx):
    lat = hx.Lattice.full(["a", "b", "c"])
    return lat, {lat.node(k.split("+")): v for k, v in RANKS.items()}


def best_time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def speed(n: int) -> dict:
    import torch

    import hcl_explore as hx
    from hcl_explore import metrics

    lat, ranks = _truth_ranks(hx)
    data, truth = hx.simulate(n=n, dims=(300, 300, 300), ranks=ranks, noise=0.3, lattice=lat, seed=0)
    X32 = {m: data.X[m].astype(np.float32) for m in data.modalities}
    data32 = hx.MultimodalData.from_arrays(X32, feature_names=data.feature_names)
    Xall = np.ascontiguousarray(np.hstack([X32[m] for m in data.modalities]))
    Xt = torch.from_numpy(Xall)
    t_np = best_time(lambda: Xall.T @ Xall)
    t_torch = best_time(lambda: Xt.T @ Xt)
    floor = min(t_np, t_torch)
    hx.HCL(ranks="auto", device="cpu").fit(data32.subset(np.arange(2000)))  # warm-up (thread pools)
    fits = []
    for _ in range(3):
        t = time.perf_counter()
        model = hx.HCL(ranks="auto", device="cpu").fit(data32)
        fits.append(time.perf_counter() - t)
    t_fit = min(fits)
    rep = metrics.recovery_report(truth, model)
    return {
        "n": n,
        "D": Xall.shape[1],
        "XtX_numpy_s": round(t_np, 4),
        "XtX_torch_s": round(t_torch, 4),
        "fit_s": round(t_fit, 4),
        "fit_over_XtX": round(t_fit / floor, 2),
        "stages_s": {k: round(v, 4) for k, v in model.timings_.items()},
        "refine_evals": model.n_iter_,
        "ranks_exact": rep["rank_accuracy"] == 1.0,
        "mean_sin_theta": round(rep["mean_sin_theta"], 4),
    }


def _write_parquet(path: str, n: int, chunk: int = 50_000) -> dict[str, list[str]]:
    """Write n samples of one simulated model (loadings drawn once) in row groups of ``chunk``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import hcl_explore as hx

    lat, ranks = _truth_ranks(hx)
    _, truth = hx.simulate(n=2, dims=(300, 300, 300), ranks=ranks, noise=0.3, lattice=lat, seed=0)
    mods = truth.modalities
    cols = {m: [f"{m}_{k}" for k in range(truth.dims[m])] for m in mods}
    rng = np.random.default_rng(1)
    with pq.ParquetWriter(path, pa.schema([(c, pa.float32()) for m in mods for c in cols[m]])) as writer:
        for start in range(0, n, chunk):
            c = min(chunk, n - start)
            Z = {node: rng.standard_normal((c, truth.ranks[node])) for node in truth.nodes}
            arrays = []
            for m in mods:
                X = rng.standard_normal((c, truth.dims[m])) * np.sqrt(truth.noise_var[m])
                for node in truth.nodes:
                    if m in node:
                        X += Z[node] @ truth.loadings[(m, node)].T
                arrays += [pa.array(X[:, k].astype(np.float32)) for k in range(X.shape[1])]
            writer.write_table(pa.Table.from_arrays(arrays, names=[col for m in mods for col in cols[m]]))
    return cols


def big_child(path: str, cols_json: str) -> None:
    import hcl_explore as hx

    cols = json.loads(cols_json)
    src = hx.ParquetSource(path, cols, batch_size=32768)
    t = time.perf_counter()
    model = hx.HCL(ranks="auto", device="cpu").fit(src)
    el = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"fit_s": round(el, 2), "peak_rss_bytes": peak, "nodes": [hx.node_label(n) for n in model.nodes_]}))


def big(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.parquet")
        t = time.perf_counter()
        cols = _write_parquet(path, n)
        t_write = time.perf_counter() - t
        out = subprocess.run(
            [sys.executable, __file__, "--child", path, json.dumps(cols)], capture_output=True, text=True, check=True
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        file_size = os.path.getsize(path)
    D = 900
    res.update({
        "n": n,
        "write_s": round(t_write, 1),
        "parquet_file_bytes": file_size,
        "data_float32_bytes": n * D * 4,
        "data_float64_bytes": n * D * 8,
    })
    res["peak_over_float32_data"] = round(res["peak_rss_bytes"] / res["data_float32_bytes"], 3)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--big-n", type=int, default=500_000)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--child", nargs=2)
    a = ap.parse_args()
    if a.child:
        big_child(*a.child)
        return
    s = speed(a.n)
    print("speed:", json.dumps(s, indent=1))
    print(f"fit time / float32 X.T@X = {s['fit_over_XtX']}  (target <= 3)")
    if not a.skip_big:
        b = big(a.big_n)
        print("streamed parquet:", json.dumps(b, indent=1))
        print(f"peak RSS {b['peak_rss_bytes'] / 2**20:.0f} MiB vs data {b['data_float32_bytes'] / 2**20:.0f} MiB float32 "
              f"({b['peak_over_float32_data']:.2f}x)")


if __name__ == "__main__":
    main()
