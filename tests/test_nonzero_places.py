"""The scan for the non-zero inputs of a dense row (inline.nonzero_places_f), eight values
at a time through compress_places: the places it finds are exactly NumPy's, in order,
for every length (whole groups of eight and a remainder), for values that look like
zero and are not (NaN, -0.0, the smallest subnormal), and it writes nothing outside the
row's own places."""

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from fastmlp.backends.numba_backend._config import U  # noqa: E402
from fastmlp.backends.numba_backend.inline import nonzero_places_f  # noqa: E402
from fastmlp.backends.numba_backend.intrinsics import (  # noqa: E402
    MASK_LANES,
    MASK_PLACES,
    compress_places,
)


@numba.njit
def _places(places, po, x, xo, n):
    return nonzero_places_f(places, U(po), x, U(xo), U(n))


@numba.njit
def _compress(places, at, x, xo, j):
    return compress_places(places, U(at), x, U(xo), U(j), MASK_PLACES)


def _expected(x):
    # NaN and infinity are non-zero; -0.0 is zero
    return np.flatnonzero(x != 0).astype(np.int32)


SENTINEL = -7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 784])
@pytest.mark.parametrize("density", [0.0, 0.2, 0.5, 1.0])
def test_places_are_numpys_for_every_length(dtype, n, density):
    rng = np.random.default_rng(n * 10 + int(density * 10))
    xo, po = 5, 3  # the row starts inside x, its places inside the buffer
    x = np.zeros(xo + n + 4, dtype=dtype)
    row = rng.standard_normal(n).astype(dtype) * (rng.random(n) < density)
    x[xo:xo + n] = row
    x[:xo] = 1.0  # non-zero values around the row must not be counted
    x[xo + n:] = 1.0
    places = np.full(po + n + 16, SENTINEL, dtype=np.int32)
    count = _places(places, po, x, xo, n)
    expected = _expected(row)
    assert count == expected.size
    np.testing.assert_array_equal(places[po:po + count], expected)
    # nothing before the row's places, nor at or beyond places[po + n]
    assert (places[:po] == SENTINEL).all()
    assert (places[po + n:] == SENTINEL).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_that_look_like_zero(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    row = np.array([0.0, -0.0, np.nan, tiny, -tiny, np.inf, -np.inf, 0.0,
                    -0.0, 0.0, 1.0, 0.0, np.nan, 0.0, 0.0, -0.0, 2.0], dtype=dtype)
    places = np.full(row.size, SENTINEL, dtype=np.int32)
    count = _places(places, 0, row, 0, row.size)
    np.testing.assert_array_equal(places[:count], [2, 3, 4, 5, 6, 10, 12, 16])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_every_group_of_eight(dtype):
    # all 256 patterns of non-zero values in one group, read from a 2-D C-contiguous array
    # whose row 5 + m holds pattern m: the group at place j = 40 of a row starting at
    # flat offset 8 * m (rows 0-4 are non-zero, and must not be read)
    bits = np.arange(256)[:, None] >> np.arange(MASK_LANES) & 1
    x = np.vstack([np.ones((5, MASK_LANES)), bits * 3]).astype(dtype)
    for m in range(256):
        places = np.full(2 * MASK_LANES, SENTINEL, dtype=np.int32)
        count = _compress(places, 4, x, m * MASK_LANES, 40)
        expected = 40 + np.flatnonzero(bits[m])
        assert count == expected.size, m
        np.testing.assert_array_equal(places[4:4 + count], expected)
        # all eight places are written (the rest of the table's row), none beyond them
        assert (places[4:4 + MASK_LANES] != SENTINEL).all()
        assert (places[:4] == SENTINEL).all() and (places[4 + MASK_LANES:] == SENTINEL).all()


def test_mask_table():
    for m in (0, 1, 0b10110010, 255):
        expected = [t for t in range(MASK_LANES) if m >> t & 1]
        assert list(MASK_PLACES[m, :len(expected)]) == expected
        assert (MASK_PLACES[m, len(expected):] == 0).all()
