"""BLAS thread control without extra dependencies.

numpy's bundled OpenBLAS exports ``openblas_set_num_threads_local``, which sets the thread count for
the calling thread only; it is reached through ctypes. Small products and factorizations (the
structure search, the refinement, the prediction baselines) gain nothing from a second BLAS thread,
and on a busy 2-core machine the two threads wait for each other: a 100 x 100 ``eigh`` took 0.12 s
at a load of 4 (about 2 ms on one thread), which made a 6-modality fit 30x slower than its own
covariance pass; the representation refit inside ``predict.evaluate_prediction`` on mfeat
(1,500 x 649) took 11 s of CPU on one thread against ~180 s with two threads spinning.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os
from typing import Callable, Iterator

import numpy as np


@functools.lru_cache(maxsize=1)
def _openblas_local_threads() -> Callable[[int], int] | None:
    """numpy's OpenBLAS ``openblas_set_num_threads_local`` (ctypes), or None (another BLAS)."""
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "lib*openblas*.so*"))):
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


@contextlib.contextmanager
def one_blas_thread(enabled: bool = True) -> Iterator[None]:
    """numpy's BLAS on one thread, in the calling thread only, while the block runs (a no-op with
    another BLAS or when ``enabled`` is False). The previous count is restored afterwards."""
    fn = _openblas_local_threads() if enabled else None
    prev = fn(1) if fn is not None else None
    try:
        yield
    finally:
        if fn is not None and prev is not None and prev > 0:
            fn(prev)
