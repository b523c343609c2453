"""Backend registry. Every backend module exposes the same kernel names and signatures
(see ``numpy_backend`` for the contract), so the estimator, the tests and the benchmarks
treat them alike.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module path. "auto" is resolved by AUTO_ORDER: the first that imports wins.
# cython comes first when its extension was built: it compiles nothing in a new process
# (numba spends about a minute compiling on first use, then about 0.5 s loading its cache
# in each new process), never imports numba, and gives the same bits for any thread
# count. Once loaded, numba trains faster (MNIST, 5 epochs: 0.92 s against 1.28 s), so it
# is the choice for long runs, and auto's pick when the extension is not built.
_REGISTRY = {
    "numpy": "fastmlp.backends.numpy_backend",
    "numba": "fastmlp.backends.numba_backend",
    "cython": "fastmlp.backends.cython_backend",
}
AUTO_ORDER = ("cython", "numba", "numpy")

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
