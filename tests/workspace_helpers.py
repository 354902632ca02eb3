"""Helpers shared by the tests that drive run folders and workspaces (imported by name: pytest puts
this folder on sys.path)."""

from __future__ import annotations

import hashlib
import os
import time

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
