"""Logging: access lines are batched (one write per batch, not per request) yet never lost or
late: a warning flushes them at once, an idle timer within FLUSH_S, shutdown at the end."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from server import logs
from tests.conftest import free_port, stop_process


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


@pytest.fixture
def batched() -> tuple[logging.Logger, logs.BatchedHandler, CountingStream]:
    stream = CountingStream()
    target = logging.StreamHandler(stream)
    handler = logs.BatchedHandler(target, capacity=100, flush_s=0.2)
    logger = logging.getLogger(f"test-batched-{time.monotonic_ns()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    yield logger, handler, stream
    logger.removeHandler(handler)
    handler.close()


def test_access_lines_wait_for_a_batch_and_a_warning_flushes_them_at_once(batched):
    logger, _handler, stream = batched
    for i in range(10):
        logger.info("GET /api/v1/health 200 request %d", i)
    assert stream.getvalue() == ""  # held: nothing written per line
    logger.warning("something to see now")
    lines = stream.getvalue().splitlines()
    assert lines == [f"GET /api/v1/health 200 request {i}" for i in range(10)] + ["something to see now"]


def test_a_full_batch_is_written_and_an_idle_one_within_its_age(batched):
    logger, handler, stream = batched
    for i in range(100):
        logger.info("line %d", i)
    assert len(stream.getvalue().splitlines()) == 100  # capacity reached
    logger.info("the last one")
    deadline = time.monotonic() + 5
    while "the last one" not in stream.getvalue():
        assert time.monotonic() < deadline, "an idle batch was never written"
        time.sleep(0.02)
    assert stream.getvalue().splitlines()[-1] == "the last one"


def test_a_served_server_logs_every_request_with_its_id(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "vm-system"),
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--db",
                str(tmp_path / "vm.db"),
                "--cache-dir",
                str(tmp_path / "cache"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            ids = []
            deadline = time.monotonic() + 60
            while not ids:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as r:
                        ids.append(r.headers["X-Request-Id"])
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.05)
            for _ in range(4):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as r:
                    ids.append(r.headers["X-Request-Id"])
            deadline = time.monotonic() + 10
            while not all(f"request_id={rid}" in log_path.read_text() for rid in ids):
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
            line = next(x for x in log_path.read_text().splitlines() if ids[-1] in x)
            assert "INFO vm_system.access: GET /api/v1/health 200" in line
        finally:
            stop_process(proc)
