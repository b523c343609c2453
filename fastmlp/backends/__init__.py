"""Backend registry. A backend is one module (or package) of this package named
``<name>_backend``; it is registered by being there. Every backend exposes the kernels
declared in ``contract.py``, so the estimator, the tests and the benchmarks treat them
alike, and a new backend is picked up by all of them unchanged.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from types import ModuleType

from . import jit_cache

_SUFFIX = "_backend"
REFERENCE = "numpy"  # the backend every other one is tested against
# name -> module path, for every <name>_backend module found here, the reference first
_FOUND = sorted(i.name[: -len(_SUFFIX)] for i in pkgutil.iter_modules(__path__)
                if i.name.endswith(_SUFFIX))
_REGISTRY = {name: f"{__name__}.{name}{_SUFFIX}"
             for name in sorted(_FOUND, key=lambda n: (n != REFERENCE, n))}
# "auto" takes the first of these that loads and, for a backend that compiles its kernels
# on first use (RUN_TIME_COMPILED), whose kernels for the fit's dtype are compiled already
# (jit_cache.ready); a backend not listed comes after them.
# numba comes first: once compiled it is the fastest backend on the shapes benchmarked
# (docs/performance.md, benchmarks/shape_grid.py). Its first use compiles for a minute
# or two, so until that is done, in a background process that auto starts or by
# `fastmlp warmup`, auto takes cython, which compiles nothing at run time, and gives the
# same bits at any thread count.
AUTO_PREFERENCE = ("numba", "cython", "numpy")
RUN_TIME_COMPILED = frozenset({"numba"})
AUTO_REASONS = {
    "numba": "its kernels for this dtype are compiled, and once compiled it is the fastest "
             "backend on every benchmarked shape (the shape grid of fastmlp compare "
             "--shapes)",
    "cython": "it compiles nothing at run time, and numba's kernels for this dtype are not "
              "compiled yet (or numba is not available)",
    "numpy": "neither compiled backend is ready",
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
    module = sys.modules.get(_REGISTRY[name])
    if module is not None:
        # loaded already (a one-row predict asks for its backend each time)
        return module
    try:
        return importlib.import_module(_REGISTRY[name])
    except ImportError as exc:
        hint = _INSTALL_HINTS.get(name, "")
        message = f"fastmlp backend {name!r} is not available: {exc}. {hint}".strip()
        raise ImportError(message) from exc


def auto_candidates(dtype="float32") -> list[str]:
    """The backends auto may take now for work of ``dtype``, in its order of preference,
    without loading any: a backend compiled at run time only once its kernels for that
    dtype are (jit_cache.ready)."""
    return [name for name in AUTO_ORDER if auto_may_use(name, dtype)]


def auto_may_use(name: str, dtype) -> bool:
    """Whether auto may use backend ``name`` for work of ``dtype`` without compiling."""
    return name not in RUN_TIME_COMPILED or jit_cache.ready(name, dtype)


def get_backend(name: str = "auto", dtype="float32") -> ModuleType:
    """Return the backend module called ``name``, loading it if need be.

    ``"auto"`` picks the first backend of ``AUTO_ORDER`` (numba, cython, numpy) that
    loads and is ready for work of ``dtype`` without compiling: numba only once its
    kernels for that dtype are compiled, so "auto" never waits for a compile. Passing
    over a backend that is not compiled yet asks for its compile in the background,
    started when the fit is done (``jit_cache.request_background``). Should none of the
    ready backends load, the first that compiles at run time is taken.

    Parameters
    ----------
    name : str, default "auto"
        "auto", or a backend's name: one of :func:`available_backends` on this machine.
    dtype : {"float32", "float64"}, default "float32"
        Floating-point type of the work, which decides whether a backend compiled at
        run time is ready.

    Returns
    -------
    module
        The backend: a module exposing the kernels of ``fastmlp.backends.contract``,
        and its ``NAME``.

    Raises
    ------
    ValueError
        If ``name`` is not a registered backend.
    ImportError
        If the backend cannot be loaded here (or, for "auto", none can); the message
        says why and how to fix it.

    See Also
    --------
    available_backends : The backends that load on this machine.

    Examples
    --------
    >>> from fastmlp import available_backends, get_backend
    >>> get_backend("numpy").NAME
    'numpy'
    >>> get_backend("auto").NAME in available_backends()
    True
    """
    if name == "auto":
        errors, to_compile = [], []
        for candidate in AUTO_ORDER:
            if not auto_may_use(candidate, dtype):
                jit_cache.request_background(candidate, dtype)
                to_compile.append(candidate)
                continue
            try:
                return _import(candidate)
            except ImportError as exc:
                errors.append(str(exc))
        # nothing ready loads: the first backend that compiles before it runs, then
        for candidate in to_compile:
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
    """Return the names of the backends that load on this machine.

    Every backend is imported to find out. numpy, the reference, is always there; the
    compiled ones need numba installed (numba) or the extension built (cython).

    Returns
    -------
    list of str
        The names, in registry order (the reference backend, numpy, first).

    See Also
    --------
    get_backend : Load a backend by name.

    Examples
    --------
    >>> from fastmlp import available_backends
    >>> "numpy" in available_backends()
    True
    """
    return [name for name, why in backend_status().items() if why is None]
