"""Fixtures of the CLI tests: a real server in a thread, a worktree with a script."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.support import LiveServer, make_settings


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(make_settings(tmp_path)) as live:
        yield live


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    wt = tmp_path / "worktree"
    wt.mkdir()
    (wt / "script.js").write_text(
        'console.warn("args", __ARGS__.n); console.log("env", __ENV__.WHO); __ARGS__.n * 2\n'
    )
    return wt
