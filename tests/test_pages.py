"""The parameters' huge-page copy for prediction (fastmlp/backends/pages.py): the same
values at a 2 MB boundary, made only where it pays and where the system allows it, and
predictions bit for bit those made from the caller's array."""

import mmap

import numpy as np
import pytest
import scipy.sparse as sp

from fastmlp import FastMLP
from fastmlp.backends import get_backend, pages
from fastmlp.backends.codes import RELU
from fastmlp.backends.layout import n_params

from .conftest import COMPILED_PARAMS

needs_huge_pages = pytest.mark.skipif(not pages.huge_pages_available(),
                                      reason="no transparent huge pages on this system")


@needs_huge_pages
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_copy_holds_the_values_on_a_huge_page_boundary(dtype):
    a = np.random.default_rng(0).standard_normal(300_001).astype(dtype)
    kept = a.copy()
    b = pages.huge_page_copy(a)
    assert b is not a and b.dtype == a.dtype and b.shape == a.shape
    assert b.ctypes.data % pages.HUGE_PAGE_BYTES == 0
    assert b.flags.c_contiguous and b.flags.writeable
    np.testing.assert_array_equal(b.view(np.uint8), kept.view(np.uint8))
    assert pages.on_huge_pages(b) and not pages.on_huge_pages(a)
    # a copy is not copied again, and writing to it leaves the original alone
    assert pages.huge_page_copy(b) is b
    b[0] += 1
    np.testing.assert_array_equal(a, kept)


@needs_huge_pages
def test_copy_outlives_every_other_reference():
    b = pages.huge_page_copy(np.arange(100_000, dtype=np.float32))
    view = b[10:20]
    del b
    np.testing.assert_array_equal(view, np.arange(10, 20, dtype=np.float32))


def test_no_copy_without_huge_pages(monkeypatch):
    monkeypatch.setattr(pages, "huge_pages_available", lambda: False)
    a = np.zeros(1_000_000, dtype=np.float32)
    assert pages.huge_page_copy(a) is a
    assert pages.predict_params(a, 10**6) is a


def test_the_setting_is_read(monkeypatch, tmp_path):
    setting = tmp_path / "enabled"
    monkeypatch.setattr(pages, "_THP_SETTING", str(setting))
    for text, expected in [("always [madvise] never\n", True), ("[always] madvise never\n", True),
                           ("always madvise [never]\n", False)]:
        setting.write_text(text)
        pages.huge_pages_available.cache_clear()
        assert pages.huge_pages_available() is expected
    setting.unlink()
    pages.huge_pages_available.cache_clear()
    assert pages.huge_pages_available() is False
    monkeypatch.undo()
    pages.huge_pages_available.cache_clear()


@needs_huge_pages
def test_copied_only_for_many_rows_through_a_large_model():
    large = np.zeros(pages.HUGE_PAGE_MIN_BYTES // 4, dtype=np.float32)
    small = np.zeros(pages.HUGE_PAGE_MIN_BYTES // 4 - 1, dtype=np.float32)
    assert pages.predict_params(large, pages.HUGE_PAGE_MIN_ROWS - 1) is large
    assert pages.predict_params(small, 10**6) is small
    copy = pages.predict_params(large, pages.HUGE_PAGE_MIN_ROWS)
    assert copy is not large and pages.on_huge_pages(copy)


def _model(dtype, sizes):
    return (np.random.default_rng(1).standard_normal(n_params(sizes)) * 0.05).astype(dtype)


@pytest.mark.parametrize("backend", COMPILED_PARAMS)
@pytest.mark.parametrize("sizes", [(400, 176, 7), (400, 160, 64, 7)])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_predictions_are_the_same_bits_from_either_copy(backend, sizes, sparse, monkeypatch):
    """Enough rows and parameters for the copy (where the system allows it), predicted
    with it and with the caller's array."""
    be = get_backend(backend)
    sizes = np.array(sizes)
    params = _model(np.float32, sizes)
    assert params.nbytes >= pages.HUGE_PAGE_MIN_BYTES
    rng = np.random.default_rng(2)
    X = (rng.random((pages.HUGE_PAGE_MIN_ROWS + 3, sizes[0])) < 0.2) * rng.random(
        (pages.HUGE_PAGE_MIN_ROWS + 3, sizes[0]))
    X = X.astype(np.float32)
    X = sp.csr_matrix(X) if sparse else X
    with_copy = np.empty((X.shape[0], sizes[-1]), np.float32)
    be.predict_proba(with_copy, X, params, sizes, RELU)
    monkeypatch.setattr(pages, "HUGE_PAGE_MIN_ROWS", 10**9)
    without = np.empty_like(with_copy)
    be.predict_proba(without, X, params, sizes, RELU)
    np.testing.assert_array_equal(with_copy.view(np.uint32), without.view(np.uint32))
    reference = np.empty_like(with_copy)
    get_backend("numpy").predict_proba(reference, X, params, sizes, RELU)
    np.testing.assert_allclose(with_copy, reference, rtol=2e-4, atol=2e-6)


def test_estimator_predicts_the_same_from_either_copy(monkeypatch):
    rng = np.random.default_rng(3)
    X = rng.random((1500, 600)).astype(np.float32)
    y = rng.integers(0, 4, 1500)
    clf = FastMLP(hidden_layer_sizes=(128,), max_iter=2, random_state=0).fit(X, y)
    assert clf._params.nbytes >= pages.HUGE_PAGE_MIN_BYTES
    proba = clf.predict_proba(X)
    monkeypatch.setattr(pages, "HUGE_PAGE_MIN_ROWS", 10**9)
    np.testing.assert_array_equal(proba, clf.predict_proba(X))
    # uint8 input goes through by blocks of rows, all reading the one copy
    X8 = (X * 255).astype(np.uint8)
    monkeypatch.undo()
    by_blocks = clf.predict_proba(X8)
    monkeypatch.setattr(pages, "HUGE_PAGE_MIN_ROWS", 10**9)
    np.testing.assert_array_equal(by_blocks, clf.predict_proba(X8))


def _vm_flags(a):
    """The VmFlags of the mapping that holds the middle of ``a`` (/proc/self/smaps): "hg"
    for memory advised for huge pages, "nh" for memory advised against them."""
    address, mapped, flags = a.ctypes.data + a.nbytes // 2, False, None
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split()[0]
            if "-" in first and all(c in "0123456789abcdef-" for c in first):
                start, stop = (int(v, 16) for v in first.split("-"))
                mapped = start <= address < stop
            elif mapped and first == "VmFlags:":
                flags = line.split()[1:]
    return flags


@pytest.mark.parametrize("dtype", [np.int32, np.float64])
def test_small_page_arrays_hold_what_is_written(dtype):
    n = pages.SMALL_PAGE_MIN_BYTES // np.dtype(dtype).itemsize + 3
    a = pages.small_page_empty(n, dtype)
    assert a.shape == (n,) and a.dtype == dtype and a.flags.writeable and a.flags.c_contiguous
    a[:] = np.arange(n) % 1000
    view = a[-10:]
    del a
    np.testing.assert_array_equal(view, np.arange(n - 10, n) % 1000)
    # below NumPy's own huge-page size, no advice
    small = pages.small_page_empty(100, dtype)
    assert small.shape == (100,)
    assert pages.small_page_empty(0, dtype).shape == (0,)


@needs_huge_pages
def test_small_page_arrays_are_advised_against_huge_pages():
    # the advice is the promise: memory the allocator hands back already on huge pages
    # stays there (and is cheap to touch); fresh memory is faulted in on small pages
    if not hasattr(mmap, "MADV_NOHUGEPAGE"):
        pytest.skip("no madvise(MADV_NOHUGEPAGE) on this system")
    try:
        open("/proc/self/smaps").close()
    except OSError:
        pytest.skip("no /proc/self/smaps")
    asked = pages.huge_page_empty(8 * pages.HUGE_PAGE_BYTES, np.uint8)
    if not _vm_flags(asked) or "hg" not in _vm_flags(asked):
        pytest.skip("this kernel does not show madvise's flags in /proc/self/smaps")
    a = pages.small_page_empty(8 * pages.HUGE_PAGE_BYTES, np.uint8)
    assert "nh" in _vm_flags(a)
    assert "nh" not in _vm_flags(asked)
