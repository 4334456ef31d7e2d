"""Library catalog, cache helpers and download() against a local fake npm registry."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from server.runtime.libraries import (
    CATALOG,
    LibraryDownloadError,
    LibraryUnavailableError,
    cache_info,
    cache_path,
    catalog_json,
    default_cache_dir,
    download,
    find,
    is_cached,
    read_source,
)

LODASH = find("lodash-4.17.21")
DAYJS = find("dayjs-1.11.13")


def make_tarball(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
        for name, target in (links or {}).items():
            member = tarfile.TarInfo(name)
            member.type = tarfile.SYMTYPE
            member.linkname = target
            archive.addfile(member)
    return buffer.getvalue()


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@dataclass
class FakeRegistry:
    """Serves `/<package>/<version>` metadata and `/tarballs/<name>.tgz` on 127.0.0.1."""

    url: str = ""
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    tarballs: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def publish(
        self,
        package: str,
        version: str,
        tarball: bytes,
        *,
        integrity: str | None = "auto",
        shasum: str | None = None,
    ) -> None:
        dist: dict[str, Any] = {"tarball": f"{self.url}/tarballs/{package}-{version}.tgz"}
        if integrity == "auto":
            dist["integrity"] = sri(tarball)
        elif integrity is not None:
            dist["integrity"] = integrity
        if shasum is not None:
            dist["shasum"] = shasum
        self.metadata[f"/{package}/{version}"] = {
            "name": package,
            "version": version,
            "dist": dist,
        }
        self.tarballs[f"/tarballs/{package}-{version}.tgz"] = tarball


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    state = FakeRegistry()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            if self.path in state.metadata:
                body = json.dumps(state.metadata[self.path]).encode()
                content_type = "application/json"
            elif self.path in state.tarballs:
                body = state.tarballs[self.path]
                content_type = "application/octet-stream"
            else:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


LODASH_SOURCE = b"var _ = { VERSION: 'fake' };"


def publish_lodash(registry: FakeRegistry, **kwargs: Any) -> bytes:
    assert LODASH is not None
    tarball = make_tarball(
        {
            "package/package.json": b'{"name": "lodash"}',
            f"package/{LODASH.file}": LODASH_SOURCE,
            "package/other.js": b"not me",
        }
    )
    registry.publish(LODASH.package, LODASH.version, tarball, **kwargs)
    return tarball


# -- catalog and cache --------------------------------------------------------------------


def test_catalog_has_the_expected_libraries() -> None:
    by_id = {info.id: info for info in CATALOG}
    assert by_id["lodash"].version == "4.17.21" and by_id["lodash"].global_name == "_"
    assert by_id["dayjs"].version.startswith("1.11.") and by_id["dayjs"].global_name == "dayjs"
    assert by_id["ramda"].global_name == "R" and by_id["ramda"].file == "dist/ramda.min.js"
    assert by_id["moment"].name == "moment-2.30.1"
    assert by_id["moment"].file == "min/moment.min.js"


def test_find_by_name() -> None:
    assert LODASH is not None and LODASH.name == "lodash-4.17.21"
    assert find(" lodash-4.17.21 ") == LODASH
    assert find("lodash") is None
    assert find("lodash-0.0.1") is None


def test_default_cache_dir_is_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_cache_dir() == tmp_path / ".vm-cache" / "libraries"


def test_catalog_json_reports_what_is_cached(tmp_path: Path) -> None:
    assert LODASH is not None
    cache_path(tmp_path, LODASH).write_text("var _ = 1;")
    entries = {entry["name"]: entry for entry in catalog_json(tmp_path)}
    assert entries["lodash-4.17.21"] == {
        "name": "lodash-4.17.21",
        "id": "lodash",
        "version": "4.17.21",
        "global": "_",
        "description": LODASH.description,
        "cached": True,
    }
    assert entries["moment-2.30.1"]["cached"] is False
    assert is_cached(tmp_path, "lodash-4.17.21")
    assert not is_cached(tmp_path, "moment-2.30.1")
    assert not is_cached(tmp_path, "nope-1.0.0")


def test_cache_info_lists_files_and_sizes(tmp_path: Path) -> None:
    assert cache_info(tmp_path / "missing") == {
        "dir": str(tmp_path / "missing"),
        "exists": False,
        "files": [],
        "total_bytes": 0,
    }
    (tmp_path / "a-1.js").write_text("12345")
    (tmp_path / "b-2.js").write_text("123")
    info = cache_info(tmp_path)
    assert [(f["name"], f["bytes"]) for f in info["files"]] == [("a-1.js", 5), ("b-2.js", 3)]
    assert info["total_bytes"] == 8


def test_read_source_explains_how_to_fix_a_missing_library(tmp_path: Path) -> None:
    with pytest.raises(LibraryUnavailableError, match="vm-system libs download lodash-4.17.21"):
        read_source(tmp_path, "lodash-4.17.21")
    with pytest.raises(LibraryUnavailableError, match="unknown library 'left-pad-1.0.0'"):
        read_source(tmp_path, "left-pad-1.0.0")


# -- download -----------------------------------------------------------------------------


def test_download_extracts_only_the_browser_build(tmp_path: Path, registry: FakeRegistry) -> None:
    publish_lodash(registry)
    cache = tmp_path / "cache"
    results = download(cache, ["lodash-4.17.21"], registry=registry.url, timeout=5)
    target = cache / "lodash-4.17.21.js"
    assert results == [
        {
            "name": "lodash-4.17.21",
            "path": str(target),
            "bytes": len(LODASH_SOURCE),
            "status": "downloaded",
        }
    ]
    assert target.read_bytes() == LODASH_SOURCE
    assert sorted(p.name for p in cache.iterdir()) == ["lodash-4.17.21.js"]
    assert read_source(cache, "lodash-4.17.21") == LODASH_SOURCE.decode()
    assert registry.requests == ["/lodash/4.17.21", "/tarballs/lodash-4.17.21.tgz"]


def test_download_skips_cached_unless_forced(tmp_path: Path, registry: FakeRegistry) -> None:
    publish_lodash(registry)
    assert LODASH is not None
    cache_path(tmp_path, LODASH).write_text("old")
    results = download(tmp_path, ["lodash-4.17.21"], registry=registry.url)
    assert results[0]["status"] == "cached" and results[0]["bytes"] == 3
    assert registry.requests == []
    results = download(tmp_path, ["lodash-4.17.21"], registry=registry.url, force=True)
    assert results[0]["status"] == "downloaded"
    assert cache_path(tmp_path, LODASH).read_bytes() == LODASH_SOURCE


def test_download_accepts_a_sha1_shasum(tmp_path: Path, registry: FakeRegistry) -> None:
    assert LODASH is not None
    tarball = make_tarball({f"package/{LODASH.file}": LODASH_SOURCE})
    registry.publish("lodash", "4.17.21", tarball, integrity=None, shasum=hashlib.sha1(tarball).hexdigest())
    assert download(tmp_path, ["lodash-4.17.21"], registry=registry.url)[0]["bytes"] == len(LODASH_SOURCE)


def test_bad_integrity_is_refused_and_nothing_is_written(tmp_path: Path, registry: FakeRegistry) -> None:
    publish_lodash(registry, integrity=sri(b"something else"))
    with pytest.raises(LibraryDownloadError, match=r"lodash-4\.17\.21: .*sha512 does not match"):
        download(tmp_path, ["lodash-4.17.21"], registry=registry.url)
    assert list(tmp_path.iterdir()) == []


def test_bad_shasum_is_refused(tmp_path: Path, registry: FakeRegistry) -> None:
    publish_lodash(registry, integrity=None, shasum="0" * 40)
    with pytest.raises(LibraryDownloadError, match="sha1 does not match"):
        download(tmp_path, ["lodash-4.17.21"], registry=registry.url)
    assert list(tmp_path.iterdir()) == []


def test_unverifiable_tarball_is_refused(tmp_path: Path, registry: FakeRegistry) -> None:
    publish_lodash(registry, integrity=None)
    with pytest.raises(LibraryDownloadError, match="cannot be verified"):
        download(tmp_path, ["lodash-4.17.21"], registry=registry.url)


def test_missing_file_in_tarball(tmp_path: Path, registry: FakeRegistry) -> None:
    tarball = make_tarball({"package/index.js": b"x", "../lodash.min.js": b"evil"})
    registry.publish("lodash", "4.17.21", tarball)
    with pytest.raises(LibraryDownloadError, match="has no file 'package/lodash.min.js'"):
        download(tmp_path, ["lodash-4.17.21"], registry=registry.url)
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "lodash.min.js").exists()


def test_symlinked_member_is_refused(tmp_path: Path, registry: FakeRegistry) -> None:
    tarball = make_tarball({}, links={"package/lodash.min.js": "/etc/passwd"})
    registry.publish("lodash", "4.17.21", tarball)
    with pytest.raises(LibraryDownloadError, match="not a regular file"):
        download(tmp_path, ["lodash-4.17.21"], registry=registry.url)
    assert list(tmp_path.iterdir()) == []


def test_registry_404_names_the_library(tmp_path: Path, registry: FakeRegistry) -> None:
    with pytest.raises(LibraryDownloadError) as info:
        download(tmp_path, ["dayjs-1.11.13"], registry=registry.url)
    message = str(info.value)
    assert message.startswith("dayjs-1.11.13: could not fetch the metadata")
    assert "HTTP 404" in message


def test_unreachable_registry(tmp_path: Path) -> None:
    with pytest.raises(LibraryDownloadError, match="moment-2.30.1: could not fetch"):
        download(tmp_path, ["moment-2.30.1"], registry="http://127.0.0.1:9", timeout=2)


def test_unknown_library_name(tmp_path: Path) -> None:
    with pytest.raises(LibraryDownloadError, match="unknown library 'jquery-3.0.0'.*lodash"):
        download(tmp_path, ["jquery-3.0.0"], registry="http://127.0.0.1:9")


def test_download_all_fetches_every_catalog_entry(tmp_path: Path, registry: FakeRegistry) -> None:
    for info in CATALOG:
        source = f"var {info.global_name} = {{}};".encode()
        registry.publish(info.package, info.version, make_tarball({f"package/{info.file}": source}))
    results = download(tmp_path, registry=registry.url)
    assert [r["name"] for r in results] == [info.name for info in CATALOG]
    assert all(r["status"] == "downloaded" for r in results)
    assert all(entry["cached"] for entry in catalog_json(tmp_path))
    assert len(cache_info(tmp_path)["files"]) == len(CATALOG)
