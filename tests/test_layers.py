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
