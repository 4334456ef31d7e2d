"""What every command shares: the CLI state, running API calls from click, exit statuses."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click

from server.client import ApiError, VmClient

T = TypeVar("T")

DEFAULT_SERVER_URL = "http://127.0.0.1:3210"
EXIT_API_ERROR = 1
EXIT_INTERRUPTED = 130


@dataclass
class CliState:
    server_url: str
    json: bool
    token: str | None
    db: str | None = None  # the global --db, used by `serve` (the original's place for it)
    log_level: str | None = None  # the global --log-level

    def client(self) -> VmClient:
        return VmClient(self.server_url, token=self.token)


pass_state = click.make_pass_decorator(CliState)


def fail(code: str, message: str, exit_code: int = EXIT_API_ERROR) -> NoReturn:
    """A local failure (no answer from a server): ``Error: <CODE>: <message>``, exit 1."""
    click.echo(f"Error: {code}: {message}", err=True)
    raise click.exceptions.Exit(exit_code)


def error_line(exc: ApiError) -> str:
    """The stderr line for a failed call, in the original's words when the server answered.

    ``Error: api error (status=<n>, code=<CODE>): <message>`` for an error envelope,
    ``Error: api error (status=<n>): <what came back>`` for an HTTP error without one, and
    ``Error: <CODE>: <message>`` when there was no error answer (unreachable, not vm-system).
    """
    if exc.status >= 400:
        if exc.code == f"HTTP_{exc.status}":
            return f"Error: api error (status={exc.status}): {exc.message}"
        return f"Error: api error (status={exc.status}, code={exc.code}): {exc.message}"
    return f"Error: {exc.code}: {exc.message}"


def fail_api(exc: ApiError) -> NoReturn:
    click.echo(error_line(exc), err=True)
    raise click.exceptions.Exit(EXIT_API_ERROR)


def call(state: CliState, fn: Callable[[VmClient], Awaitable[T]]) -> T:
    """Run one API call on a fresh client; an `ApiError` ends the command with exit status 1."""

    async def go() -> T:
        async with state.client() as client:
            return await fn(client)

    try:
        return asyncio.run(go())
    except ApiError as exc:
        fail_api(exc)


class JsonObject(click.ParamType):
    """A command-line value that must be a JSON object (``invalid <option> JSON`` otherwise)."""

    name = "JSON"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dict):
            return value
        what = f"invalid {((param.name if param else None) or 'value').rstrip('_')} JSON"
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            self.fail(f"{what} ({exc}): {value!r}", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(f"{what}: must be a JSON object such as '{{\"key\": 1}}': {value!r}", param, ctx)
        return parsed


JSON_OBJECT = JsonObject()


class LoopThread:
    """An event loop in a background thread, so the main thread keeps Ctrl+C and `input()`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # The kernel may deliver SIGINT to any thread that does not block it; if it landed
        # here, the main thread's input() would never wake up. Keep Ctrl+C for the main thread.
        with contextlib.suppress(AttributeError, ValueError, OSError):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @staticmethod
    def wait(future: concurrent.futures.Future[T]) -> T:
        while True:  # short waits so a KeyboardInterrupt reaches the main thread promptly
            try:
                return future.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                continue

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.wait(self.submit(coro))

    def stop(self) -> None:
        async def cancel_all() -> None:
            # Let abandoned work unwind (closing its HTTP session) instead of dying mid-flight.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.submit(cancel_all()).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
