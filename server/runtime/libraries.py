"""The JavaScript library catalog, its on-disk cache and the downloader from the npm registry."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_REGISTRY = "https://registry.npmjs.org"
# Tarballs of the catalog's packages are well under a few MB; refuse anything absurd.
MAX_TARBALL_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class LibraryInfo:
    """A library a template can load: an npm package's browser/UMD build run as a global script."""

    id: str
    version: str
    global_name: str
    description: str
    package: str
    file: str  # path of the browser build inside the npm tarball's `package/` folder

    @property
    def name(self) -> str:
        return f"{self.id}-{self.version}"


CATALOG: tuple[LibraryInfo, ...] = (
    LibraryInfo(
        id="lodash",
        version="4.17.21",
        global_name="_",
        description="Utility functions for arrays, objects, strings and functions.",
        package="lodash",
        file="lodash.min.js",
    ),
    LibraryInfo(
        id="dayjs",
        version="1.11.13",
        global_name="dayjs",
        description="Small immutable date library with a Moment-compatible API.",
        package="dayjs",
        file="dayjs.min.js",
    ),
    LibraryInfo(
        id="ramda",
        version="0.30.1",
        global_name="R",
        description="Functional programming helpers with automatic currying.",
        package="ramda",
        file="dist/ramda.min.js",
    ),
    LibraryInfo(
        id="moment",
        version="2.30.1",
        global_name="moment",
        description="Parse, validate, manipulate and format dates.",
        package="moment",
        file="min/moment.min.js",
    ),
)

_BY_NAME: dict[str, LibraryInfo] = {info.name: info for info in CATALOG}


class LibraryDownloadError(RuntimeError):
    """A library could not be fetched or verified; the message names it and the reason."""


class LibraryUnavailableError(LookupError):
    """A library named by a template is unknown or not in the cache."""


def available_names() -> str:
    """Comma-separated catalog names, for error messages."""
    return ", ".join(info.name for info in CATALOG)


def default_cache_dir() -> Path:
    """`.vm-cache/libraries` under the current working directory."""
    return Path.cwd() / ".vm-cache" / "libraries"


def cache_path(cache_dir: str | os.PathLike[str], info: LibraryInfo) -> Path:
    """Where the library's source lives in the cache: `<cache_dir>/<id>-<version>.js`."""
    return Path(cache_dir) / f"{info.name}.js"


def find(name: str) -> LibraryInfo | None:
    """The catalog entry called `name` (`<id>-<version>`), or None."""
    if not isinstance(name, str):
        return None
    return _BY_NAME.get(name.strip())


def is_cached(cache_dir: str | os.PathLike[str], name: str) -> bool:
    """True when `name` is in the catalog and its file is in the cache."""
    info = find(name)
    return info is not None and cache_path(cache_dir, info).is_file()


def read_source(cache_dir: str | os.PathLike[str], name: str) -> str:
    """The cached source of library `name`, or LibraryUnavailableError saying how to get it."""
    info = find(name)
    if info is None:
        raise LibraryUnavailableError(f"unknown library {name!r}; choose one of: {available_names()}")
    path = cache_path(cache_dir, info)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LibraryUnavailableError(
            f"library {info.name!r} is not in the cache ({path}); run "
            f"`vm-system libs download {info.name}` to fetch it"
        ) from None
    except OSError as exc:
        raise LibraryUnavailableError(
            f"library {info.name!r} cannot be read from {path}: {exc.strerror or exc}"
        ) from exc


def catalog_json(cache_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The catalog as served by `GET /api/v1/libraries`."""
    return [
        {
            "name": info.name,
            "id": info.id,
            "version": info.version,
            "global": info.global_name,
            "description": info.description,
            "cached": cache_path(cache_dir, info).is_file(),
        }
        for info in CATALOG
    ]


def cache_info(cache_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The cache directory, the `.js` files in it with their sizes, and their total size."""
    root = Path(cache_dir)
    files: list[dict[str, Any]] = []
    if root.is_dir():
        for path in sorted(root.glob("*.js")):
            if path.is_file():
                files.append({"name": path.name, "path": str(path), "bytes": path.stat().st_size})
    return {
        "dir": str(root),
        "exists": root.is_dir(),
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files),
    }


def download(
    cache_dir: str | os.PathLike[str],
    names: list[str] | None = None,
    *,
    registry: str = DEFAULT_REGISTRY,
    timeout: float = 60,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Fetch catalog libraries (all when `names` is None) from the npm registry into the cache.

    Each tarball is checked against the registry's integrity hash before its one file is
    extracted and written atomically. Already cached libraries are skipped unless `force`.
    Returns `[{name, path, bytes, status: "downloaded"|"cached"}]` in request order.
    """
    if names is None:
        wanted = list(CATALOG)
    else:
        wanted = []
        for name in names:
            info = find(name)
            if info is None:
                raise LibraryDownloadError(f"unknown library {name!r}; choose one of: {available_names()}")
            if info not in wanted:
                wanted.append(info)
    root = Path(cache_dir)
    results: list[dict[str, Any]] = []
    for info in wanted:
        target = cache_path(root, info)
        if not force and target.is_file():
            results.append(_result(info, target, "cached"))
            continue
        source = _fetch_file(info, registry, timeout)
        try:
            root.mkdir(parents=True, exist_ok=True)
            _write_atomic(target, source)
        except OSError as exc:
            raise LibraryDownloadError(
                f"{info.name}: cannot write {target}: {exc.strerror or exc}; check that the "
                f"cache directory is writable or pick another with --cache-dir"
            ) from exc
        results.append(_result(info, target, "downloaded"))
    return results


def _result(info: LibraryInfo, path: Path, status: str) -> dict[str, Any]:
    return {"name": info.name, "path": str(path), "bytes": path.stat().st_size, "status": status}


def _fetch_file(info: LibraryInfo, registry: str, timeout: float) -> bytes:
    package = urllib.parse.quote(info.package, safe="@")
    meta_url = f"{registry.rstrip('/')}/{package}/{urllib.parse.quote(info.version)}"
    raw_meta = _http_get(info, meta_url, timeout, "metadata")
    try:
        meta = json.loads(raw_meta)
        dist = meta["dist"]
        tarball_url = dist["tarball"]
    except (ValueError, KeyError, TypeError) as exc:
        raise LibraryDownloadError(
            f"{info.name}: the registry's metadata at {meta_url} has no dist.tarball "
            f"({type(exc).__name__}: {exc}); check the registry URL"
        ) from exc
    if meta.get("version") not in (None, info.version):
        raise LibraryDownloadError(
            f"{info.name}: the registry answered version {meta.get('version')!r} at {meta_url}"
        )
    if urllib.parse.urlsplit(str(tarball_url)).scheme not in ("http", "https"):
        raise LibraryDownloadError(
            f"{info.name}: refusing tarball URL {tarball_url!r}: only http(s) is allowed"
        )
    tarball = _http_get(info, str(tarball_url), timeout, "tarball")
    _verify(info, tarball, dist)
    return _extract(info, tarball)


def _http_get(info: LibraryInfo, url: str, timeout: float, what: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "vm-system"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_TARBALL_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise LibraryDownloadError(
            f"{info.name}: could not fetch the {what} from {url}: HTTP {exc.code} {exc.reason}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LibraryDownloadError(
            f"{info.name}: could not fetch the {what} from {url}: {reason}; check the network "
            f"and the registry URL"
        ) from exc
    if len(data) > MAX_TARBALL_BYTES:
        raise LibraryDownloadError(
            f"{info.name}: the {what} at {url} is larger than {MAX_TARBALL_BYTES} bytes"
        )
    return data


def _verify(info: LibraryInfo, tarball: bytes, dist: dict[str, Any]) -> None:
    """Check the tarball against `dist.integrity` (SRI) or, failing that, `dist.shasum`."""
    integrity = dist.get("integrity")
    if isinstance(integrity, str) and integrity.strip():
        supported = {"sha512": 3, "sha384": 2, "sha256": 1}
        candidates = []
        for token in integrity.split():
            algo, _, digest = token.partition("-")
            if algo in supported and digest:
                candidates.append((supported[algo], algo, digest.split("?")[0]))
        if candidates:
            _, algo, expected = max(candidates)
            actual = base64.b64encode(hashlib.new(algo, tarball).digest()).decode("ascii")
            if actual != expected:
                raise LibraryDownloadError(
                    f"{info.name}: the tarball's {algo} does not match the registry's integrity "
                    f"value (expected {expected}, got {actual}); the download is corrupt or was "
                    f"tampered with, nothing was written"
                )
            return
    shasum = dist.get("shasum")
    if isinstance(shasum, str) and shasum.strip():
        actual_sha1 = hashlib.sha1(tarball).hexdigest()
        if actual_sha1 != shasum.strip().lower():
            raise LibraryDownloadError(
                f"{info.name}: the tarball's sha1 does not match the registry's shasum "
                f"(expected {shasum}, got {actual_sha1}); nothing was written"
            )
        return
    raise LibraryDownloadError(
        f"{info.name}: the registry gave no dist.integrity or dist.shasum, so the tarball "
        f"cannot be verified; use a registry that publishes them"
    )


def _extract(info: LibraryInfo, tarball: bytes) -> bytes:
    """Read the one member `package/<file>` from the tarball without extracting anything."""
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:*") as archive:
            for member in archive:
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                if name.startswith("/") or ".." in name.split("/"):
                    continue
                if posixpath.normpath(name) != f"package/{info.file}":
                    continue
                if not member.isfile():
                    raise LibraryDownloadError(
                        f"{info.name}: {member.name!r} in the tarball is not a regular file "
                        f"(links are refused)"
                    )
                handle = archive.extractfile(member)
                if handle is None:
                    break
                return handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LibraryDownloadError(
            f"{info.name}: the tarball cannot be read: {exc}; try the download again"
        ) from exc
    raise LibraryDownloadError(
        f"{info.name}: the tarball has no file 'package/{info.file}'; the catalog entry may "
        f"name the wrong file for version {info.version}"
    )


def _write_atomic(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
