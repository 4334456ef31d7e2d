"""Worker-side JavaScript engine: one QuickJS context with the vm-system prelude (JsEngine)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson
import quickjs

_JS_DIR = Path(__file__).resolve().parent / "js"
_PRELUDE_FILES = (
    _JS_DIR / "vendor" / "acorn.js",
    _JS_DIR / "primordials.js",
    _JS_DIR / "layout.js",
    _JS_DIR / "inspect.js",
    _JS_DIR / "format.js",
    _JS_DIR / "transform.js",
    _JS_DIR / "complete.js",
    _JS_DIR / "console.js",
    _JS_DIR / "prelude.js",
)
# Each prelude file is evaluated after this many blank lines, so that its functions' stack
# frames carry line numbers no user input reaches and are told apart (see cleanFrames in inspect.js).
PRELUDE_LINE_OFFSET = 1_000_000

FOREGROUND = 0
BACKGROUND = 1
UNLIMITED = -1


class Outcome(NamedTuple):
    """Terminal result of an execution: an API.md section 5 value or exception payload."""

    kind: Literal["value", "exception"]
    payload: dict


_SURROGATE = re.compile("[\ud800-\udfff]")
_INT64 = 2**63


def _well_formed(value: Any) -> Any:
    """What orjson could not decode, made encodable: lone surrogates become U+FFFD and
    integers wider than 64 bits (JavaScript numbers printed in full) become floats."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        return float(value)
    if isinstance(value, dict):
        return {_well_formed(k): _well_formed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_well_formed(v) for v in value]
    return value


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # integers wider than 64 bits, or an escaped lone surrogate
        return _well_formed(json.loads(text))


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
    return _well_formed(payload)


def _no_console(level: str, text: str) -> str | None:
    return None


def _no_event(kind: str, payload_json: str) -> str | None:
    return None


def _no_host_call(module: str, function: str, args_json: str) -> str:
    return '{"error": {"name": "Error", "message": "no native modules are bound"}}'


class JsEngine:
    """One QuickJS context with the prelude. Single-threaded; safe to use after os.fork().

    Timers have an owner: the execution in progress (FOREGROUND) or the session's background
    timers (BACKGROUND). The worker runs due timers one at a time with ``next_timer_owner`` /
    ``run_timer`` so that it knows whose output and CPU time each callback is.
    """

    def __init__(self) -> None:
        ctx = quickjs.Context()
        self._ctx = ctx
        self._console: Callable[[str, str], str | None] = _no_console
        self._event: Callable[[str, str], str | None] = _no_event
        self._host_call: Callable[[str, str, str], str] = _no_host_call
        # Host callables must never raise: an exception escaping into the binding corrupts it.
        ctx.add_callable("__vm_host_console", self._console_cb)
        ctx.add_callable("__vm_host_event", self._event_cb)
        ctx.add_callable("__vm_host_call", self._host_call_cb)
        ctx.add_callable("__vm_host_now", _now_ms)
        blank = "\n" * PRELUDE_LINE_OFFSET
        for path in _PRELUDE_FILES:
            ctx.eval(blank + path.read_text(encoding="utf-8"))
        fn = lambda name: ctx.eval(f"__vm.{name}")  # noqa: E731
        self._start = fn("start")
        self._start_module = fn("startModule")
        self._module_done = fn("moduleDone")
        self._poll = fn("poll")
        self._next_timer = fn("nextTimer")
        self._run_timer = fn("runTimer")
        self._next_due = fn("nextDue")
        self._adopt_background = fn("adoptBackground")
        self._background_count = fn("backgroundCount")
        self._clear_foreground = fn("clearForeground")
        self._clear_background = fn("clearBackground")
        self._configure = fn("configure")
        self._load = fn("load")
        self._set_memory_limited = fn("setMemoryLimited")
        self._complete = fn("complete")
        ctx.eval("delete globalThis.__vm")  # user code never reaches the engine's interface
        self._esm = False
        # Outcome string returned by start() when the execution finished synchronously; poll()
        # hands it out without another call into JS unless promise jobs ran in between.
        self._ready: str | None = None
        # Exception that escaped the prelude or a promise job (out of memory...): it ends the
        # execution in progress, or is reported by the worker for a background callback.
        self._failed: Outcome | None = None

    # ------------------------------------------------------------------ host callables
    def _console_cb(self, level: Any, text: Any) -> str | None:
        try:
            # The binding hands over JS strings as str already: no conversion on this hot path.
            result = self._console(level, text)
            return result if result is None or type(result) is str else None
        except BaseException as exc:  # noqa: BLE001 - must never raise into QuickJS
            return f"console host failed: {exc!r}"

    def _event_cb(self, kind: Any, payload_json: Any) -> str | None:
        try:
            result = self._event(str(kind), str(payload_json))
            return result if result is None or type(result) is str else None
        except BaseException as exc:  # noqa: BLE001 - must never raise into QuickJS
            return f"event host failed: {exc!r}"

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
        event: Callable[[str, str], str | None] = _no_event,
    ) -> None:
        """console(level, text) for plain lines; event(type, payload_json) for structured
        events (tables, cleared views, background exceptions). Either may return a message:
        the console call then throws an Error with it (an output limit, a cancel)."""
        self._console = console
        self._event = event
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

    # ------------------------------------------------------------------ the foreground execution
    def start(
        self,
        *,
        kind: str,
        source: str,
        filename: str,
        args: dict,
        env: dict,
        background: bool = False,
        budget: int = UNLIMITED,
    ) -> None:
        """Begin an execution. kind: "repl" | "run_file" | "startup".

        repl input and (non-ESM) run_file/startup sources are evaluated as global code with
        top-level let/const/class rewritten so they persist (see transform.js). With esm=True,
        run_file and startup sources are evaluated as an ES module instead (value undefined,
        top-level declarations stay module-scoped, no top-level await in this QuickJS).
        ``background``: the execution ends once its value has settled and leaves its timers
        running; ``budget``: output bytes left for describing its value (UNLIMITED for none).
        """
        self._ready = None
        self._failed = None
        try:
            if kind == "repl":
                self._ready = self._start(kind, source, filename, "", "", bool(background), budget)
                return
            args_json = json.dumps(args)
            env_json = json.dumps(env)
            if not self._esm:
                self._ready = self._start(kind, source, filename, args_json, env_json, False, budget)
                return
            self._start_module(filename, args_json, env_json)
            try:
                self._ctx.module(source)
            except quickjs.JSException as exc:
                self._module_done(str(exc))
            else:
                self._module_done(None)
        except quickjs.JSException as exc:
            self._failed = Outcome("exception", _error_payload(exc))

    def poll(self, budget: int = UNLIMITED) -> Outcome | float | None:
        """Drain promise jobs; an Outcome when the execution has finished, else the seconds to
        the next timer (of any owner), or None when nothing is scheduled (it awaits)."""
        if self._failed is not None:
            failed, self._failed = self._failed, None
            return failed
        ready = self._ready
        if ready is not None:
            self._ready = None
            try:
                if not self._ctx.execute_pending_job():
                    return _outcome(ready)
            except quickjs.JSException as exc:
                return Outcome("exception", _error_payload(exc))
        self._drain()
        if self._failed is not None:
            failed, self._failed = self._failed, None
            return failed
        try:
            result = self._poll(_now_ms(), budget)
        except quickjs.JSException as exc:
            return Outcome("exception", _error_payload(exc))
        if result is None:
            return None
        if isinstance(result, str):
            return _outcome(result)
        return float(result)

    # ------------------------------------------------------------------ timers
    def next_timer_owner(self) -> int:
        """FOREGROUND or BACKGROUND for the next timer due now, or -1 when none is due."""
        try:
            return int(self._next_timer(_now_ms()))
        except quickjs.JSException:
            return -1

    def run_timer(self) -> None:
        """Run the timer ``next_timer_owner`` named, then its promise jobs."""
        try:
            self._run_timer(_now_ms())
        except quickjs.JSException as exc:
            if self._failed is None:
                self._failed = Outcome("exception", _error_payload(exc))
        self._drain()

    def next_due(self) -> float | None:
        """Seconds until the next timer of any owner, or None when there is none."""
        try:
            due = float(self._next_due(_now_ms()))
        except quickjs.JSException:
            return None
        return None if due < 0 else due

    def adopt_background(self) -> int:
        """The finished execution's pending timers keep running in the background; count left."""
        return int(self._adopt_background())

    def background_count(self) -> int:
        return int(self._background_count())

    def clear_foreground(self) -> None:
        """Drop the execution in progress and its timers (after a limit or a cancel)."""
        self._ready = None
        self._failed = None
        try:
            self._clear_foreground()
        except quickjs.JSException:
            pass

    def clear_background(self) -> None:
        try:
            self._clear_background()
        except quickjs.JSException:
            pass

    def take_failure(self) -> Outcome | None:
        """An exception that escaped a callback's promise jobs (reported for the background)."""
        failed, self._failed = self._failed, None
        return failed

    # ------------------------------------------------------------------ completion
    def complete(self, text: str, cursor: int) -> dict[str, Any]:
        """Completions for the word at ``cursor`` (API.md §12): never runs user code."""
        try:
            return _loads(self._complete(text, cursor))
        except quickjs.JSException:
            return {"from": cursor, "to": cursor, "candidates": []}

    # ------------------------------------------------------------------ helpers
    def _drain(self) -> None:
        execute = self._ctx.execute_pending_job
        while True:
            try:
                if not execute():
                    return
            except quickjs.JSException as exc:
                # A job that throws out of the engine (out of memory in a reaction) must not be
                # swallowed: it fails whatever is running.
                if self._failed is None:
                    self._failed = Outcome("exception", _error_payload(exc))


def _now_ms() -> float:
    try:
        return time.monotonic() * 1000.0
    except BaseException:  # noqa: BLE001 - must never raise into QuickJS
        return 0.0
