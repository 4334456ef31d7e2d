"""The original's three upstream scripts, re-created in tests/upstream/, against a real server.

Each script starts `vm-system serve` itself (a free port, its own database) and drives it with the
installed command exactly as the originals did: global `--server-url`/`--db` flags, ids scraped
from the human output with sed/awk, `grep` on the printed lines. Libraries come from a local fake
npm registry (no network), with small stand-ins that define each catalog library's global.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.runtime.libraries import CATALOG
from tests.test_libraries import FakeRegistry, make_tarball, registry  # noqa: F401 - the fixture

SCRIPTS = Path(__file__).resolve().parent / "upstream"
VM_SYSTEM = Path(sys.executable).parent / "vm-system"

# Enough of each library for the scripts: the global, its VERSION, and what they call on it.
LODASH_API = (
    "map: function (xs, key) { return xs.map(function (x) { return x[key]; }); },"
    " chunk: function (xs, n) { var out = []; for (var i = 0; i < xs.length; i += n)"
    " out.push(xs.slice(i, i + n)); return out; }"
)


def _stand_in(global_name: str, version: str) -> bytes:
    if global_name == "_":
        return f"var _ = {{ VERSION: '{version}', {LODASH_API} }};".encode()
    return (
        f"var {global_name} = function () {{ return {{}}; }}; {global_name}.VERSION = '{version}';".encode()
    )


def publish_catalog(registry: FakeRegistry) -> dict[str, bytes]:  # noqa: F811 - the fixture's type
    """Every catalog library on the fake registry; returns each one's source by name."""
    sources = {}
    for info in CATALOG:
        sources[info.name] = _stand_in(info.global_name, info.version)
        registry.publish(
            info.package, info.version, make_tarball({f"package/{info.file}": sources[info.name]})
        )
    return sources


@pytest.fixture
def npm(registry: FakeRegistry) -> str:  # noqa: F811 - the imported fixture
    publish_catalog(registry)
    return registry.url


@pytest.mark.timeout(600)
@pytest.mark.parametrize("script", ["smoke-test.sh", "test-e2e.sh", "test-library-matrix.sh"])
def test_upstream_script_passes(script: str, npm: str, tmp_path: Path) -> None:
    if not VM_SYSTEM.exists():
        pytest.fail(f"{VM_SYSTEM} is missing: run `pip install -e .` in the project's venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VM_SYSTEM_")}
    env.update(
        VM_SYSTEM=str(VM_SYSTEM),  # what replaces the originals' `go build ./cmd/vm-system`
        VM_SYSTEM_NPM_REGISTRY=npm,
        PYTHON=sys.executable,
        TMPDIR=str(tmp_path),
    )
    work = tmp_path / "work"  # the scripts' working directory: .vm-cache/ lands here
    work.mkdir()
    done = subprocess.run(
        ["bash", str(SCRIPTS / script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "[FAIL]" not in output and "FAILED" not in output, output
    if script == "test-e2e.sh":
        assert "=== All E2E Steps Passed ===" in output
    else:
        assert "Tests failed: 0" in output, output
        passed = int(output.split("Tests passed: ")[1].split()[0])
        expected = {"smoke-test.sh": 12, "test-library-matrix.sh": 8 + len(CATALOG)}[script]
        assert passed == expected, output
