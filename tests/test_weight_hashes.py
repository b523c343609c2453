"""Refactors keep every weight bit for bit: fixed fits against hashes recorded on a commit
known to be right (see weight_hashes.py). One case per backend runs by default; the
whole grid (2 networks x 2 solvers x 2 dtypes x 1 and 2 threads) under -m exhaustive."""

import pytest

from .weight_hashes import cases, fit_hash, platform_key, recorded

QUICK = "784-128-10/adam/float32/1t"
_TABLE = recorded().get(platform_key())


def _params():
    for case, kwargs in cases():
        marks = [] if case == QUICK else [pytest.mark.exhaustive]
        yield pytest.param(case, kwargs, marks=marks, id=case)


@pytest.mark.skipif(_TABLE is None, reason=f"no weight hashes recorded for {platform_key()}; "
                    "record them on a known-good commit: python -m tests.weight_hashes --record")
@pytest.mark.parametrize("case, kwargs", list(_params()))
def test_fixed_fit_weights_are_unchanged(backend_name, case, kwargs):
    key = f"{backend_name}/{case}"
    if key not in _TABLE:
        pytest.skip(f"no hash recorded for {key}")
    assert fit_hash(backend_name, kwargs) == _TABLE[key], (
        f"the weights of the fixed fit {key} changed: a change altered results")
