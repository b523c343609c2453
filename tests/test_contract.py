"""Every registered backend provides exactly the kernels of fastmlp/backends/contract.py,
with the declared parameters, and the constants the compiled code depends on agree."""

import inspect

import numpy as np
import pytest

from fastmlp.backends import REFERENCE, backend_names, codes, contract, get_backend, layout


def _declared_parameters(spec):
    """[(name, default or inspect.Parameter.empty)] of a contract entry."""
    out = []
    for part in spec.split(","):
        name, _, default = part.strip().partition("=")
        out.append((name, eval(default, vars(codes)) if default else inspect.Parameter.empty))
    return out


def _parameters(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


def _public_callables(module):
    return {name for name in dir(module)
            if not name.startswith("_") and callable(getattr(module, name))
            and not isinstance(getattr(module, name), type)
            and _defined_in(module, getattr(module, name))}


def _defined_in(module, obj):
    # what a backend module imported for its own use (np.dot, a helper of
    # fastmlp.backends.checks) is not part of what it offers
    home = getattr(obj, "__module__", None) or ""
    return home.startswith(module.__name__) or home.endswith("._cykernels")


def test_the_contract_declares_every_kernel_once():
    assert len(contract.KERNELS) == len(set(contract.KERNELS))
    assert set(contract.kernel_names(contract.ESTIMATOR)) == {
        "prepare_inputs", "train_epoch", "loss_and_grad", "predict_proba"}
    assert set(contract.kernel_names()) == (set(contract.kernel_names(contract.ESTIMATOR))
                                            | set(contract.kernel_names(contract.SUPPORT)))


def test_registry_finds_every_backend_module():
    assert backend_names()[0] == REFERENCE
    assert {"numpy", "numba", "cython"} <= set(backend_names())


def test_backend_provides_exactly_the_contract(backend_name, backend):
    offered = _public_callables(backend) - set(contract.EXTRAS)
    assert offered == set(contract.KERNELS), (
        f"{backend_name}: missing {sorted(set(contract.KERNELS) - offered)}, "
        f"beyond the contract {sorted(offered - set(contract.KERNELS))}")


@pytest.mark.parametrize("kernel", list(contract.KERNELS))
def test_kernel_signature(backend, kernel):
    declared = _declared_parameters(contract.KERNELS[kernel].params)
    assert _parameters(getattr(backend, kernel)) == declared


def test_backend_constants(backend_name, backend):
    for name, kind in contract.CONSTANTS.items():
        assert isinstance(getattr(backend, name), kind), name
    assert backend.NAME == backend_name


def test_optimizer_record_fields():
    # the compiled code reads the record by position
    assert codes.OptimizerStep._fields == ("solver", "lr", "momentum", "nesterov", "beta1",
                                            "beta2", "eps", "lr_t", "schedule", "seen",
                                            "horizon", "lazy", "weight_decay", "keep_t",
                                            "max_norm", "dropout", "drop_seed", "batch")
    step = codes.optimizer_step(codes.ADAM, 1, weight_decay=0.5)
    assert (type(step.solver), type(step.lr), type(step.nesterov)) == (int, float, bool)
    # only AdamW decays; the epoch sets keep_t before every batch
    assert (step.lazy, step.weight_decay, step.keep_t) == (False, 0.0, 1.0)
    lazy = codes.optimizer_step(codes.LAZY_ADAM, 1)
    adamw = codes.optimizer_step(codes.ADAMW, 1, weight_decay=0.5)
    # the kernels know one Adam: the lazy one and AdamW are Adam with a field set
    assert (lazy.solver, lazy.lazy) == (codes.ADAM, True)
    assert (adamw.solver, adamw.lazy, adamw.weight_decay) == (codes.ADAM, False, 0.5)
    assert codes.decay_keep(0.1, 0.5) == 0.95 and codes.decay_keep(0.1, 0.0) == 1.0
    # whatever numbers a record was built from, the kernels see one signature
    loose = codes.OptimizerStep(np.int64(1), np.float32(0.5), 1, np.bool_(False), 0.9, 0.999,
                                1e-8, 0, np.int32(2), 3, 7, 0, np.float32(0.25), 1, 2,
                                np.float64(0.5), np.int64(12), 640)
    typed = codes.typed_step(loose)
    assert typed == loose
    assert [type(x) for x in typed] == [int, float, float, bool, float, float, float, float,
                                        int, float, float, bool, float, float, float, float,
                                        int, float]


def _extension():
    if "cython" not in backend_names():
        pytest.skip("no cython backend")
    try:
        get_backend("cython")
    except ImportError as exc:
        pytest.skip(str(exc))
    from fastmlp.backends import _cykernels

    return _cykernels


def test_extension_constants_agree_with_python():
    ext = _extension()
    assert ext.VECTOR_BYTES == layout.VECTOR_BYTES
    assert {name: ext.ACTIVATION_CODES[name] for name in codes.ACTIVATIONS} == codes.ACTIVATIONS
    assert ext.SOLVER_CODES == codes.SOLVERS
    assert ext.OUTPUT_CODES == codes.OUTPUTS
    assert ext.SCHEDULE_CODES == codes.SCHEDULES
    for dtype in (np.float32, np.float64):
        assert ext.vector_lanes(np.dtype(dtype).itemsize) == (
            layout.VECTOR_BYTES // np.dtype(dtype).itemsize)


def test_extension_reads_the_optimizer_record_field_by_field():
    # the extension reads codes.OptimizerStep by position into a struct of its own: every
    # field, given a value of its own, must land in the struct's field of the same name
    ext = _extension()
    opt = codes.OptimizerStep(solver=2, lr=0.5, momentum=0.25, nesterov=True, beta1=0.125,
                              beta2=0.0625, eps=0.03125, lr_t=0.015625, schedule=1,
                              seen=3.0, horizon=7.0, lazy=False, weight_decay=0.0078125,
                              keep_t=0.75, max_norm=3.5, dropout=0.375, drop_seed=2**40 + 9,
                              batch=1280.0)
    assert ext.optimizer_step_fields(opt) == opt._asdict()
    flipped = opt._replace(nesterov=False, lazy=True)
    assert ext.optimizer_step_fields(flipped) == flipped._asdict()


def test_backends_offer_their_description_and_checks_through_the_contract():
    # what a backend offers beyond the kernels is an optional part of the contract, so
    # that nothing above the registry needs to name a backend
    for name in backend_names():
        try:
            backend = get_backend(name)
        except ImportError:
            continue
        describe = getattr(backend, "describe", None)
        if describe is not None:
            assert isinstance(describe(), str) and describe()
        all_finite = getattr(backend, "all_finite", None)
        if all_finite is not None:
            X = np.ones((4, 3), np.float32)
            assert all_finite(X) is True or all_finite(X) == 1
            X[2, 1] = np.nan
            assert not all_finite(X)


def test_numba_vector_width_agrees_with_layout():
    if "numba" not in backend_names():
        pytest.skip("no numba backend")
    try:
        nb = get_backend("numba")
    except ImportError as exc:
        pytest.skip(str(exc))
    from fastmlp.backends.numba_backend import intrinsics

    for dtype in (np.float32, np.float64):
        assert intrinsics.vector_lanes(np.zeros(1, dtype)) == (
            layout.VECTOR_BYTES // np.dtype(dtype).itemsize), nb.NAME


def test_design_page_summarises_the_contract():
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "design.md"
    if not page.exists():
        pytest.skip("not run from a source checkout")
    assert contract.summary() in page.read_text(), (
        "docs/design.md's kernel contract section must show contract.summary(); "
        "paste it again")
