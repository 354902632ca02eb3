"""Loading speed: ``hx.load_modalities`` against plain ``pandas.read_csv`` of the same CSV files.

Writes M modality files of n rows x d float columns (plus an id column; a few blank cells and
10 % of the samples absent from one file, so the loader has real work to do), then times in the
same process, alternating to even out the disk cache:
  baseline : pandas.read_csv of every file (defaults)
  loader   : hx.load_modalities of the same files (sniffing, checks, imputation, id alignment)
and prints the ratio (target <= 2).

    PYTHONPATH=. python benchmarks/bench_load.py              # 4 x 200,000 x 200 (about 1.4 GB of CSV)
    PYTHONPATH=. python benchmarks/bench_load.py --rows 20000 # a quick run
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time

import numpy as np
import pandas as pd

import hcl_explore as hx


def write_files(folder: str, m: int, n: int, d: int, seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    paths = {}
    for k in range(m):
        X = rng.normal(size=(n, d)).astype(np.float32)
        X[rng.random((n, d)) < 1e-4] = np.nan
        df = pd.DataFrame(X, columns=[f"m{k}_f{j:03d}" for j in range(d)])
        df.insert(0, "patient_id", [f"P{i:07d}" for i in range(n)])
        if k == m - 1:
            df = df.iloc[: int(0.9 * n)]
        p = os.path.join(folder, f"mod{k}.csv")
        df.to_csv(p, index=False, float_format="%.5g")
        paths[f"mod{k}"] = p
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modalities", type=int, default=4)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--cols", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dir", default=None, help="keep the files here (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="reuse the files already in --dir")
    args = ap.parse_args()
    folder = args.dir or tempfile.mkdtemp(prefix="bench_load_")
    os.makedirs(folder, exist_ok=True)
    t = time.perf_counter()
    existing = {f"mod{k}": os.path.join(folder, f"mod{k}.csv") for k in range(args.modalities)}
    if args.reuse and all(os.path.exists(p) for p in existing.values()):
        paths = existing
    else:
        paths = write_files(folder, args.modalities, args.rows, args.cols)
    size = sum(os.path.getsize(p) for p in paths.values())
    print(f"{args.modalities} files x {args.rows:,} rows x {args.cols} columns: {size / 2**20:.0f} MiB of CSV "
          f"(written in {time.perf_counter() - t:.1f} s)")
    base, load = [], []
    try:
        for _ in range(args.repeats):
            t = time.perf_counter()
            frames = [pd.read_csv(p) for p in paths.values()]
            base.append(time.perf_counter() - t)
            del frames
            t = time.perf_counter()
            data = hx.load_modalities(paths, id_column="patient_id")
            load.append(time.perf_counter() - t)
            n, obs = data.n_samples, data.observed.sum(axis=0).tolist()
            imputed = sum(r["cells_imputed"] for r in data.report["modalities"].values())
            del data
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    b, l_ = min(base), min(load)
    print(f"pandas.read_csv (all files): {b:.2f} s   (runs: {', '.join(f'{x:.2f}' for x in base)})")
    print(f"hx.load_modalities:          {l_:.2f} s   (runs: {', '.join(f'{x:.2f}' for x in load)})")
    print(f"ratio load_modalities / read_csv = {l_ / b:.2f}  (target <= 2)")
    print(f"samples {n:,}, observed per modality {obs}, cells imputed {imputed}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
