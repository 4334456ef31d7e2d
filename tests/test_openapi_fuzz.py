"""The OpenAPI document is the server's exact contract: a bounded schemathesis run finds nothing.

A real `vm-system serve` process; schemathesis (every check, its defaults: no 5xx, every
status, header and body documented and matching, schema-invalid requests refused and
schema-valid ones accepted, undeclared methods answered 405 with ``Allow``) runs its coverage,
fuzzing and stateful phases with a fixed seed and a bounded number of examples per operation.
``tests/schemathesis.toml`` holds the two expectations a schema cannot state, with why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytest.importorskip("schemathesis")

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = os.environ.get("VM_SYSTEM_FUZZ_EXAMPLES", "5")


def test_the_server_matches_its_openapi_document(tmp_path: Path) -> None:
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    assert st, "schemathesis is a dev dependency: make install"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VM_SYSTEM_")}
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "server.cli", "serve", "--listen", f"127.0.0.1:{port}"]
    cmd += ["--db", str(tmp_path / "vm.db"), "--cache-dir", str(tmp_path / "cache")]
    with log.open("wb") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            run = subprocess.run(
                [
                    st,
                    "--config-file",
                    str(CONFIG),
                    "run",
                    f"http://127.0.0.1:{port}/api/v1/openapi.json",
                    "--wait-for-schema",
                    "60",
                    "--max-examples",
                    EXAMPLES,
                    "--seed",
                    "1",
                    "--workers",
                    "1",
                    "--continue-on-failure",
                    "--no-color",
                    "--request-timeout",
                    "60",
                ],
                capture_output=True,
                text=True,
                timeout=600,
                cwd=tmp_path,
                env={**env, "SCHEMATHESIS_TELEMETRY": "false"},
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20000:]
    assert " passed" in report and " selected" in report, report[-5000:]
    assert "Traceback" not in log.read_text(), log.read_text()[-5000:]


def test_every_route_is_documented_with_its_statuses(client_doc: dict) -> None:
    """Operations the fuzzer cannot reach in a few examples still list what they answer."""
    for path, item in client_doc["paths"].items():
        for method, op in item.items():
            statuses = set(op["responses"])
            assert {"401", "403"} <= statuses, (method, path)
            if path != "/api/v1/ws":
                assert "500" in statuses, (method, path)
            if "requestBody" in op:
                assert {"400", "413"} <= statuses, (method, path)
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                name = schema["$ref"].rsplit("/", 1)[-1]
                assert client_doc["components"]["schemas"][name]["additionalProperties"] is False


@pytest.fixture
async def client_doc(client) -> dict:
    return await (await client.get("/api/v1/openapi.json")).json()
