"""Worker-side JavaScript engine: one QuickJS context with the vm-system prelude (JsEngine)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson
import quickjs

_JS_DIR = Path(__file__).resolve().parent / "js"
_PRELUDE_FILES = (_JS_DIR / "vendor" / "acorn.js", _JS_DIR / "prelude.js")


class Outcome(NamedTuple):
    """Terminal result of an execution: an API.md section 5 value or exception payload."""

    kind: Literal["value", "exception"]
    payload: dict


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # e.g. integers wider than 64 bits
        return json.loads(text)


def _outcome(text: str) -> Outcome:
    """Decode an outcome string from the prelude: "v" / "e" followed by the payload JSON."""
    return Outcome("value" if text[0] == "v" else "exception", _loads(text[1:]))


def _error_payload(exc: BaseException) -> dict:
    """Exception payload for an error that escaped the prelude (e.g. out of memory in it)."""
    text = str(exc).strip() or type(exc).__name__
    first, _, _ = text.partition("\n")
    name, sep, _ = first.partition(": ")
    payload: dict[str, Any] = {"message": first, "stack": text}
    if sep and name.isidentifier():
        payload["name"] = name
    else:
        payload["name"] = "InternalError"
        payload["message"] = f"InternalError: {first}"
    return payload


def _no_console(level: str, text: str) -> str | None:
    return None


def _no_host_call(module: str, function: str, args_json: str) -> str:
    return '{"error": {"name": "Error", "message": "no native modules are bound"}}'


class JsEngine:
    """One QuickJS context with the prelude. Single-threaded; safe to use after os.fork()."""

    def __init__(self) -> None:
        ctx = quickjs.Context()
        self._ctx = ctx
        self._console: Callable[[str, str], str | None] = _no_console
        self._host_call: Callable[[str, str, str], str] = _no_host_call
        # Host callables must never raise: an exception escaping into the binding corrupts it.
        ctx.add_callable("__vm_host_console", self._console_cb)
        ctx.add_callable("__vm_host_call", self._host_call_cb)
        ctx.add_callable("__vm_host_now", _now_ms)
        for path in _PRELUDE_FILES:
            ctx.eval(path.read_text(encoding="utf-8"))
        self._start = ctx.eval("__vm.start")
        self._start_module = ctx.eval("__vm.startModule")
        self._module_done = ctx.eval("__vm.moduleDone")
        self._poll = ctx.eval("__vm.poll")
        self._run_timer = ctx.eval("__vm.runTimer")
        self._clear = ctx.eval("__vm.clear")
        self._configure = ctx.eval("__vm.configure")
        self._load = ctx.eval("__vm.load")
        self._set_memory_limited = ctx.eval("__vm.setMemoryLimited")
        self._esm = False
        # Outcome string returned by start() when the execution finished synchronously; poll()
        # hands it out without another call into JS unless promise jobs ran in between.
        self._ready: str | None = None
        # Exception that escaped the prelude itself (out of memory while describing a value...).
        self._failed: Outcome | None = None

    # ------------------------------------------------------------------ host callables
    def _console_cb(self, level: Any, text: Any) -> str | None:
        try:
            # The binding hands over JS strings as str already: no conversion on this hot path.
            result = self._console(level, text)
            return result if result is None or type(result) is str else None
        except BaseException as exc:  # noqa: BLE001 - must never raise into QuickJS
            return f"console host failed: {exc!r}"

    def _host_call_cb(self, module: Any, function: Any, args_json: Any) -> str:
        try:
            result = self._host_call(str(module), str(function), str(args_json))
            if isinstance(result, str):
                return result
            raise TypeError(f"host_call returned {type(result).__name__}, not str")
        except BaseException as exc:  # noqa: BLE001 - must never raise into QuickJS
            return json.dumps({"error": {"name": "Error", "message": f"host call failed: {exc}"}})

    # ------------------------------------------------------------------ configuration
    def bind_host(
        self,
        *,
        console: Callable[[str, str], str | None],
        host_call: Callable[[str, str, str], str],
    ) -> None:
        self._console = console
        self._host_call = host_call

    def configure(self, *, modules: dict[str, list[str]], strict: bool, esm: bool) -> None:
        clean = {str(name): [str(fn) for fn in fns] for name, fns in modules.items()}
        self._configure(json.dumps(clean), bool(strict))
        self._esm = bool(esm)

    def set_memory_limit(self, limit_bytes: int) -> None:
        self._ctx.set_memory_limit(limit_bytes if limit_bytes > 0 else -1)
        self._set_memory_limited(limit_bytes > 0)

    def load_library(self, source: str, filename: str) -> dict | None:
        """Run a library (UMD) as a global script; an exception payload on failure, else None."""
        try:
            result = self._load(source)
        except quickjs.JSException as exc:
            return _error_payload(exc)
        finally:
            self._drain()
        return _loads(result) if isinstance(result, str) else None

    # ------------------------------------------------------------------ executions
    def start(self, *, kind: str, source: str, filename: str, args: dict, env: dict) -> None:
        """Begin an execution. kind: "repl" | "run_file" | "startup".

        repl input and (non-ESM) run_file/startup sources are evaluated as global code with
        top-level let/const/class rewritten so they persist (see prelude.js). With esm=True,
        run_file and startup sources are evaluated as an ES module instead (value undefined,
        top-level declarations stay module-scoped, no top-level await in this QuickJS).
        """
        self._ready = None
        self._failed = None
        try:
            if kind == "repl":
                self._ready = self._start(kind, source, "", "")
                return
            args_json = json.dumps(args)
            env_json = json.dumps(env)
            if not self._esm:
                self._ready = self._start(kind, source, args_json, env_json)
                return
            self._start_module(args_json, env_json)
            try:
                self._ctx.module(source)
            except quickjs.JSException as exc:
                self._module_done(str(exc))
            else:
                self._module_done(None)
        except quickjs.JSException as exc:
            self._failed = Outcome("exception", _error_payload(exc))

    def poll(self) -> Outcome | float | None:
        """Drain promise jobs; an Outcome when finished, seconds to the next timer, or None."""
        if self._failed is not None:
            failed, self._failed = self._failed, None
            return failed
        ready = self._ready
        if ready is not None:
            self._ready = None
            try:
                if not self._ctx.execute_pending_job():
                    return _outcome(ready)
            except quickjs.JSException:
                pass
        self._drain()
        try:
            result = self._poll(_now_ms())
        except quickjs.JSException as exc:
            return Outcome("exception", _error_payload(exc))
        if result is None:
            return None
        if isinstance(result, str):
            return _outcome(result)
        return float(result)

    def run_due_timers(self) -> None:
        """Run every timer due now (in due order), draining promise jobs after each one."""
        now = _now_ms()
        run = self._run_timer
        while True:
            try:
                more = run(now)
            except quickjs.JSException as exc:
                if self._failed is None:
                    self._failed = Outcome("exception", _error_payload(exc))
                more = False
            self._drain()
            if not more:
                return

    def clear(self) -> None:
        """Drop all timers and the pending execution state (after a limit or a cancel)."""
        self._ready = None
        self._failed = None
        try:
            self._clear()
        except quickjs.JSException:
            pass

    # ------------------------------------------------------------------ helpers
    def _drain(self) -> None:
        execute = self._ctx.execute_pending_job
        while True:
            try:
                if not execute():
                    return
            except quickjs.JSException:
                continue


def _now_ms() -> float:
    try:
        return time.monotonic() * 1000.0
    except BaseException:  # noqa: BLE001 - must never raise into QuickJS
        return 0.0
