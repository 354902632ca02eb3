"""Speed and memory of the linear HCL estimator.

1. d = 3 x 300, n = 50,000, full 7-node lattice, ranks="auto": total fit time as a ratio to one
   float32 ``X.T @ X`` over the same data in the same process (numpy and torch, the faster counts).
2. n = 500,000 streamed in chunks from a Parquet file: fit time and peak resident memory of the
   fitting process against the size of the data (float32 and float64).
3. The Parquet pass (issue 14): ``linear.covariance_stats`` over ``ParquetSource`` of an n x 300
   float64 file written as ``DataFrame.to_parquet`` writes it (one row group up to 2^20 rows), timed
   against ``pyarrow.parquet.read_table`` of the same file in the same process (page cache warm for
   both), and the pass's peak RSS against the file size and the largest row group (decoded, and as
   float32). Target: pass <= 2x read_table; peak RSS < one row group + 500 MiB.

4. ``--score``: bulk scoring of the pass file, streamed (``dask_source.score_parquet``, the CLI's
   ``score``): time, peak RSS, and the first rows' scores against ``transform`` in memory.
5. ``--dask-n N``: the statistics of N x 300 on a 2-worker ``distributed.LocalCluster`` against the
   in-process pass (time, max relative error).

Run: ``python benchmarks/bench_linear.py [--n 50000] [--big-n 500000] [--skip-big]
[--pass-n 200000 | --pass-n 1000000] [--pass-only] [--score] [--dask-n 200000]``
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


def _write_wide(path: str, n: int, d: int = 100, row_group: int | None = None, block: int = 100_000) -> dict[str, list[str]]:
    """n x 3d float64 with a low-rank structure, as ``DataFrame.to_parquet`` lays it out (pyarrow's
    default row groups of up to 2^20 rows unless ``row_group``), written in blocks of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    mods = ["a", "b", "c"]
    cols = {m: [f"{m}_{k}" for k in range(d)] for m in mods}
    names = [c for m in mods for c in cols[m]]
    rng = np.random.default_rng(0)
    L = rng.standard_normal((5, 3 * d))
    rg = row_group or (1 << 20)
    with pq.ParquetWriter(path, pa.schema([(c, pa.float64()) for c in names])) as writer:
        for start in range(0, n, rg):
            stop = min(n, start + rg)
            parts = []
            for s0 in range(start, stop, block):
                c = min(block, stop - s0)
                X = rng.standard_normal((c, 5)) @ L + rng.standard_normal((c, 3 * d))
                parts.append(pa.Table.from_arrays([pa.array(X[:, k]) for k in range(3 * d)], names=names))
            writer.write_table(pa.concat_tables(parts), row_group_size=rg)
    return cols


def _warm_page_cache(path: str) -> None:
    with open(path, "rb") as fh:
        while fh.read(64 << 20):
            pass


def _rss(field: str) -> int:
    """VmRSS / VmHWM of this process in bytes (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: clear_refs 5), so the peak is the pass's alone and
    not the imports' (torch's loading peaks above the pass at small n)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def pass_child(path: str, cols_json: str, repeat: int, score_rows: bool = False) -> None:
    import pyarrow.parquet as pq

    import hcl_explore as hx
    from hcl_explore import linear as L

    cols = json.loads(cols_json)
    _warm_page_cache(path)
    src = hx.ParquetSource(path, cols)
    L.covariance_stats(hx.MultimodalData.from_arrays({m: np.zeros((4, len(c))) + np.arange(4)[:, None]
                                                      for m, c in cols.items()}))  # thread pools up
    reset = _reset_peak()
    base = _rss("VmRSS")
    t_pass, t_read = [], []
    peak = None
    for _ in range(repeat):
        t = time.perf_counter()
        L.covariance_stats(src, folds=True)  # as HCL.fit runs it with ranks="auto"
        t_pass.append(time.perf_counter() - t)
        if peak is None:
            # before read_table's own peak
            peak = _rss("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t = time.perf_counter()
        table = pq.read_table(path)
        t_read.append(time.perf_counter() - t)
        del table
    md = pq.ParquetFile(path).metadata
    groups = [md.row_group(g) for g in range(md.num_row_groups)]
    print(json.dumps({"pass_s": round(min(t_pass), 2), "read_table_s": round(min(t_read), 2), "peak_rss_bytes": peak,
                      "rss_before_pass_bytes": base, "row_groups": md.num_row_groups,
                      "largest_row_group_decoded_bytes": max(g.total_byte_size for g in groups),
                      "largest_row_group_float32_bytes": max(g.num_rows for g in groups) * md.num_columns * 4}))


def _score(path: str, cols: dict) -> dict:
    """Bulk scoring of the whole file, streamed (the CLI's ``score``): time, peak RSS of the
    scoring alone, and the scores of the first rows against ``transform`` of them in memory."""
    import pandas as pd
    import pyarrow.parquet as pq

    import hcl_explore as hx
    from hcl_explore import dask_source as DS

    # A model with the file's column names, fitted on simulated rows: decoding the file before the
    # measurement would leave Arrow's freed pool pages in the baseline. Own process (--score-child).
    rng = np.random.default_rng(0)
    names = [c for m in cols for c in cols[m]]
    X = rng.standard_normal((20_000, 5)) @ rng.standard_normal((5, len(names))) + rng.standard_normal((20_000, len(names)))
    sl = np.cumsum([0] + [len(cols[m]) for m in cols])
    fit_data = hx.MultimodalData.from_arrays({m: X[:, sl[j]:sl[j + 1]] for j, m in enumerate(cols)}, feature_names=cols)
    model = hx.HCL(lattice="shared_private").fit(fit_data)
    out = path + ".scores.parquet"
    _warm_page_cache(path)
    reset = _reset_peak()
    base = _rss("VmRSS")
    t = time.perf_counter()
    n = DS.score_parquet(model, path, out)
    el = time.perf_counter() - t
    peak = _rss("VmHWM") if reset else None
    head = next(pq.ParquetFile(path).iter_batches(batch_size=20_000)).to_pandas()
    data = hx.MultimodalData.from_arrays({m: head[c].to_numpy() for m, c in cols.items()}, feature_names=cols)
    got = pd.read_parquet(out).iloc[: len(head)]
    Z = model.transform(data)
    ref = np.hstack([Z[nd] for nd in model.nodes_])
    err = float(np.abs(got.iloc[:, 1:].to_numpy() - ref).max())
    return {"rows": n, "seconds": round(el, 2), "rss_before_bytes": base, "peak_rss_bytes": peak, "score_columns": ref.shape[1],
            "max_abs_diff_vs_transform_first_20000": err, "out_bytes": os.path.getsize(out)}


def dask_vs_in_process(n: int, workers: int = 2, partitions: int = 8) -> dict:
    """Statistics of an n x 300 Parquet dataset (``partitions`` files) on a LocalCluster of
    ``workers`` processes (DaskSource.from_parquet) against the in-process ParquetSource pass:
    time and max relative error (folds on, as in fit)."""
    from distributed import Client, LocalCluster

    import hcl_explore as hx
    from hcl_explore import linear as L
    from hcl_explore.dask_source import DaskSource

    with tempfile.TemporaryDirectory() as tmp:
        # A partitioned dataset that the workers read themselves (the realistic case: in-memory
        # frames would be shipped inside the task graph).
        cols = {}
        for i, s0 in enumerate(range(0, n, -(-n // partitions))):
            c = _write_wide(os.path.join(tmp, f"part.{i:03d}.parquet"), min(-(-n // partitions), n - s0))
            cols = c
        src_local = hx.ParquetSource(tmp, cols)
        L.covariance_stats(src_local, chunk_size=4096)  # page cache and thread pools warm
        t = time.perf_counter()
        ref = L.covariance_stats(src_local, folds=True)
        t_in = time.perf_counter() - t
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cl, Client(cl):
            src = DaskSource.from_parquet(tmp, cols)
            src.covariance_stats(chunk_size=4096)  # workers warm (imports)
            t = time.perf_counter()
            ours = src.covariance_stats(folds=True)
            t_dask = time.perf_counter() - t
    rel = float(np.abs(ours.cov - ref.cov).max() / np.abs(ref.cov).max())
    rel_f = max(float(np.abs(a.cov - b.cov).max() / np.abs(b.cov).max()) for a, b in zip(ours.folds, ref.folds))
    return {"n": n, "D": 300, "partitions": partitions, "workers": workers, "in_process_s": round(t_in, 2),
            "dask_s": round(t_dask, 2), "max_rel_err_cov": rel, "max_rel_err_fold_cov": rel_f,
            "counts_equal": bool((ours.counts == ref.counts).all())}


def parquet_pass(n: int, repeat: int = 1, row_group: int | None = None, score: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "wide.parquet")
        cols = _write_wide(path, n, row_group=row_group)
        out = subprocess.run([sys.executable, __file__, "--pass-child", path, json.dumps(cols), str(repeat), str(int(score))],
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"the pass child failed:\n{out.stderr[-3000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res["file_bytes"] = os.path.getsize(path)
        if score:
            out = subprocess.run([sys.executable, __file__, "--score-child", path, json.dumps(cols)],
                                 capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"the scoring child failed:\n{out.stderr[-3000:]}")
            res["score"] = json.loads(out.stdout.strip().splitlines()[-1])
    res["n"] = n
    res["pass_over_read_table"] = round(res["pass_s"] / res["read_table_s"], 2)
    res["peak_over_file"] = round(res["peak_rss_bytes"] / res["file_bytes"], 3)
    res["peak_minus_row_group_mib"] = round((res["peak_rss_bytes"] - res["largest_row_group_decoded_bytes"]) / 2**20)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--big-n", type=int, default=500_000)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--child", nargs=2)
    ap.add_argument("--pass-n", type=int, default=200_000, help="rows of the Parquet-pass file (the issue: 1000000)")
    ap.add_argument("--pass-repeat", type=int, default=1)
    ap.add_argument("--pass-row-group", type=int, default=None, help="rows per row group (default: pyarrow's, 2^20)")
    ap.add_argument("--pass-only", action="store_true", help="only the Parquet pass")
    ap.add_argument("--pass-child", nargs=4)
    ap.add_argument("--score-child", nargs=2)
    ap.add_argument("--score", action="store_true", help="also bulk-score the pass file, streamed (CLI score)")
    ap.add_argument("--dask-n", type=int, default=0, help="statistics on a 2-worker LocalCluster vs in process (rows)")
    a = ap.parse_args()
    if a.child:
        big_child(*a.child)
        return
    if a.pass_child:
        pass_child(a.pass_child[0], a.pass_child[1], int(a.pass_child[2]), bool(int(a.pass_child[3])))
        return
    if a.score_child:
        print(json.dumps(_score(a.score_child[0], json.loads(a.score_child[1]))))
        return
    if a.dask_n:
        print("dask vs in-process:", json.dumps(dask_vs_in_process(a.dask_n), indent=1))
    if a.pass_n:
        p = parquet_pass(a.pass_n, a.pass_repeat, a.pass_row_group, a.score)
        print("parquet pass:", json.dumps(p, indent=1))
        print(f"pass {p['pass_s']:.2f}s vs read_table {p['read_table_s']:.2f}s = {p['pass_over_read_table']:.2f}x (target <= 2); "
              f"peak RSS {p['peak_rss_bytes'] / 2**20:.0f} MiB vs file {p['file_bytes'] / 2**20:.0f} MiB "
              f"({p['peak_over_file']:.2f}x), largest row group {p['largest_row_group_decoded_bytes'] / 2**20:.0f} MiB "
              f"decoded / {p['largest_row_group_float32_bytes'] / 2**20:.0f} MiB float32 (target: peak < row group + 500 MiB)")
        if "score" in p:
            sc = p["score"]
            print(f"scoring {sc['rows']} rows streamed: {sc['seconds']:.1f}s, peak RSS {sc['peak_rss_bytes'] / 2**20:.0f} MiB "
                  f"({(sc['peak_rss_bytes'] - sc['rss_before_bytes']) / 2**20:.0f} MiB above the process before it); "
                  f"first 20000 rows vs transform in memory: max abs diff {sc['max_abs_diff_vs_transform_first_20000']:.2g}")
    if a.pass_only:
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
