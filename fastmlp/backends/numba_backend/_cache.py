"""Where Numba keeps this backend's compiled code: in ``jit_cache.code_dir()`` (the user's
cache folder, one folder per installation and state of the sources), never in
``__pycache__`` inside the installed package.

Numba checks a cached function against the file that defines it only, not against the
files of the helpers compiled into it: after an edit of inline.py or intrinsics.py, the
kernels of epoch.py would load from a cache as they were. The folder is named by a digest
of all the backends' sources, so code compiled from other sources is never found.

The placement is a cache locator put first in Numba's list, which answers for this
package's files only; every other function keeps Numba's usual places. Where the folder
cannot be made or written, it declines and Numba's own locators decide.
"""

import os

from numba.core import caching

from .. import jit_cache

_BACKENDS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # fastmlp/backends
_Base = getattr(caching, "UserProvidedCacheLocator", None) or caching._UserProvidedCacheLocator
_Impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl


class FastmlpCacheLocator(_Base):
    """Numba's cache locator for the functions defined in fastmlp/backends."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(str(jit_cache.code_dir()),
                                        self.get_suitable_cache_subpath(py_file))

    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.abspath(py_file).startswith(_BACKENDS + os.sep):
            return None
        try:
            jit_cache.prepare()
        except OSError:
            return None
        # the mixin's from_function: the source file exists and the folder is writable
        return super(_Base, cls).from_function(py_func, py_file)


def install() -> None:
    """Put the locator first in Numba's list (once)."""
    if FastmlpCacheLocator not in _Impl._locator_classes:
        _Impl._locator_classes.insert(0, FastmlpCacheLocator)


def cache_location() -> str:
    """Where this backend's compiled code is cached."""
    return str(jit_cache.code_dir())
