"""The adaptive thread team of default-thread fits (threads.AdaptiveTeam): its choices
from measured part times, and that the choice never changes a bit of the model."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP, load_mnist
from fastmlp import threads as threads_module
from fastmlp.threads import AdaptiveTeam, adaptive_team


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _run(team, seconds_per_row):
    """One part, costing seconds_per_row(threads) a row; returns (threads, rows)."""
    threads, rows = team.next_part()
    team.record(threads, rows, rows * seconds_per_row(threads) + team.call_seconds)
    return threads, rows


class _Machine:
    """Stands in for OtherProcesses: the cores other processes keep busy."""

    busy = 0.0

    def cores(self):
        return self.busy


def test_the_team_leaves_a_core_to_another_process_and_takes_it_back(monkeypatch):
    monkeypatch.setattr(threads_module, "_affinity_count", lambda: 2)
    team = AdaptiveTeam(2, None, batch_size=64)
    team._others = machine = _Machine()
    assert team.next_part() == (2, 4 * 64)  # a short first part
    alone = {1: 1 / 150_000, 2: 1 / 260_000}.get
    ran = [_run(team, alone) for _ in range(40)]
    # the calibration: a part on one thread, one as long on both; both win clearly
    assert [t for t, _ in ran[:3]] == [2, 1, 2] and ran[1][1] == ran[2][1]
    assert team.solo is False
    # a quiet machine: the full team, no probe, parts of about PART_SECONDS at once
    assert all(t == 2 for t, _ in ran[2:]) and team.probes == 0
    assert ran[-1][1] == int(260_000 * AdaptiveTeam.PART_SECONDS) // 64 * 64
    # another process takes a core: the team collapses; the sharp slowdown makes it
    # look at once, a one-thread probe wins, and it stays on one thread. (The next
    # scheduled look is put off by a part, so that it is the slowdown that makes the
    # team look: the schedule's random wait could otherwise fall due on this very part,
    # and the probe would come one part early.)
    team.wait = max(team.wait, 2)
    machine.busy = 1.0
    shared = {1: 1 / 140_000, 2: 1 / 2_000}.get
    ran = [_run(team, shared) for _ in range(3)]
    assert ran[0][0] == 2 and ran[1][0] == 1 and team.threads == 1 and team.switches == 1
    ran = [_run(team, shared) for _ in range(300)]
    assert all(t == 1 for t, _ in ran)  # the full team is not tried while others work
    assert team.probes == 1
    # parts on one thread grow back, at most doubling, to about PART_SECONDS
    assert ran[-1][1] == int(140_000 * AdaptiveTeam.PART_SECONDS) // 64 * 64
    # the other process ends: at the next look the full team runs again
    machine.busy = 0.0
    ran = [_run(team, alone) for _ in range(2 * AdaptiveTeam.PROBE_MAX + 1)]
    assert team.threads == 2 and team.switches == 2 and ran[-1][0] == 2


def test_a_probe_that_loses_keeps_the_full_team(monkeypatch):
    monkeypatch.setattr(threads_module, "_affinity_count", lambda: 2)
    team = AdaptiveTeam(2, None, batch_size=64)
    team._others = machine = _Machine()
    machine.busy = 1.0  # busy, but the full team is still much faster (say 4 cores)
    fast = {1: 1 / 100_000, 2: 1 / 190_000}.get
    ran = [_run(team, fast) for _ in range(50)]
    assert team.threads == 2 and team.switches == 0 and team.probes >= 3
    assert sum(t == 1 for t, _ in ran) == team.probes + 1  # and the calibration's part


@pytest.mark.parametrize("one, two, solo", [(150_000, 160_000, True),
                                            (150_000, 140_000, True),
                                            (150_000, 180_000, False)])
def test_a_second_thread_is_kept_only_where_it_pays(monkeypatch, one, two, solo):
    # a small network: a mini-batch holds too little work for two threads to meet over
    monkeypatch.setattr(threads_module, "_affinity_count", lambda: 2)
    team = AdaptiveTeam(2, None, batch_size=128)
    team._others = _Machine()  # quiet throughout
    speed = {1: 1 / one, 2: 1 / two}.get
    ran = [_run(team, speed) for _ in range(60)]
    assert team.solo is solo
    assert [t for t, _ in ran[:3]] == [2, 1, 2]
    # after the calibration, every part runs on the team it chose, and none is a probe
    assert {t for t, _ in ran[3:]} == {1 if solo else 2} and team.probes == 0
    rate = one if solo else two
    assert ran[-1][1] == int(rate * AdaptiveTeam.PART_SECONDS) // 128 * 128


def test_one_thread_stays_while_others_work_and_the_machine_quiets(monkeypatch):
    monkeypatch.setattr(threads_module, "_affinity_count", lambda: 2)
    team = AdaptiveTeam(2, None, batch_size=64)
    team._others = machine = _Machine()
    small = {1: 1 / 150_000, 2: 1 / 150_000}.get
    [_run(team, small) for _ in range(5)]
    assert team.solo and team.threads == 1
    machine.busy = 1.0
    assert all(t == 1 for t, _ in (_run(team, small) for _ in range(100)))
    machine.busy = 0.0
    assert all(t == 1 for t, _ in (_run(team, small) for _ in range(200)))
    assert team.probes == 0


def test_only_default_threads_on_thread_invariant_backends_adapt(monkeypatch):
    from fastmlp.backends import get_backend

    monkeypatch.setattr(threads_module, "default_threads", lambda: (2, "test"))
    numpy = get_backend("numpy")
    numba = get_backend("numba")
    assert isinstance(adaptive_team(None, numba, 64), AdaptiveTeam)  # with work_blocks
    assert adaptive_team(2, numba, 64) is None and adaptive_team(1, numba, 64) is None
    assert adaptive_team(None, numpy, 64) is None  # BLAS's sums follow its threads
    monkeypatch.setattr(threads_module, "default_threads", lambda: (1, "test"))
    assert adaptive_team(None, numba, 64) is None


def test_switching_threads_changes_no_bit(compiled_backend, monkeypatch):
    backend_name = compiled_backend.NAME
    (X, y), _ = load_mnist()
    X, y = X[:3000], y[:3000]
    kw = dict(hidden_layer_sizes=(32, 16), max_iter=2, random_state=0, backend=backend_name)
    one = FastMLP(**kw, n_jobs=1).fit(X, y)
    two = FastMLP(**kw, n_jobs=2).fit(X, y)
    # every probe wins, so the team switches between 1 and 2 threads part after part
    monkeypatch.setattr(threads_module, "default_threads", lambda: (2, "test"))
    # every look finds others busy and every one-thread probe wins, then the machine
    # is quiet again: the team switches between 1 and 2 threads part after part
    looks = iter([1.0, 0.0] * 1000)
    monkeypatch.setattr(threads_module.OtherProcesses, "cores", lambda self: next(looks))
    monkeypatch.setattr(AdaptiveTeam, "GAIN", 1e9)
    monkeypatch.setattr(AdaptiveTeam, "PROBE_MAX", 1)
    monkeypatch.setattr(threads_module, "_affinity_count", lambda: 2)
    # parts of a batch or two, so that a short fit has many
    monkeypatch.setattr(AdaptiveTeam, "PART_SECONDS", 1e-5)
    monkeypatch.setattr(AdaptiveTeam, "CALL_SECONDS", 0.0)
    monkeypatch.setattr(AdaptiveTeam, "CALL_SECONDS_PER_PARAM", 0.0)
    monkeypatch.setattr(AdaptiveTeam, "CALIBRATION_SECONDS", 1e-5)
    # this small network's batches are worth splitting here, so that the team runs
    monkeypatch.setattr(compiled_backend, "SMALL_BATCH_WORK", 0, raising=False)
    counts = []
    record = AdaptiveTeam.record

    def spy(self, threads, rows, seconds):
        counts.append(threads)
        record(self, threads, rows, seconds)

    monkeypatch.setattr(AdaptiveTeam, "record", spy)
    adaptive = FastMLP(**kw).fit(X, y)
    assert {1, 2} <= set(counts) and len(counts) > 10
    # the bits of a fit on the full team (numba's blocks stay those of 2 threads)
    np.testing.assert_array_equal(adaptive._params, two._params)
    assert adaptive.loss_curve_ == two.loss_curve_
    if compiled_backend.THREAD_INVARIANT:
        np.testing.assert_array_equal(one._params, two._params)
