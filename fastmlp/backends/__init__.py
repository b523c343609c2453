"""Backend registry. A backend is one module (or package) of this package named
``<name>_backend``; it is registered by being there. Every backend exposes the kernels
declared in ``contract.py``, so the estimator, the tests and the benchmarks treat them
alike, and a new backend is picked up by all of them unchanged.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

_SUFFIX = "_backend"
REFERENCE = "numpy"  # the backend every other one is tested against
# name -> module path, for every <name>_backend module found here, the reference first
_FOUND = sorted(i.name[: -len(_SUFFIX)] for i in pkgutil.iter_modules(__path__)
                if i.name.endswith(_SUFFIX))
_REGISTRY = {name: f"{__name__}.{name}{_SUFFIX}"
             for name in sorted(_FOUND, key=lambda n: (n != REFERENCE, n))}
# "auto" takes the first of these that loads; a backend not listed comes after them.
# numba comes first: once compiled it is the faster of the two on the reference shape
# and on wide layers on every CPU measured (AMD Zen 3, Zen 4, Intel Emerald Rapids), and,
# since the dense layers of both go through BLAS, on the deep shapes too (1.2-1.6x
# faster than cython on the Intel Xeon, native and AVX2 builds; docs/performance.md,
# benchmarks/shape_grid.py).
# Its price is a compile on first use (about 45 s per dtype, cached on disk) and about
# 1.6 s more to start a new process; cython, next, compiles nothing at run time and gives
# the same bits at any thread count.
AUTO_PREFERENCE = ("numba", "cython", "numpy")
AUTO_REASONS = {
    "numba": "once compiled, the fastest backend on every benchmarked shape and CPU (the "
             "shape grid of fastmlp compare --shapes); its first use compiles (about 45 s "
             "per dtype, then cached)",
    "cython": "numba is not available; cython compiles nothing at run time",
    "numpy": "neither compiled backend is available",
}
AUTO_ORDER = tuple(n for n in AUTO_PREFERENCE if n in _REGISTRY) + tuple(
    n for n in _REGISTRY if n not in AUTO_PREFERENCE)

_INSTALL_HINTS: dict[str, str] = {
    "cython": ("The cython backend is a compiled extension that was not built with this "
               "installation. Build it by reinstalling with Cython and a C compiler present: "
               "FASTMLP_CYTHON=1 pip install --force-reinstall --no-deps fastmlp (or, in a "
               "source checkout, FASTMLP_CYTHON=1 pip install .); FASTMLP_CYTHON=1 makes a "
               "failed build an error that shows why."),
}


def backend_names() -> tuple[str, ...]:
    """All registered backend names, available or not."""
    return tuple(_REGISTRY)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(_REGISTRY[name])
    except ImportError as exc:
        hint = _INSTALL_HINTS.get(name, "")
        message = f"fastmlp backend {name!r} is not available: {exc}. {hint}".strip()
        raise ImportError(message) from exc


def get_backend(name: str = "auto") -> ModuleType:
    """The backend module called ``name``; ``"auto"`` picks the first available in AUTO_ORDER.

    Raises ValueError for an unknown name and ImportError (saying why and how to fix it)
    for a known backend that cannot be loaded here.
    """
    if name == "auto":
        errors = []
        for candidate in AUTO_ORDER:
            try:
                return _import(candidate)
            except ImportError as exc:
                errors.append(str(exc))
        raise ImportError("no fastmlp backend could be loaded: " + "; ".join(errors))
    if not isinstance(name, str) or name not in _REGISTRY:
        allowed = ", ".join(repr(n) for n in ("auto", *_REGISTRY))
        raise ValueError(f"unknown backend {name!r}; allowed values are {allowed}")
    return _import(name)


def backend_status() -> dict[str, str | None]:
    """name -> None when the backend loads, else the reason it does not."""
    status: dict[str, str | None] = {}
    for name in _REGISTRY:
        try:
            _import(name)
            status[name] = None
        except ImportError as exc:
            status[name] = str(exc)
    return status


def available_backends() -> list[str]:
    """Names of the backends that load on this machine, in registry order."""
    return [name for name, why in backend_status().items() if why is None]
