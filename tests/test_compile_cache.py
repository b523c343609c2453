"""auto never waits for a compile: a backend compiled at run time is taken only once its
kernels for the dtype are ready; until then the next backend runs and the compile starts
in a background process, one at a time, never fatal; the compiled code lives outside the
package."""

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import FastMLP
from fastmlp.backends import (
    AUTO_ORDER,
    RUN_TIME_COMPILED,
    auto_candidates,
    available_backends,
    jit_cache,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A new, empty cache folder for the markers and locks (numba's own code stays where
    this process put it when it loaded the backend)."""
    monkeypatch.setenv("FASTMLP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(jit_cache, "_ready_here", set())
    monkeypatch.setattr(jit_cache, "_started_here", set())
    return tmp_path


@pytest.fixture
def started(monkeypatch):
    """The background compiles auto asked for and the fit started, recorded instead of
    started."""
    calls = []
    monkeypatch.setattr(jit_cache, "_pending", [])
    monkeypatch.setattr(jit_cache, "start_background",
                        lambda name, dtype: calls.append((name, np.dtype(dtype).name)))
    return calls


def _data():
    rng = np.random.default_rng(0)
    return rng.random((80, 6)).astype(np.float32), np.arange(80) % 3


def _expected_auto(dtype):
    ready = auto_candidates(dtype)
    return next(name for name in ready if name in available_backends())


def test_auto_passes_over_a_backend_not_compiled_and_starts_its_compile(cache, started):
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FastMLP(max_iter=1).fit(X, y)
    assert not any(jit_cache.ready(name, "float32") for name in RUN_TIME_COMPILED)
    assert model.backend_ not in RUN_TIME_COMPILED
    assert model.backend_ == _expected_auto("float32")
    assert started == [(name, "float32") for name in AUTO_ORDER if name in RUN_TIME_COMPILED
                       and AUTO_ORDER.index(name) < AUTO_ORDER.index(model.backend_)]
    # a float64 fit asks for its own dtype's kernels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        FastMLP(max_iter=1, dtype="float64").fit(X, y)
    assert ("numba", "float64") in started or "numba" not in AUTO_ORDER


@pytest.mark.skipif("numba" not in available_backends(), reason="numba not installed")
def test_auto_takes_numba_once_its_kernels_are_ready(cache, started):
    X, y = _data()
    jit_cache.mark_ready("numba", "float32")
    assert jit_cache.state("numba", "float32") == "compiled"
    jit_cache._ready_here.clear()  # the marker on disk alone says so too (a new process)
    assert jit_cache.ready("numba", "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FastMLP(max_iter=1).fit(X, y)
        other = FastMLP(max_iter=1, dtype="float64").fit(X, y)
    assert model.backend_ == "numba"
    assert other.backend_ != "numba"  # float64's kernels are not marked
    assert started == [("numba", "float64")]


@pytest.mark.skipif("numba" not in available_backends(), reason="numba not installed")
def test_a_model_fitted_by_auto_on_numba_predicts_without_compiling(cache, started):
    X, y = _data()
    jit_cache.mark_ready("numba", "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FastMLP(max_iter=2, random_state=0).fit(X, y)
    assert model.backend_ == "numba"
    expected = model.predict_proba(X)
    # in a process where numba's kernels are not compiled (a model loaded elsewhere),
    # auto's pick predicts, and every backend computes the same function
    jit_cache._ready_here.clear()
    for marker in cache.rglob("*.ready"):
        marker.unlink()
    assert model._prediction_backend().NAME == _expected_auto("float32")
    np.testing.assert_allclose(model.predict_proba(X), expected, rtol=1e-5, atol=1e-6)
    # asked for by name, numba stays numba
    named = FastMLP(max_iter=1, backend="numba").fit(X, y)
    assert named._prediction_backend().NAME == "numba"


def test_the_compile_starts_when_the_fit_is_done(cache, started, monkeypatch):
    # not beside the fit: it would take cores and memory bandwidth from it
    seen_during_fit = []
    real = jit_cache.start_requested

    def spy():
        seen_during_fit.append(list(started))
        real()

    monkeypatch.setattr(jit_cache, "start_requested", spy)
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FastMLP(max_iter=1).fit(X, y)
    if model.backend_ == AUTO_ORDER[0]:
        pytest.skip("auto's first choice is ready here: nothing to compile")
    assert seen_during_fit == [[]]  # requested during the fit, none started before its end
    assert started and started[0][1] == "float32" and jit_cache._pending == []
    # asked for again (a later fit in the same process): requested once
    jit_cache.request_background("numba", "float32")
    jit_cache.request_background("numba", "float32")
    assert jit_cache._pending == [("numba", "float32")]


def test_one_process_at_a_time_holds_the_compile_lock(cache):
    with jit_cache.compile_lock("numba", "float32", wait=False) as first:
        assert first
        assert jit_cache.state("numba", "float32") == "compiling"
        with jit_cache.compile_lock("numba", "float32", wait=False) as second:
            assert not second
    assert jit_cache.state("numba", "float32") == "not compiled"


def test_the_setting_switches_the_background_compile_off(cache, monkeypatch):
    for off in ("0", "false", "OFF", "no"):
        monkeypatch.setenv("FASTMLP_BACKGROUND_COMPILE", off)
        assert not jit_cache.background_enabled()
        assert not jit_cache.start_background("numba", "float32")
    assert not list(cache.rglob("*.log"))  # nothing was started
    monkeypatch.setenv("FASTMLP_BACKGROUND_COMPILE", "1")
    assert jit_cache.background_enabled()


def _wait_for(predicate, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_background_compile_runs_once_and_marks_the_backend_ready(cache, monkeypatch):
    # the numpy backend compiles nothing, so its warm-up takes seconds: the machinery is
    # what is tested here (the start, the lock, the marker, the log)
    monkeypatch.setenv("FASTMLP_BACKGROUND_COMPILE", "1")
    assert jit_cache.start_background("numpy", "float32")
    assert not jit_cache.start_background("numpy", "float32")  # once per process
    assert _wait_for(lambda: jit_cache.ready("numpy", "float32"))
    assert _wait_for(lambda: "compiled in" in jit_cache.log_path("numpy", "float32")
                     .read_text())
    log = jit_cache.log_path("numpy", "float32").read_text()
    assert "[8/8] numpy float32: large model:" in log
    assert jit_cache.state("numpy", "float32") == "compiled"


def test_several_background_compiles_at_once_compile_once(cache):
    env = dict(os.environ, FASTMLP_CACHE_DIR=str(cache))
    command = [sys.executable, "-m", "fastmlp.warmup", "--background", "--backend", "numpy",
               "--dtype", "float64"]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert sum("compiled in" in out for out in outputs) == 1
    assert jit_cache.ready("numpy", "float64")


def test_a_failed_background_compile_is_recorded_and_not_retried(cache, monkeypatch):
    monkeypatch.setenv("FASTMLP_BACKGROUND_COMPILE", "1")
    # a backend name that does not exist: the child fails at once
    assert jit_cache.start_background("nosuch", "float32")
    assert _wait_for(lambda: jit_cache.state("nosuch", "float32") == "failed")
    assert "unknown backend 'nosuch'" in jit_cache.log_path("nosuch", "float32").read_text()
    monkeypatch.setattr(jit_cache, "_started_here", set())  # as in a new process
    assert not jit_cache.start_background("nosuch", "float32")


def test_a_fit_goes_on_when_the_background_process_cannot_start(cache, monkeypatch):
    monkeypatch.setenv("FASTMLP_BACKGROUND_COMPILE", "1")

    def refuse(*args, **kwargs):
        raise OSError("no processes left")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    assert not jit_cache.start_background("numba", "float32")
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert FastMLP(max_iter=1).fit(X, y).score(X, y) > 0


def test_markers_follow_the_sources_and_the_cpu_target(cache, monkeypatch):
    jit_cache.mark_ready("numba", "float32")
    jit_cache._ready_here.clear()
    assert jit_cache.ready("numba", "float32")
    jit_cache._ready_here.clear()  # as in a new process
    # code compiled for another CPU target is not this one's
    monkeypatch.setenv("NUMBA_CPU_NAME", "generic")
    jit_cache.target_key.cache_clear()
    try:
        assert not jit_cache.ready("numba", "float32")
    finally:
        monkeypatch.delenv("NUMBA_CPU_NAME")
        jit_cache.target_key.cache_clear()
    # other sources: another folder, and the folder of the old ones is deleted
    old = jit_cache.code_dir()
    monkeypatch.setattr(jit_cache, "sources_digest", lambda: "0123456789abcdef")
    assert not jit_cache.ready("numba", "float32")
    jit_cache.prepare()
    assert jit_cache.code_dir().is_dir() and not old.exists()


@pytest.mark.skipif("numba" not in available_backends(), reason="numba not installed")
def test_compiled_code_is_never_written_inside_the_package(tmp_path):
    # a new process compiles a small kernel into an empty cache folder
    package = Path(fastmlp.__file__).parent
    start = time.time() - 1
    script = ("from fastmlp.backends import numba_backend as nb\n"
              "print(nb.threading_layer())\n"
              "print(nb.cache_location())\n")
    env = dict(os.environ, FASTMLP_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert Path(out[1]).is_relative_to(tmp_path)
    assert [p.name for p in Path(out[1]).rglob("*.nbi") if "_touch" in p.name]
    written = [p for p in package.rglob("*.nb[ic]") if p.stat().st_mtime >= start]
    assert not written


def test_warmup_command_compiles_each_dtype_once(cache, monkeypatch, capsys):
    import fastmlp.warmup
    from fastmlp.cli import main

    compiled = []

    def fake_warm_up(name, dtype, progress=None):
        compiled.append((name, dtype))
        progress(f"[1/1] {name} {dtype}: step ...")
        jit_cache.mark_ready(name, dtype)
        return 0.5

    monkeypatch.setattr(fastmlp.warmup, "warm_up", fake_warm_up)
    assert main(["warmup", "--dtype", "all"]) == 0
    assert compiled == [(name, d) for name in sorted(RUN_TIME_COMPILED)
                        for d in ("float32", "float64")]
    out = capsys.readouterr().out
    assert "[1/1] numba float32: step ..." in out and "numba float64: compiled in 0.5 s" in out
    assert main(["warmup"]) == 0  # float32 again: nothing to do
    assert len(compiled) == 2
    assert "numba float32: already compiled" in capsys.readouterr().out


@pytest.mark.parametrize("backend_name", [n for n in ("numba", "cython")
                                          if n in available_backends()])
def test_a_few_rows_predict_without_setting_a_thread_limit(backend_name, monkeypatch):
    import fastmlp._predict

    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FastMLP(max_iter=1, backend=backend_name, n_jobs=1).fit(X, y)
    limits = []
    real = fastmlp._predict.thread_limit

    def spy(n_jobs, backend=None):
        limits.append(n_jobs)
        return real(n_jobs, backend)

    monkeypatch.setattr(fastmlp._predict, "thread_limit", spy)
    serial = model._prediction_backend().SERIAL_PREDICT_ROWS
    model.predict(X[:1])
    assert limits == []  # one row runs on the calling thread: nothing to limit
    many = np.tile(X, (serial // X.shape[0] + 1, 1))
    np.testing.assert_array_equal(model.predict(many)[:X.shape[0]], model.predict(X))
    assert limits == [1]  # past SERIAL_PREDICT_ROWS, n_jobs is applied again


@pytest.mark.exhaustive  # numba's whole compile in an empty cache: a minute or two
@pytest.mark.skipif("numba" not in available_backends(), reason="numba not installed")
def test_after_a_warm_up_a_fit_and_predict_compile_nothing(tmp_path):
    script = (
        "import warnings\n"
        "warnings.simplefilter('ignore')\n"
        "from numba.core import event\n"
        "from fastmlp.warmup import warm_up\n"
        "from fastmlp import FastMLP, load_mnist\n"
        "warm_up('numba', 'float32')\n"
        "(X, y), (Xt, yt) = load_mnist()\n"
        "names = []\n"
        "class Seen(event.Listener):\n"
        "    def on_start(self, e):\n"
        "        names.append(e.data['dispatcher'].py_func.__qualname__)\n"
        "    def on_end(self, e):\n"
        "        pass\n"
        "with event.install_listener('numba:compile', Seen()):\n"
        "    m = FastMLP(max_iter=1, learning_rate='cosine').fit(X[:3000], y[:3000])\n"
        "    m.score(Xt, yt)\n"
        "    m.predict(Xt[:1])\n"
        "print(m.backend_, names)\n")
    env = dict(os.environ, FASTMLP_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True,
                         capture_output=True, text=True, timeout=1200).stdout
    assert out.strip().splitlines()[-1] == "numba []"
