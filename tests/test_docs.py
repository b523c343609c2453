"""The documentation's promises that a test can keep: every public name has a reference
entry and a docstring with an example, the README stays an introduction, and no link
between the Markdown pages points at a file that is not there. The site itself is built
by CI with warnings as errors (``sphinx-build -W``), which runs the examples."""

import re
from pathlib import Path

import pytest

import fastmlp

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytestmark = pytest.mark.skipif(not DOCS.is_dir(), reason="not run from a source checkout")

PUBLIC = sorted(name for name in fastmlp.__all__ if name != "__version__")


def _autosummary_entries(text):
    """The names listed under the ``autosummary`` directives of an rst page."""
    names, inside = [], False
    for line in text.splitlines():
        if line.startswith(".. autosummary::"):
            inside = True
            continue
        if inside and line and not line.startswith(" "):
            inside = False
        if inside and line.strip() and not line.strip().startswith(":"):
            names.append(line.strip())
    return names


def test_every_public_name_has_a_reference_entry():
    from fastmlp import datasets

    entries = _autosummary_entries((DOCS / "api.rst").read_text())
    assert sorted(set(entries) & set(PUBLIC)) == PUBLIC
    # the data module's functions too (its one constant, MNIST_FILES, is not a page)
    functions = sorted(n for n in datasets.__all__ if callable(getattr(datasets, n)))
    assert sorted(set(entries) & set(functions)) == functions
    assert len(entries) == len(set(entries)), "a name is listed twice"
    for name in functions:
        assert "Returns\n" in getattr(datasets, name).__doc__, name


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_a_numpydoc_docstring_with_an_example(name):
    doc = getattr(fastmlp, name).__doc__ or ""
    assert re.search(r"^\s*Examples\n\s*-{8}", doc, re.M), f"{name} has no Examples section"
    assert ">>> " in doc
    if name not in ("available_backends",):  # the one public name that takes nothing
        assert re.search(r"^\s*Parameters\n\s*-{10}", doc, re.M), f"{name}: no Parameters"


def test_every_command_of_the_cli_is_described_for_the_reference():
    """The reference renders the parser's own help (docs/cli_reference.py), so every
    command needs a description and every option a help text or a list of choices."""
    import argparse

    from fastmlp.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert {"train", "info", "warmup", "compare", "deform"} <= set(sub.choices)
    for name, command in sub.choices.items():
        assert helps.get(name), f"fastmlp {name} has no description"
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help or action.choices, f"fastmlp {name} {action.dest}: no help"
    assert ".. fastmlp-cli::" in (DOCS / "api.rst").read_text()


def test_the_readme_is_an_introduction():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    # the two commands a newcomer needs, exactly as CI runs the second
    assert "pip install . && fastmlp train" in readme
    assert 'pip install -e ".[test]" && pytest' in readme
    assert 'pip install -e ".[test]" && pytest' in (ROOT / ".ci" / "run").read_text()


def _markdown_files():
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md",
            *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_that_exist(page):
    text = page.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    missing = []
    for link in links:
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue  # an address outside the repository, or an anchor on the page
        target = (page.parent / link.split("#")[0]).resolve()
        if not target.exists():
            missing.append(link)
    assert not missing, f"{page.name} links to missing files: {missing}"
