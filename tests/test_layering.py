"""The import rules of docs/architecture.md, checked by parsing every module with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "triomq"

#: layer of each top-level module or subpackage of triomq
LAYERS = {
    # 1. pure: no trio, no I/O
    "_errors": "pure",
    "_socket_type": "pure",
    "_endpoint": "pure",
    "_options": "pure",
    "_auth": "pure",
    "_zmtp": "pure",
    "_mechanisms": "pure",
    "_patterns": "pure",
    "_pgm": "pure",
    "_swap": "pure",
    # 2. transports: trio, but nothing of the engine, patterns or sockets
    "_transports": "transport",
    # 3. engine: trio + pure + transports
    "_engine": "engine",
    # 4. sockets and helpers built on them
    "_socket": "socket",
    "_proxy": "socket",
    "_rpc": "socket",
    "auth": "socket",
    "_cli": "app",
    "_demo": "app",
    "__main__": "app",
    "__init__": "public",
}

ALLOWED = {
    "pure": {"pure"},
    "transport": {"pure", "transport"},
    "engine": {"pure", "transport", "engine"},
    "socket": {"pure", "transport", "engine", "socket"},
    "app": {"pure", "transport", "engine", "socket", "public", "app"},
    "public": {"pure", "transport", "engine", "socket", "public"},
}

#: third-party imports each layer may use (stdlib is always allowed)
THIRD_PARTY = {"trio", "attrs", "nacl", "zmq"}
FORBIDDEN_THIRD_PARTY = {"pure": {"trio"}}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def layer_of(path: Path) -> str:
    top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    assert top in LAYERS, f"{path}: add {top!r} to LAYERS in tests/test_layering.py and docs/architecture.md"
    return LAYERS[top]


def imported_triomq_modules(path: Path) -> list[tuple[str, int]]:
    """(top-level triomq module, line) for each import of a triomq module."""
    tree = ast.parse(path.read_text(), str(path))
    rel_parts = path.relative_to(PACKAGE).parts
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel_parts[:-1])
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = base + (node.module.split(".") if node.module else [])
                if not target:  # "from . import x" at package top
                    target = [alias.name for alias in node.names][:1]
                found.append((target[0].removesuffix(".py"), node.lineno))
            elif node.module and node.module.split(".")[0] == "triomq":
                parts = node.module.split(".")
                found.append((parts[1] if len(parts) > 1 else "__init__", node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "triomq":
                    found.append((parts[1] if len(parts) > 1 else "__init__", node.lineno))
    return found


def third_party_imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name.split(".")[0], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.module.split(".")[0], node.lineno))
    return [(name, line) for name, line in found if name in THIRD_PARTY]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_respects_layers(path: Path) -> None:
    layer = layer_of(path)
    for target, line in imported_triomq_modules(path):
        target_layer = LAYERS.get(target)
        assert target_layer is not None, f"{path}:{line} imports unknown module {target}"
        assert target_layer in ALLOWED[layer], (
            f"{path.relative_to(PACKAGE)}:{line}: a {layer} module may not import "
            f"{target} (layer {target_layer})"
        )
    for name, line in third_party_imports(path):
        assert name not in FORBIDDEN_THIRD_PARTY.get(layer, set()), (
            f"{path.relative_to(PACKAGE)}:{line}: the {layer} layer may not import {name}"
        )


def test_pure_layer_does_not_import_trio_even_indirectly() -> None:
    """Import the pure modules in a fresh interpreter and check trio stayed unloaded."""
    import subprocess
    import sys

    pure = [
        f"triomq.{p.relative_to(PACKAGE).with_suffix('').as_posix().replace('/', '.')}"
        for p in modules()
        if layer_of(p) == "pure" and p.name != "__init__.py" and not p.name.startswith("_curve")
    ]
    code = (
        "import sys, importlib\n"
        f"for m in {pure!r}: importlib.import_module(m)\n"
        "assert 'trio' not in sys.modules, 'trio was imported'\n"
    )
    # import the pure modules without triomq/__init__ pulling in the rest
    result = subprocess.run(
        [sys.executable, "-c", "import sys, types; "
         f"pkg = types.ModuleType('triomq'); pkg.__path__ = [{str(PACKAGE)!r}]; sys.modules['triomq'] = pkg\n" + code],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_the_rule_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = PACKAGE / "_zmtp" / "_frames.py"
    tree_imports = imported_triomq_modules(bad)
    assert all(LAYERS[t] == "pure" for t, _ in tree_imports)
    # a synthetic pure module importing the engine is flagged
    fake = tmp_path / "x.py"
    fake.write_text("from .._engine._pipe import Pipe\nimport trio\n")
    assert third_party_imports(fake) == [("trio", 2)]
