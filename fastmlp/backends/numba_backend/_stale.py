"""Keeps Numba's on-disk cache from serving code compiled from older sources.

Numba checks a cached function against the file that defines it only, not against the
files of the helpers compiled into it: after an edit of inline.py or intrinsics.py, the
kernels of epoch.py would still load from the cache as they were. So the cache is tied to
all the sources it compiles (this package's and those of fastmlp/backends) at once: when
any of them changed since the cache was written, the cached code is deleted and compiled
again. (An installation writes every file anew, so this matters in a source checkout,
where the sources are edited.)
"""

import hashlib
import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_STAMP = "fastmlp-sources.stamp"


def _sources_digest() -> str:
    # this package's modules and those of fastmlp/backends it compiles in (codes.py,
    # layout.py...)
    digest = hashlib.sha256()
    for path in sorted(_HERE.glob("*.py")) + sorted(_HERE.parent.glob("*.py")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def clear_stale_cache() -> None:
    """Delete the cached machine code in __pycache__ beside these modules if any source
    changed since it was written. (A cache placed elsewhere with NUMBA_CACHE_DIR is left
    to its owner.)"""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    cache = _HERE / "__pycache__"
    stamp = cache / _STAMP
    digest = _sources_digest()
    try:
        if stamp.read_text() == digest:
            return
    except OSError:
        pass
    try:
        cache.mkdir(exist_ok=True)
        for path in cache.iterdir():
            if path.suffix in (".nbi", ".nbc"):
                path.unlink()
        stamp.write_text(digest)
    except OSError:
        # a read-only installation: Numba then caches in its per-user folder
        pass
