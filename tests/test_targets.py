"""Both vector widths on one machine: the compiled backends built for an AVX2 CPU
(Haswell, 256-bit vectors) must agree with the NumPy reference as the native build does.
On an AVX-512 machine this checks the AVX2 code paths; on an AVX2 machine it checks the
same code as the native build. Slow (a compile of each backend), so exhaustive only."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AVX2 = "haswell"

# fit a small problem with every output function on one backend and on numpy, from the
# same start; print the largest differences of the weights and of the predictions
SCRIPT = """
import sys, numpy as np
from fastmlp.backends import get_backend
from fastmlp.backends.codes import ADAM, EXP, IDENTITY, LOGISTIC, RELU, SOFTMAX, Target
from fastmlp.backends.codes import optimizer_step
from fastmlp.network import init_params
name = sys.argv[1]
rng = np.random.default_rng(0)
X = (rng.random((300, 40)) * (rng.random((300, 40)) < 0.3)).astype(np.float32)
worst = 0.0
# the second network's wide first layer takes its gradient by columns (epoch._columns_step)
cases = [([40, 33, 17, 10], o) for o in (SOFTMAX, LOGISTIC, IDENTITY, EXP)]
for sizes, output in cases + [([40, 256, 10], SOFTMAX)]:
    sizes = np.array(sizes, dtype=np.int64)
    labels = rng.integers(0, 10, 300).astype(np.int64)
    values = (labels[:, None] == np.arange(10)).astype(np.float32)
    target = (Target(output, labels, np.empty((0, 10), np.float32), np.empty(0, np.float32))
              if output == SOFTMAX else
              Target(output, np.empty(0, np.int64), values, rng.random(300).astype(np.float32)))
    results = []
    for impl in (get_backend(name), get_backend("numpy")):
        p = init_params(sizes, RELU, np.float32, np.random.RandomState(1))
        g, m, v = (np.zeros_like(p) for _ in range(3))
        order = np.arange(300, dtype=np.int64)
        impl.train_epoch(p, g, m, v, sizes, RELU, impl.prepare_inputs(X), target, order, 32,
                         1e-4, optimizer_step(ADAM, 1e-3), 0)
        out = np.empty((300, 10), np.float32)
        impl.predict_proba(out, X, p, sizes, RELU, output=output)
        results.append((p, out))
    (p, out), (p_ref, out_ref) = results
    worst = max(worst, float(np.abs(p - p_ref).max()), float(np.abs(out - out_ref).max()))
# AVX-512 registers in the machine code of two numba kernels that take the columns path
# (-1: the extension, whose build is checked with objdump)
zmm = -1
if name == "numba":
    from fastmlp.backends.numba_backend import epoch, predict
    kernels = (epoch._columns_step, predict._predict_rows)
    zmm = sum(asm.count("zmm") for f in kernels for asm in f.inspect_asm().values())
    assert all(f.inspect_asm() for f in kernels), "a kernel was not compiled here"
print(get_backend(name).__name__, worst, zmm)
"""


def _run(backend, env, cwd):
    out = subprocess.run([sys.executable, "-c", SCRIPT, backend], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    module, worst, zmm = out.stdout.split()
    return module, float(worst), int(zmm)


@pytest.mark.exhaustive
def test_numba_compiled_for_avx2_matches_the_reference(tmp_path):
    pytest.importorskip("numba")
    # an empty feature list: Numba otherwise adds the host's features to the CPU name
    # (AVX-512 on an AVX-512 machine), and the code is not AVX2 code
    env = dict(os.environ, NUMBA_CPU_NAME=AVX2, NUMBA_CPU_FEATURES="",
               NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    module, worst, zmm = _run("numba", env, tmp_path)
    assert module.endswith("numba_backend") and worst < 1e-4
    assert zmm == 0, "the AVX2 build holds AVX-512 instructions"


@pytest.mark.exhaustive
@pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="needs the source tree")
def test_extension_built_for_avx2_matches_the_reference(tmp_path):
    target = tmp_path / "site"
    env = dict(os.environ, FASTMLP_CYTHON="1", FASTMLP_NATIVE="0",
               CFLAGS=f"-march={AVX2} -mtune={AVX2}")
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                            "--target", str(target), str(ROOT)], env=env,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    (so,) = target.glob("fastmlp/backends/_cykernels*")
    disassembly = subprocess.run(["objdump", "-d", str(so)], capture_output=True, text=True)
    if disassembly.returncode == 0:  # no AVX-512 register in an AVX2 build
        assert "zmm" not in disassembly.stdout
    module, worst, _ = _run("cython", dict(os.environ, PYTHONPATH=str(target)), tmp_path)
    assert module.endswith("cython_backend") and worst < 1e-4
