"""Sphinx configuration of fastmlp's documentation.

Build it with ``sphinx-build -W -b html docs docs/_build/html`` after
``pip install -e ".[docs]"``. The examples in ``examples/`` run during the build
(sphinx-gallery) at a small size, so their figures are those of the code as it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import fastmlp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

project = "fastmlp"
author = "The fastmlp developers"
copyright = "the fastmlp developers"
release = fastmlp.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "cli_reference",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py.md5",
                    "auto_examples/*.zip", "**/*.codeobj.json"]
root_doc = "index"

# API reference: numpydoc renders the docstrings; every public name has a page.
autosummary_generate = True
autodoc_default_options = {
    "members": True,
    # what the shared base class gives both estimators (save, load, summary, ...), but
    # not scikit-learn's own BaseEstimator methods, which scikit-learn documents
    "inherited-members": "BaseEstimator",
    # scikit-learn's metadata-routing setters, generated on every estimator and
    # documented by scikit-learn itself
    "exclude-members": "set_fit_request,set_partial_fit_request,set_score_request,"
                       "get_metadata_routing",
}
numpydoc_show_class_members = False
numpydoc_validation_checks = {"GL08"}  # a public name without a docstring fails the build
numpydoc_validation_exclude = {r"\.__init__$"}  # parameters are in the class docstring
numpydoc_xref_param_type = False

intersphinx_mapping = {}  # the build needs no network

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
suppress_warnings = ["myst.xref_missing"]

# The examples run at build time with their small defaults; the backend is left to
# "auto", so a build never waits for numba's compile.
os.environ.setdefault("FASTMLP_BACKGROUND_COMPILE", "0")
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    # the two plain scripts (run by the tests and by hand) are not gallery pages
    "ignore_pattern": r"(xor|mnist_quickstart)\.py$",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
}

html_theme = "pydata_sphinx_theme"
html_title = f"fastmlp {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
