"""The ``triomq`` command: demo, cat-style socket tools, keygen, proxy, bench."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "demo":
        from ._demo import main as demo_main

        return demo_main(args[1:])
    print("usage: triomq demo [--duration S] [--servers N]", file=sys.stderr)
    return 2
