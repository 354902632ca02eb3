"""Training speed and memory of the contrastive estimator on the CPU (or --device cuda).

Prints samples/second of ``HCL(estimator="contrastive")`` training (epochs on n samples of 3
nonlinear modalities x 200 features, full lattice, 2 factors per node), the peak resident memory of
the process, and the ratio to a plain MLP autoencoder of the same size (one encoder per modality
with the same total hidden width and output width, one decoder per modality, MSE), trained in the
same process with the same batch size and optimizer.

Then ``--rounds`` more epochs of each, interleaved (autoencoder epoch, contrastive epoch, ...),
the contrastive ones through the same training loop as ``fit`` (``contrastive.train`` on the
fitted network): on a shared machine the load changes from minute to minute, and interleaving
puts both under the same load. The ratio printed last is the median contrastive rate over the
median autoencoder rate of those rounds. ``--device cuda`` trains both with bfloat16 autocast.

    .venv/bin/python benchmarks/bench_contrastive.py             # n = 100,000
    .venv/bin/python benchmarks/bench_contrastive.py --n 20000 --epochs 1 --threads 2
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import threading
import time

if "--threads" in sys.argv[:-1]:  # BLAS/OpenMP pools read these once, at import
    for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_k, sys.argv[sys.argv.index("--threads") + 1])

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


class Autoencoder:
    """A plain per-modality MLP autoencoder (d -> hidden -> code -> hidden -> d), MSE, Adam; one
    call trains one epoch and returns samples/second."""

    def __init__(self, X: dict[str, np.ndarray], widths: dict[str, tuple[int, int]], batch_size: int,
                 device: torch.device):
        torch.manual_seed(0)
        self.X, self.batch_size, self.device = X, batch_size, device
        self.nets = nn.ModuleDict({m: nn.Sequential(
            nn.Linear(x.shape[1], widths[m][0]), nn.ReLU(), nn.Linear(widths[m][0], widths[m][1]),
            nn.Linear(widths[m][1], widths[m][0]), nn.ReLU(), nn.Linear(widths[m][0], x.shape[1]))
            for m, x in X.items()}).to(device)
        self.opt = torch.optim.Adam(self.nets.parameters(), lr=1e-3)
        self.epoch = 0

    def __call__(self) -> float:
        n = next(iter(self.X.values())).shape[0]
        cuda = self.device.type == "cuda"
        t0 = time.perf_counter()
        perm = np.random.default_rng(self.epoch).permutation(n)
        self.epoch += 1
        for s in range(0, n - self.batch_size + 1, self.batch_size):
            idx = perm[s:s + self.batch_size]
            loss = 0.0
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=cuda):
                for m, x in self.X.items():
                    xb = torch.from_numpy(x[idx]).to(self.device, non_blocking=cuda)
                    loss = loss + ((self.nets[m](xb).float() - xb) ** 2).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        if cuda:
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)


def contrastive_epoch(model: hx.HCL, arrays, device: torch.device) -> float:
    """One more epoch of the fitted network through ``contrastive.train`` (what ``fit`` runs);
    samples/second."""
    from dataclasses import replace

    from hcl_explore import contrastive as C

    cfg = replace(model._contrastive_config(), max_epochs=1)
    n = arrays.observed.shape[0]
    t0 = time.perf_counter()
    C.train(model.module_, arrays, np.arange(n), np.arange(0), cfg, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=200, help="features per modality")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch and BLAS threads (0: their defaults)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved epochs of each after the fit")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    t = time.perf_counter()
    data, _ = hx.simulate(n=a.n, dims=(a.d, a.d, a.d), ranks=2, noise=0.3, seed=0, link="nonlinear")
    print(f"simulated n={a.n:,} x 3 x {a.d} in {time.perf_counter() - t:.1f}s; peak RSS {peak_rss_mb():,.0f} MB")
    model = hx.HCL(ranks=2, estimator="contrastive", hidden=(a.hidden,), max_epochs=a.epochs, batch_size=a.batch_size,
                   val_fraction=0.0, patience=a.epochs + 1, device=a.device)
    # The first torch.optim optimizer of a process imports torch._dynamo (6-12 s here): a one-time
    # cost that would otherwise be charged to whichever of the two trains first.
    t = time.perf_counter()
    torch.optim.Adam([nn.Parameter(torch.zeros(1))])
    print(f"first optimizer of the process (imports torch._dynamo): {time.perf_counter() - t:.1f}s, charged to neither")
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
    dev = torch.device(a.device)
    ae = Autoencoder(X, widths, a.batch_size, dev)
    ae_first = float(np.mean([ae() for _ in range(a.epochs)]))
    print(f"plain MLP autoencoder of the same widths: {ae_first:,.0f} samples/s; contrastive fit / autoencoder = "
          f"{rate / ae_first:.2f}")
    from hcl_explore import contrastive as C

    arrays = C.Arrays(X, np.asarray(data.observed, dtype=bool))
    con_r, ae_r = [], []
    for r in range(a.rounds):
        ae_r.append(ae())
        con_r.append(contrastive_epoch(model, arrays, dev))
        print(f"round {r + 1}: autoencoder {ae_r[-1]:,.0f} samples/s, contrastive {con_r[-1]:,.0f} samples/s "
              f"({con_r[-1] / ae_r[-1]:.2f})", flush=True)
    if a.rounds:
        med_c, med_a = float(np.median(con_r)), float(np.median(ae_r))
        print(f"interleaved, median of {a.rounds}: contrastive {med_c:,.0f} samples/s, autoencoder {med_a:,.0f} "
              f"samples/s; contrastive / autoencoder = {med_c / med_a:.2f} (target >= 0.5)")
    print(f"peak RSS: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
