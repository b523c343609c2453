"""A directive that writes the ``fastmlp`` command's reference from its own parser.

``.. fastmlp-cli::`` renders the help of ``fastmlp`` and of each of its commands as
``fastmlp.cli.build_parser`` defines them, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


class FastmlpCli(SphinxDirective):
    has_content = False

    def run(self):
        from fastmlp.cli import build_parser

        parser = build_parser()
        out = [_block(_help(parser, "fastmlp"))]
        for name, sub in _subcommands(parser):
            section = nodes.section(ids=[f"cli-{name}"])
            section += nodes.title(text=f"fastmlp {name}")
            section += _block(_help(sub, f"fastmlp {name}"))
            out.append(section)
        return out


def _block(text: str) -> nodes.literal_block:
    block = nodes.literal_block(text=text)
    block["language"] = "text"  # help text, not code to highlight
    return block


def _help(parser: argparse.ArgumentParser, prog: str) -> str:
    parser.prog = prog
    # argparse wraps at the terminal's width; a fixed one keeps the page the same
    # whichever terminal built it
    width = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"
    try:
        return parser.format_help()
    finally:
        if width is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = width


def setup(app):
    app.add_directive("fastmlp-cli", FastmlpCli)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
