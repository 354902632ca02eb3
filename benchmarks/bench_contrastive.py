"""Training speed and memory of the contrastive estimator on the CPU (or --device cuda).

Prints samples/second of ``HCL(estimator="contrastive")`` training (epochs on n samples of 3
nonlinear modalities x 200 features, full lattice, 2 factors per node), the peak resident memory of
the process, and the ratio to a plain MLP autoencoder of the same size (one encoder per modality
with the same total hidden width and output width, one decoder per modality, MSE), trained in the
same process with the same batch size and optimizer.

    .venv/bin/python benchmarks/bench_contrastive.py             # n = 100,000
    .venv/bin/python benchmarks/bench_contrastive.py --n 20000 --epochs 1
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import threading
import time

import numpy as np
import torch
from torch import nn

import hcl_explore as hx


def peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def rss_mb() -> float:
    """Current resident memory of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


class RssPeak:
    """Highest resident memory seen (sampled every 20 ms) while the block runs: the process peak
    (ru_maxrss) is set by the simulation, so the fit's own peak is measured this way."""

    def __enter__(self) -> "RssPeak":
        self.start = rss_mb()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def autoencoder_rate(X: dict[str, np.ndarray], widths: dict[str, tuple[int, int]], epochs: int, batch_size: int,
                     device: torch.device) -> float:
    """samples/second of a plain per-modality MLP autoencoder (d -> hidden -> code -> hidden -> d)."""
    torch.manual_seed(0)
    nets = nn.ModuleDict({m: nn.Sequential(nn.Linear(x.shape[1], widths[m][0]), nn.ReLU(),
                                           nn.Linear(widths[m][0], widths[m][1]), nn.Linear(widths[m][1], widths[m][0]),
                                           nn.ReLU(), nn.Linear(widths[m][0], x.shape[1])) for m, x in X.items()}).to(device)
    opt = torch.optim.Adam(nets.parameters(), lr=1e-3)
    n = next(iter(X.values())).shape[0]
    t0 = time.perf_counter()
    for e in range(epochs):
        perm = np.random.default_rng(e).permutation(n)
        for s in range(0, n - batch_size + 1, batch_size):
            idx = perm[s:s + batch_size]
            loss = 0.0
            for m, x in X.items():
                xb = torch.from_numpy(x[idx]).to(device)
                loss = loss + ((nets[m](xb) - xb) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return epochs * n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=200, help="features per modality")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    t = time.perf_counter()
    data, _ = hx.simulate(n=a.n, dims=(a.d, a.d, a.d), ranks=2, noise=0.3, seed=0, link="nonlinear")
    print(f"simulated n={a.n:,} x 3 x {a.d} in {time.perf_counter() - t:.1f}s; peak RSS {peak_rss_mb():,.0f} MB")
    model = hx.HCL(ranks=2, estimator="contrastive", hidden=(a.hidden,), max_epochs=a.epochs, batch_size=a.batch_size,
                   val_fraction=0.0, patience=a.epochs + 1, device=a.device)
    gc.collect()
    t = time.perf_counter()
    with RssPeak() as mem:
        model.fit(data)
    train = model.timings_["train"]
    rate = a.epochs * a.n / train
    print(f"contrastive: {a.epochs} epoch(s) in {train:.1f}s = {rate:,.0f} samples/s "
          f"(fit total {time.perf_counter() - t:.1f}s; {sum(p.numel() for p in model.module_.parameters()):,} parameters)")
    data_mb = sum(x.nbytes for x in data.X.values()) / 2**20
    print(f"memory: data {data_mb:,.0f} MB (float64); RSS {mem.start:,.0f} MB before the fit, peak {mem.peak:,.0f} MB "
          f"during it (+{mem.peak - mem.start:,.0f} MB: float32 standardized copy, network, summary pass)")
    if a.device.startswith("cuda"):
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:,.0f} MB")
    # Same size: per modality the contrastive encoders have (#nodes of m) x hidden hidden units and R_m outputs.
    widths = {m: (a.hidden * len(model.module_.blocks[m]), model.module_.blocks[m][-1][2]) for m in data.modalities}
    X = {m: model._standardized(data.X, data.observed)[m] for m in data.modalities}
    ae = autoencoder_rate(X, widths, a.epochs, a.batch_size, torch.device(a.device))
    print(f"plain MLP autoencoder of the same widths: {ae:,.0f} samples/s; contrastive / autoencoder = {rate / ae:.2f}")
    print(f"peak RSS: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
