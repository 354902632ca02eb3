"""Estimators behind ``HCL(estimator=...)``: the protocol (:mod:`.base`), the registry, and the
built-in ``linear`` and ``contrastive`` methods. A new estimator is one module with a registered
:class:`~.base.Estimator` subclass: in this package it is found and imported on first use; outside
it, name the module in ``HCL_EXPLORE_ESTIMATORS`` (docs/architecture.md, "Adding an estimator")."""

from __future__ import annotations

import importlib
import os
import pkgutil

from .base import REGISTRY, Estimator, get_estimator, register

__all__ = ["Estimator", "REGISTRY", "get_estimator", "register", "names"]

_DONE = False


def _discover() -> None:
    """Import every module of this package once (each registers its estimators)."""
    global _DONE
    if _DONE:
        return
    _DONE = True
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    # Estimators outside the package (a lab's own module): importable module names, comma-separated.
    # The variable reaches the CLI and the app's run workers too, which inherit the environment.
    for mod in filter(None, (x.strip() for x in os.environ.get("HCL_EXPLORE_ESTIMATORS", "").split(","))):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise ImportError(f"HCL_EXPLORE_ESTIMATORS names {mod!r}, which cannot be imported: {exc}") from exc


def names() -> list[str]:
    """Registered estimator names, built-ins first."""
    _discover()
    first = [n for n in ("linear", "contrastive") if n in REGISTRY]
    return first + sorted(n for n in REGISTRY if n not in first)
