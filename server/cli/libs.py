"""The `libs` group: the local JavaScript library cache, which works without a server."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from server.cli.render import LIBRARIES, as_table, block, output, table
from server.cli.state import CliState, fail, pass_state

_CACHE_DIR_OPTION = click.option(
    "--cache-dir",
    envvar="VM_SYSTEM_CACHE_DIR",
    type=click.Path(file_okay=False),
    help=(
        "Library cache directory (env VM_SYSTEM_CACHE_DIR; default .vm-cache/libraries under the"
        " current directory: run from the server's working directory or pass the server's"
        " --cache-dir)."
    ),
)


def _cache_dir(value: str | None) -> Path:
    from server.runtime import libraries

    return Path(value).expanduser() if value else libraries.default_cache_dir()


@click.group()
def libs() -> None:
    """The local JavaScript library cache (works without a server)."""


@libs.command("list")
@_CACHE_DIR_OPTION
@pass_state
def libs_list(state: CliState, cache_dir: str | None) -> None:
    """List the library catalog and what is cached."""
    from server.runtime import libraries

    output(state, libraries.catalog_json(_cache_dir(cache_dir)), as_table(LIBRARIES))


@libs.command("download")
@click.argument("names", nargs=-1)
@_CACHE_DIR_OPTION
@click.option("--registry", help="npm registry URL (default https://registry.npmjs.org).")
@click.option("--force", is_flag=True, help="Download again even when cached.")
@pass_state
def libs_download(
    state: CliState,
    names: tuple[str, ...],
    cache_dir: str | None,
    registry: str | None,
    force: bool,
) -> None:
    """Download catalog libraries (all when no NAMES) into the cache."""
    from server.runtime import libraries

    unknown = [n for n in names if libraries.find(n) is None]
    if unknown:
        fail(
            "LIBRARY_NOT_ALLOWED",
            f"not in the library catalog: {', '.join(unknown)}; choose from {libraries.available_names()}",
        )
    kwargs: dict[str, Any] = {"force": force}
    if registry:
        kwargs["registry"] = registry
    try:
        data = libraries.download(_cache_dir(cache_dir), list(names) or None, **kwargs)
    except libraries.LibraryDownloadError as exc:
        fail("DOWNLOAD_FAILED", str(exc))
    output(state, data, as_table("name status bytes path"))


@libs.command("cache-info")
@_CACHE_DIR_OPTION
@pass_state
def libs_cache_info(state: CliState, cache_dir: str | None) -> None:
    """Show the cache directory and its files."""
    from server.runtime import libraries

    def human(info: Mapping[str, Any]) -> None:
        block(info, "dir exists total_bytes")
        table(info.get("files") or [], "name bytes")

    output(state, libraries.cache_info(_cache_dir(cache_dir)), human)
