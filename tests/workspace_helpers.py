"""Helpers shared by the tests that drive run folders and workspaces (imported by name: pytest puts
this folder on sys.path)."""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile

import numpy as np

from hcl_explore import runs


def tree_hashes(root) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``: hashed before and after a fault, it
    shows that nothing was lost or changed."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for f in names:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def wait_for_run(ws, rid, states=runs.FINAL, timeout=120):
    """Poll run ``rid``'s status until its state is one of ``states``; fail after ``timeout`` s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = runs.read_status(ws, rid)
        if st["state"] in states:
            return st
        time.sleep(0.05)
    raise AssertionError(f"run {rid} still {runs.read_status(ws, rid)} after {timeout} s")


def write_npz_bomb(path, members: dict, key: str, n_values: int) -> None:
    """Write ``members`` (name -> array) as a deflated ``.npz`` whose ``key`` member is replaced by
    ``n_values`` float64 zeros in rows of ``members[key]``'s width: a few hundred KB on disk,
    ``8 * n_values`` bytes once inflated (a zip bomb for the loaders' size checks)."""
    cols = members[key].shape[1]
    rows = n_values // cols
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in members.items():
            if k != key:
                b = io.BytesIO()
                np.lib.format.write_array(b, v, allow_pickle=False)
                zf.writestr(k + ".npy", b.getvalue())
        with zf.open(key + ".npy", "w", force_zip64=True) as fh:
            hdr = io.BytesIO()
            np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False, "shape": (rows, cols)})
            fh.write(hdr.getvalue())
            left = rows * cols * 8
            chunk = bytes(8 << 20)
            while left:
                fh.write(chunk[:min(left, len(chunk))])
                left -= min(left, len(chunk))
