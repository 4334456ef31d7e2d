"""The engine tests' harness: one JsEngine driven the way the worker drives it."""

from __future__ import annotations

import json
import time

import pytest

from server.runtime.engine import JsEngine, Outcome


def run_due_timers(engine: JsEngine) -> None:
    """Run every timer due now, whoever owns it (a test drives one engine by hand)."""
    while engine.next_timer_owner() >= 0:
        engine.run_timer()


class Harness:
    """A JsEngine with recording host callables and a small event loop."""

    def __init__(self) -> None:
        self.engine = JsEngine()
        self.logs: list[tuple[str, str]] = []
        self.calls: list[tuple[str, str, list]] = []
        self.console_reply: str | None = None
        self.replies: dict[tuple[str, str], dict] = {}
        self.events: list[tuple[str, dict]] = []
        self.engine.bind_host(console=self._console, host_call=self._host_call, event=self._event)
        self.engine.configure(modules={}, strict=False, esm=False)

    def _console(self, level: str, text: str) -> str | None:
        self.logs.append((level, text))
        return self.console_reply

    def _event(self, kind: str, payload_json: str) -> str | None:
        """Structured events; a console line with extras is still a console line."""
        payload = json.loads(payload_json)
        self.events.append((kind, payload))
        if kind == "console":
            self.logs.append((payload["level"], payload["text"]))
        return self.console_reply

    def _host_call(self, module: str, function: str, args_json: str) -> str:
        self.calls.append((module, function, json.loads(args_json)))
        return json.dumps(self.replies.get((module, function), {"ok": None}))

    def run(
        self,
        source: str,
        *,
        kind: str = "repl",
        args: dict | None = None,
        env: dict | None = None,
        timeout: float = 5.0,
    ) -> Outcome | None:
        """Start an execution and drive it to its end; None if it can never finish."""
        self.engine.start(kind=kind, source=source, filename="input.js", args=args or {}, env=env or {})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.engine.poll()
            if result is None or isinstance(result, Outcome):
                return result
            assert isinstance(result, float) and result >= 0
            time.sleep(result)
            run_due_timers(self.engine)
        raise AssertionError("execution did not finish in time")

    def value(self, source: str, **kw: object) -> dict:
        out = self.run(source, **kw)  # type: ignore[arg-type]
        assert out is not None and out.kind == "value", out
        return out.payload

    def exception(self, source: str, **kw: object) -> dict:
        out = self.run(source, **kw)  # type: ignore[arg-type]
        assert out is not None and out.kind == "exception", out
        return out.payload

    def texts(self) -> list[str]:
        return [text for _, text in self.logs]


@pytest.fixture(scope="module")
def shared() -> Harness:
    return Harness()


@pytest.fixture
def h() -> Harness:
    return Harness()
