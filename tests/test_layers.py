"""Architecture rules: inner layers never import the web framework; one app factory."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "server"


@pytest.mark.parametrize("layer", ["core", "pipeline", "runtime", "store"])
def test_inner_layers_do_not_import_aiohttp(layer):
    offenders = []
    for path in (ROOT / layer).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "aiohttp" or n.startswith(("aiohttp.", "server.http")) for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_importing_the_app_creates_nothing():
    import server.app as app_module

    module_values = [v for k, v in vars(app_module).items() if not k.startswith("__")]
    from aiohttp import web

    assert not any(isinstance(v, web.Application) for v in module_values)


# The one-way plan: each layer may import the ground floor (errors, events, clock, config) and
# the layers below it, never one above it.
FORBIDDEN_BELOW = {
    "store": ("server.core", "server.pipeline", "server.runtime", "server.http", "server.cli"),
    "runtime": ("server.core", "server.pipeline", "server.store", "server.http", "server.cli"),
    "pipeline": ("server.core", "server.http", "server.cli"),
    "core": ("server.http", "server.cli"),
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_BELOW))
def test_imports_point_down(layer):
    offenders = []
    for path in (ROOT / layer).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == p or n.startswith(p + ".") for n in names for p in FORBIDDEN_BELOW[layer]):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {names}")
    assert offenders == []
