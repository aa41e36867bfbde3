"""The Sphinx documentation builds with warnings as errors, and covers the public API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import triomq

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install sphinx)")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr or result.stdout
    for page in ("index", "tutorial", "api", "cancellation", "pyzmq", "patterns/pubsub"):
        assert (tmp_path / "html" / f"{page}.html").is_file()


def test_api_reference_lists_every_public_name() -> None:
    api = (DOCS / "api.rst").read_text()
    constants = {t.name for t in triomq.SocketType}
    public = [
        name
        for name in dir(triomq)
        if not name.startswith("_")
        and name not in constants
        and name != "auth"
        and not isinstance(getattr(triomq, name), type(triomq))
    ]
    missing = [name for name in public if f":: {name}" not in api]
    assert not missing, f"add these to docs/api.rst: {missing}"


def test_examples_page_includes_every_example() -> None:
    page = (DOCS / "examples.rst").read_text()
    missing = [
        p.name for p in (ROOT / "examples").glob("*.py") if f"../examples/{p.name}" not in page
    ]
    assert not missing, f"add these to docs/examples.rst: {missing}"


def test_pyzmq_options_table_names_only_real_options() -> None:
    """Every lower-case name in the triomq column of "Coming from pyzmq"'s
    options table is a SocketOptions field (it listed one that had gone)."""
    page = (DOCS / "pyzmq.rst").read_text()
    table = page.split("\nOptions\n-------\n", 1)[1].split("\nErrors\n------\n", 1)[0]
    # the triomq column: each row's second item and its continuation lines
    column = re.findall(r"^     - (.*(?:\n       .*)*)", table, flags=re.MULTILINE)
    names = {n for cell in column for n in re.findall(r"``([a-z][a-z0-9_]*)``", cell)}
    names.discard("open_socket")  # (the column's heading)
    assert len(names) > 30
    unknown = sorted(names - set(attrs.fields_dict(triomq.SocketOptions)))
    assert not unknown, f"docs/pyzmq.rst lists options that do not exist: {unknown}"
