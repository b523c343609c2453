"""Build script. Metadata lives in pyproject.toml; this file builds the optional compiled
extension from ext/ (the "cython" backend).

FASTMLP_CYTHON decides what happens to it:

    unset  build it when Cython and a C compiler work; otherwise warn and install without it
    1      build it; any failure fails the install
    0      do not build it

OpenMP is used when the compiler accepts -fopenmp (checked by compiling a small program);
otherwise the extension is built serial. FASTMLP_NATIVE=0 leaves out -march=native, for a
wheel that must run on other CPUs than the one that built it.
"""

import os
import sys
import tempfile
import textwrap

from setuptools import setup
from setuptools.command.build_ext import build_ext

MODE = os.environ.get("FASTMLP_CYTHON", "").strip()
if MODE not in ("", "0", "1"):
    sys.exit(f"FASTMLP_CYTHON must be unset, 0 or 1, not {MODE!r}")
REQUIRED = MODE == "1"
NATIVE = os.environ.get("FASTMLP_NATIVE", "1").strip() != "0"
EXT_NAME = "fastmlp.backends._cykernels"


def _warn(message):
    print(f"\nWARNING (fastmlp): {message}\n", file=sys.stderr, flush=True)


def _compiles(compiler, flags, source):
    """Whether ``compiler`` builds and links ``source`` with ``flags``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objects, os.path.join(tmp, "probe"), output_dir=tmp,
                                     extra_postargs=flags)
        except Exception:
            return False
    return True


OPENMP_PROBE = textwrap.dedent("""
    #include <omp.h>
    int main(void) { int n = 0;
    #pragma omp parallel reduction(+:n)
      n += 1;
    return n > 0 ? 0 : 1; }
""")


class OptionalBuildExt(build_ext):
    """build_ext that picks the compiler flags by probing, and that (unless the build is
    required) turns a failed build into a warning."""

    def build_extensions(self):
        compiler = self.compiler
        # -fno-math-errno: sqrt and exp need not set errno (nothing reads it), which lets
        # the compiler vectorise them (the Adam update's square root)
        compile_args = ["-O3", "-fno-math-errno"]
        link_args = []
        if compiler.compiler_type == "msvc":
            compile_args = ["/O2", "/openmp"]
        else:
            if NATIVE and _compiles(compiler, ["-march=native"], "int main(void){return 0;}"):
                compile_args.append("-march=native")
                # on AVX-512 CPUs, 256-bit vectors for the loops the compiler vectorises:
                # with 512-bit ones the dense hidden layers of 784-512-512-10 trained 2.3x
                # slower on an Intel Xeon (Emerald Rapids; docs/archive/performance-log.md). The
                # explicit vector sums of ext/simd.h keep their width; a no-op on AVX2.
                if _compiles(compiler, ["-march=native", "-mprefer-vector-width=256"],
                             "int main(void){return 0;}"):
                    compile_args.append("-mprefer-vector-width=256")
            if _compiles(compiler, ["-fopenmp"], OPENMP_PROBE):
                compile_args.append("-fopenmp")
                link_args.append("-fopenmp")
            else:
                _warn("the C compiler does not support OpenMP; the cython backend is built "
                      "serial (one thread)")
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        super().build_extensions()

    def run(self):
        try:
            super().run()
        except Exception as exc:
            if REQUIRED:
                raise
            _warn(f"the cython backend was not built ({exc}); fastmlp is installed without "
                  "it and uses numba or numpy. Set FASTMLP_CYTHON=1 to make this an error.")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            if REQUIRED:
                raise
            _warn(f"building {ext.name} failed ({exc}); fastmlp is installed without the "
                  "cython backend. Set FASTMLP_CYTHON=1 to make this an error.")


def _extensions():
    if MODE == "0":
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError as exc:
        if REQUIRED:
            sys.exit(f"FASTMLP_CYTHON=1 but Cython cannot be imported: {exc}")
        _warn("Cython is not installed; fastmlp is installed without the cython backend "
              "(pip install cython, then reinstall, to build it)")
        return []
    try:
        # ext/simd.h holds the C helpers the extension includes
        ext = Extension(EXT_NAME, ["ext/_cykernels.pyx"], include_dirs=["ext"],
                        depends=["ext/simd.h"])
        return cythonize([ext], compiler_directives={"language_level": 3}, quiet=True)
    except Exception as exc:
        if REQUIRED:
            raise
        _warn(f"Cython could not translate ext/_cykernels.pyx ({exc}); fastmlp is installed "
              "without the cython backend")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
