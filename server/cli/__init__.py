"""The `vm-system` command: the server, a REST/WebSocket client and the library cache."""

from __future__ import annotations

from server.cli.commands import cli, main
from server.cli.incomplete import is_incomplete

__all__ = ["cli", "is_incomplete", "main"]
