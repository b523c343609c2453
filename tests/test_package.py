"""The package's own namespace: its public names, imported when first used."""

import subprocess
import sys

import pytest

import fastmlp


def test_import_alone_imports_no_heavy_module():
    script = ("import sys\n"
              "import fastmlp\n"
              "heavy = ('sklearn', 'scipy', 'numba', 'fastmlp.estimator', 'fastmlp.backends')\n"
              "print(sorted(m for m in heavy if m in sys.modules))\n"
              "fastmlp.FastMLP\n"
              "print('sklearn' in sys.modules, 'fastmlp.estimator' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True True"]


def test_every_public_name_resolves_to_its_definition():
    from fastmlp.backends import available_backends, get_backend
    from fastmlp.datasets import load_idx, load_mnist
    from fastmlp.estimator import FastMLP
    from fastmlp.regressor import FastMLPRegressor

    expected = {"FastMLP": FastMLP, "FastMLPRegressor": FastMLPRegressor,
                "load_mnist": load_mnist, "load_idx": load_idx, "get_backend": get_backend,
                "available_backends": available_backends}
    assert sorted(fastmlp.__all__) == sorted([*expected, "__version__"])
    for name, value in expected.items():
        assert getattr(fastmlp, name) is value
        assert name in dir(fastmlp)
    namespace = {}
    exec("from fastmlp import *", namespace)
    assert namespace["FastMLP"] is FastMLP and namespace["__version__"] == fastmlp.__version__


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'FastMLPClassifier'"):
        fastmlp.FastMLPClassifier
    with pytest.raises(ImportError):
        exec("from fastmlp import FastMLPClassifier", {})
