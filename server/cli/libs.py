"""The `libs` group: the local JavaScript library cache, which works without a server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from server.cli.render import output
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
DEFAULT_SHOWN = os.path.join(".vm-cache", "libraries")


def local_cache_dir(value: str | None) -> tuple[Path, str]:
    """The cache directory to use here and how to show it (as given, or `.vm-cache/libraries`)."""
    from server.runtime import libraries

    value = value or os.environ.get("VM_SYSTEM_CACHE_DIR") or None
    if value:
        return Path(value).expanduser(), value
    return libraries.default_cache_dir(), DEFAULT_SHOWN


def _cached_files(cache_dir: Path) -> list[tuple[str, Path]]:
    """(catalog name, file) for each catalog library in the cache: only exact `<id>-<version>.js`."""
    from server.runtime import libraries

    found = []
    for info in libraries.CATALOG:
        path = libraries.cache_path(cache_dir, info)
        if path.is_file():
            found.append((info.name, path))
    return found


@click.group()
def libs() -> None:
    """The local JavaScript library cache (works without a server)."""


@libs.command("list")
@_CACHE_DIR_OPTION
@pass_state
def libs_list(state: CliState, cache_dir: str | None) -> None:
    """List the library catalog and what is cached."""
    from server.runtime import libraries

    def human(catalog: list[Mapping[str, Any]]) -> None:
        click.echo(f"Available libraries ({len(catalog)}):\n")
        for entry in catalog:
            info = libraries.find(entry["name"])
            assert info is not None
            click.echo(f"  {entry['id']} - {info.package} v{entry['version']}")
            click.echo(f"    {entry['description']}")
            click.echo(f"    Source: npm {info.package}@{info.version} ({info.file})")
            click.echo(f"    Global: {entry['global']}")
            cached = "cached" if entry["cached"] else "not cached"
            click.echo(f"    Template name: {entry['name']} ({cached})\n")

    output(state, libraries.catalog_json(local_cache_dir(cache_dir)[0]), human)


@libs.command("download")
@click.argument("names", nargs=-1)
@_CACHE_DIR_OPTION
@click.option(
    "--registry",
    envvar="VM_SYSTEM_NPM_REGISTRY",
    help="npm registry URL (env VM_SYSTEM_NPM_REGISTRY; default https://registry.npmjs.org).",
)
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
    directory, shown = local_cache_dir(cache_dir)
    if not state.json:
        click.echo(f"Downloading libraries to: {shown}")
    kwargs: dict[str, Any] = {"force": force}
    if registry:
        kwargs["registry"] = registry
    try:
        data = libraries.download(directory, list(names) or None, **kwargs)
    except libraries.LibraryDownloadError as exc:
        fail("DOWNLOAD_FAILED", str(exc))

    def human(_: Any) -> None:
        click.echo("\nCache info:")
        for name, path in _cached_files(directory):
            click.echo(f"  {name}: {path.stat().st_size} bytes ({os.path.join(shown, path.name)})")

    output(state, data, human)


@libs.command("cache-info")
@_CACHE_DIR_OPTION
@pass_state
def libs_cache_info(state: CliState, cache_dir: str | None) -> None:
    """Show the cached catalog libraries, their sizes and the total."""
    from server.runtime import libraries

    directory, shown = local_cache_dir(cache_dir)

    def human(_: Any) -> None:
        files = _cached_files(directory)
        if not files:
            click.echo("No libraries cached. Run 'vm-system libs download' first.")
            return
        click.echo(f"Cached libraries ({len(files)}):\n")
        total = 0
        for name, path in files:
            stat = path.stat()
            total += stat.st_size
            modified = datetime.fromtimestamp(stat.st_mtime).strftime("%Y-%m-%d %H:%M:%S")
            click.echo(f"  {name}")
            click.echo(f"    Path: {os.path.join(shown, path.name)}")
            click.echo(f"    Size: {stat.st_size} bytes")
            click.echo(f"    Modified: {modified}\n")
        click.echo(f"Total cache size: {total} bytes ({total / 1024:.2f} KB)")

    output(state, libraries.cache_info(directory), human)
