"""Backends whose kernels compile on first use (numba): where their machine code is kept,
whether it is ready for a dtype, and compiling it without making anyone wait.

``auto`` uses such a backend for a fit or predict only once its kernels for that dtype
are compiled; until then it takes the next backend in its order and, once that fit is
done, starts the compile in a separate, low-priority process (``python -m fastmlp.warmup
--background``), so that a later fit, in this process or the next, gets the compiled
backend. ``fastmlp warmup``
compiles in the foreground, with progress. This module imports neither numba nor the
backend: it is consulted on every ``auto`` fit.

Where the code is kept: ``FASTMLP_CACHE_DIR`` if set, else ``NUMBA_CACHE_DIR/fastmlp`` if
that is set, else the user's cache folder (``$XDG_CACHE_HOME/fastmlp`` or
``~/.cache/fastmlp``); never inside the installed package, so uninstalling or reinstalling
leaves nothing behind in site-packages. Under it, one folder per installation (by its
path), and in that one folder per state of the sources and of the compiler
(``code_dir``): code compiled from other sources is never loaded, and the folders of
earlier sources of the same installation are deleted when a new one is made.

A marker file per backend, dtype and CPU target in ``code_dir`` says that a warm-up
compiled and cached everything a fit and a predict of that dtype use (``mark_ready``).
One process at a time compiles a given backend and dtype: the others find its lock held
and go on without it.

Set ``FASTMLP_BACKGROUND_COMPILE=0`` to never start the background process (``auto``
then keeps to the backends that need no compile until ``fastmlp warmup`` has run).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # fastmlp/
_OFF = ("0", "false", "no", "off")
# folders of installations not used for this long are deleted when a new folder is made
_UNUSED_DAYS = 30

_ready_here: set[tuple[str, str]] = set()  # (backend, dtype) warmed up in this process
_started_here: set[tuple[str, str]] = set()  # background compiles this process started
_pending: list[tuple[str, str]] = []  # asked for, to start when the work in hand is done


def cache_root() -> Path:
    """The folder every installation's compiled code lives under."""
    if os.environ.get("FASTMLP_CACHE_DIR"):
        return Path(os.environ["FASTMLP_CACHE_DIR"])
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"]) / "fastmlp"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastmlp"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "none"


@lru_cache(maxsize=1)
def sources_digest() -> str:
    """A digest of everything compiled code depends on: the backends' sources (their
    sizes and modification times), fastmlp's version and the compiler's versions."""
    from .. import __version__

    digest = hashlib.sha256(f"{__version__} numba {_version('numba')} llvmlite "
                            f"{_version('llvmlite')}\n".encode())
    for path in sorted((_PACKAGE / "backends").rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(_PACKAGE)}:{stat.st_size}:"
                      f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _installation_dir() -> Path:
    return cache_root() / hashlib.sha256(str(_PACKAGE).encode()).hexdigest()[:12]


def code_dir() -> Path:
    """The folder of this installation's compiled code for its current sources."""
    return _installation_dir() / sources_digest()


@lru_cache(maxsize=1)
def target_key() -> str:
    """The CPU the code is compiled for, as far as it decides the machine code: its model
    and flags, and numba's settings that change the target."""
    digest = hashlib.sha256()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n")[0]
        digest.update("\n".join(line for line in text.splitlines()
                                if line.startswith(("model name", "flags"))).encode())
    except OSError:
        import platform

        digest.update(f"{platform.machine()} {platform.processor()}".encode())
    for name in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_OPT", "NUMBA_BOUNDSCHECK",
                 "NUMBA_FASTMATH"):
        digest.update(f"{name}={os.environ.get(name, '')}\n".encode())
    return digest.hexdigest()[:12]


def _marker(name: str, dtype: str, kind: str) -> Path:
    return code_dir() / f"{name}-{dtype}-{target_key()}.{kind}"


def _dtype_name(dtype) -> str:
    try:
        return _DTYPE_NAMES[dtype]
    except (KeyError, TypeError):  # not seen yet, or not hashable
        import numpy as np

        name = np.dtype(dtype).name
    with contextlib.suppress(TypeError):
        _DTYPE_NAMES[dtype] = name
    return name


# dtype as given -> its name: auto asks ready() on every predict, where np.dtype(...).name
# would cost more than a one-row prediction's kernel
_DTYPE_NAMES: dict = {}


def jit_disabled() -> bool:
    """NUMBA_DISABLE_JIT=1: the kernels run as Python and nothing compiles."""
    return os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")


def ready(name: str, dtype) -> bool:
    """Whether backend ``name``'s kernels for ``dtype`` are compiled, in this process or
    in the cache (a stat of one file)."""
    dtype = _dtype_name(dtype)
    if (name, dtype) in _ready_here or jit_disabled():
        return True
    try:
        found = _marker(name, dtype, "ready").exists()
    except OSError:
        return False
    if found:  # once ready, ready for the rest of the process
        _ready_here.add((name, dtype))
    return found


def mark_ready(name: str, dtype) -> None:
    """Record that a warm-up compiled (and cached, where the cache is writable) all of
    backend ``name``'s kernels for ``dtype``."""
    dtype = _dtype_name(dtype)
    _ready_here.add((name, dtype))
    with contextlib.suppress(OSError):
        _marker(name, dtype, "failed").unlink(missing_ok=True)
        _write(_marker(name, dtype, "ready"), time.strftime("%Y-%m-%d %H:%M:%S\n"))


def mark_failed(name: str, dtype, why: str) -> None:
    """Record that a background compile failed, so that no process starts another until
    ``fastmlp warmup`` has tried again in the foreground."""
    with contextlib.suppress(OSError):
        _write(_marker(name, _dtype_name(dtype), "failed"), why)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def compile_lock(name: str, dtype, wait: bool):
    """Held while a process compiles backend ``name`` for ``dtype``; yields whether this
    process holds it (without ``wait``, False when another process does). Where file
    locks are not available, always held."""
    path = _marker(name, _dtype_name(dtype), "lock")
    try:
        import fcntl
    except ImportError:  # no POSIX file locks
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def state(name: str, dtype) -> str:
    """"compiled", "compiling" (a process holds the lock), "failed" (the last background
    compile failed; its log says why) or "not compiled"."""
    if ready(name, dtype):
        return "compiled"
    try:
        with compile_lock(name, dtype, wait=False) as held:
            if not held:
                return "compiling"
        if _marker(name, _dtype_name(dtype), "failed").exists():
            return "failed"
    except OSError:
        pass
    return "not compiled"


def log_path(name: str, dtype) -> Path:
    """Where the background compile of ``name`` for ``dtype`` writes what it says."""
    return _marker(name, _dtype_name(dtype), "log")


def background_enabled() -> bool:
    """False when FASTMLP_BACKGROUND_COMPILE says no (0, false, no, off)."""
    return os.environ.get("FASTMLP_BACKGROUND_COMPILE", "1").strip().lower() not in _OFF


def start_background(name: str, dtype) -> bool:
    """Start compiling backend ``name``'s kernels for ``dtype`` in a separate low-priority
    process, unless switched off, already started by this process, running in another,
    or failed before. Never raises: a fit goes on without it. Returns whether it
    started one."""
    dtype = _dtype_name(dtype)
    key = (name, dtype)
    if key in _started_here or not background_enabled() or jit_disabled():
        return False
    _started_here.add(key)
    try:
        if state(name, dtype) != "not compiled":
            return False
        log = log_path(name, dtype)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, FASTMLP_BACKGROUND_COMPILE="0")
        with open(log, "w") as out:
            subprocess.Popen([sys.executable, "-m", "fastmlp.warmup", "--background",
                              "--backend", name, "--dtype", dtype],
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=env, close_fds=True,
                             start_new_session=hasattr(os, "setsid"))
        return True
    except Exception:  # noqa: BLE001 - a failed start must never fail the user's fit
        return False


def request_background(name: str, dtype) -> None:
    """Ask for a background compile of backend ``name``'s kernels for ``dtype``, started
    by start_requested once the work in hand is done (the estimators call it at the end
    of every fit; at the latest, the process's exit does): a compile running beside a
    fit would take cores and memory bandwidth from it, and make the adaptive thread team
    see a busy machine."""
    key = (name, _dtype_name(dtype))
    if key not in _pending and key not in _started_here:
        _pending.append(key)
    _register_exit_start()


def start_requested() -> None:
    """Start the background compiles asked for (request_background). Never raises."""
    while _pending:
        start_background(*_pending.pop(0))


@lru_cache(maxsize=1)
def _register_exit_start() -> None:
    import atexit

    atexit.register(start_requested)


def lower_priority() -> None:
    """The calling process yields the CPU to every other one (SCHED_IDLE where Linux
    offers it, else the lowest nice level)."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    with contextlib.suppress(AttributeError, OSError):
        os.nice(19)


def prune() -> None:
    """Delete this installation's folders of earlier sources, and the folders of other
    installations unused for _UNUSED_DAYS days (a virtual environment since deleted)."""
    here = _installation_dir()
    current = code_dir().name
    with contextlib.suppress(OSError):
        for folder in here.iterdir():
            if folder.is_dir() and folder.name != current:
                shutil.rmtree(folder, ignore_errors=True)
    horizon = time.time() - _UNUSED_DAYS * 86400
    with contextlib.suppress(OSError):
        for folder in cache_root().iterdir():
            if folder.is_dir() and folder != here and folder.stat().st_mtime < horizon:
                shutil.rmtree(folder, ignore_errors=True)


def prepare() -> Path:
    """Make code_dir (pruning what it replaces when it is new) and return it; raises
    OSError where it cannot be made."""
    folder = code_dir()
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        prune()
    with contextlib.suppress(OSError):
        os.utime(folder.parent)  # the installation is in use
    return folder
