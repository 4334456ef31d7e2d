"""`python -m server.cli`: the same as the `vm-system` console script."""

from __future__ import annotations

from server.cli import main

main()
