"""Sphinx configuration for the triomq documentation.

Build (warnings are errors, as in CI)::

    python -m sphinx -W -b html docs docs/_build/html
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document this checkout, installed or not

import triomq  # noqa: E402

project = "triomq"
author = "the triomq authors"
copyright = "the triomq authors"
version = release = triomq.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings use Google style (Args:, Raises:)
    "sphinx.ext.viewcode",
]

# .md files (architecture.md, multicast.md) are read on GitHub, and included
# literally where the docs need them; Sphinx itself only reads .rst
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build"]
root_doc = "index"

html_theme = "alabaster"  # ships with Sphinx: no extra dependency
html_theme_options = {
    "description": "ZeroMQ for Trio, in pure Python",
    "fixed_sidebar": True,
    "page_width": "1140px",
    "sidebar_width": "240px",
}
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"undoc-members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

highlight_language = "python3"


_ENDPOINT = re.compile(r"\b(?:tcp|tls|ipc|inproc|epgm|pgm)://[^\s,;)]*")


def _quote_endpoints(
    app: object, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """Bare endpoints in docstrings and ``#:`` comments (``tcp://*``) become literals.

    Otherwise reST reads the ``*`` as the start of emphasis, and napoleon reads
    ``tcp:`` in an attribute comment as a type. Runs before napoleon.
    """
    for i, line in enumerate(lines):
        parts = line.split("``")
        parts[::2] = [_ENDPOINT.sub(lambda m: f"``{m.group(0)}``", part) for part in parts[::2]]
        lines[i] = "``".join(parts)


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _quote_endpoints, priority=100)
