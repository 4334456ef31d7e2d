"""The interactive `vm-system repl`: a terminal REPL over a session and its multi-line heuristic."""

from __future__ import annotations

import concurrent.futures
import sys
from pathlib import Path
from typing import Any

import click

from server.cli.render import ExecutionPrinter, use_color
from server.cli.state import CliState, LoopThread, error_line, fail, fail_api
from server.client import ApiError, VmClient

_REGEX_PRECEDERS = set("(,=:[!&|?{};+-*%<>~^")
_CONTINUATION_CHARS = set("+-*%&|^!~<>=?:,.")
_CLOSERS = {")": "(", "]": "[", "}": "{"}


def is_incomplete(source: str) -> bool:
    """Heuristic: does this JavaScript need more lines (open bracket, string, trailing operator)?

    Errs towards "complete" on anything odd, so the server reports the syntax error.
    """
    stack: list[str] = []
    significant: list[str] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if stack and stack[-1] == "`":  # inside a template literal
            if c == "\\":
                i += 2
            elif c == "`":
                stack.pop()
                significant.append("`")
                i += 1
            elif source.startswith("${", i):
                stack.append("${")
                i += 2
            else:
                i += 1
            continue
        if c in "\"'":
            j = i + 1
            while j < n and source[j] != c and source[j] != "\n":
                j += 2 if source[j] == "\\" else 1
            significant.append("s")
            i = j + 1
            continue
        if source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
            continue
        if source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                return True
            i = end + 2
            continue
        if c == "/":
            prev = next((ch for ch in reversed(significant) if not ch.isspace()), "")
            if prev == "" or prev in _REGEX_PRECEDERS:
                j, in_class = i + 1, False
                while j < n and source[j] != "\n":
                    ch = source[j]
                    if ch == "\\":
                        j += 2
                        continue
                    if ch == "[":
                        in_class = True
                    elif ch == "]":
                        in_class = False
                    elif ch == "/" and not in_class:
                        break
                    j += 1
                significant.append("r")
                i = j + 1
                continue
        if c == "`":
            stack.append("`")
        elif c in "([{":
            stack.append(c)
        elif c in _CLOSERS:
            if c == "}" and stack and stack[-1] == "${":
                stack.pop()  # back inside the template literal
                i += 1
                continue
            if not stack or stack[-1] != _CLOSERS[c]:
                return False
            stack.pop()
        if not c.isspace():
            significant.append(c)
        i += 1
    if stack:
        return True
    tail = "".join(significant[-2:])
    if tail in ("++", "--"):
        return False
    return bool(tail) and tail[-1] in _CONTINUATION_CHARS


class ReplShell:
    """Interactive REPL over the WebSocket (REST polling when the server has none)."""

    def __init__(self, state: CliState, session_id: str) -> None:
        self.state = state
        self.session_id = session_id
        self.interactive = sys.stdin.isatty()
        self.color = use_color()
        self.history_path = Path.home() / ".vm-system" / "history"
        self.runner = LoopThread()
        self.client: VmClient | None = None
        self.sock: Any = None  # VmSocket, or None when the server has no WebSocket endpoint
        self.ws_supported = True
        self.execution_id: str | None = None
        self.cancel_requested = False
        self._eof = False
        self._readline: Any = None

    # -- event-loop side --------------------------------------------------------------------

    async def _open(self) -> dict[str, Any]:
        self.client = self.state.client()
        info = await self.client.get_session(self.session_id)
        await self._connect()
        return info

    async def _connect(self) -> None:
        assert self.client is not None
        if not self.ws_supported:
            return
        try:
            self.sock = await self.client.connect_ws()
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.ws_supported = False
            self.sock = None

    async def _close(self) -> None:
        if self.sock is not None:
            await self.sock.close()
        if self.client is not None:
            await self.client.close()

    async def _execute(self, source: str, printer: ExecutionPrinter) -> None:
        assert self.client is not None
        if self.ws_supported and (self.sock is None or self.sock.closed):
            await self._connect()
        cursor, final = 0, None
        if self.sock is not None:
            msg = {"type": "execute", "session_id": self.session_id, "input": source}
            reply = await self.sock.request(msg)
            self.execution_id = str(reply["execution"]["id"])
            if self.cancel_requested:
                await self._cancel()
            try:
                async for item in self.sock.follow(reply.get("subscription")):
                    if "seq" in item:
                        cursor = item["seq"]
                        printer.event(item)
                    else:
                        final = item
                printer.final(final or await self.client.get_execution(self.execution_id))
                return
            except ApiError as exc:
                if exc.code != "DISCONNECTED":
                    raise
                # Lost the socket mid-execution: resume from the cursor below.
        else:
            execution = await self.client.repl(self.session_id, source, wait=False)
            self.execution_id = str(execution["id"])
            if self.cancel_requested:
                await self._cancel()
        async for item in self.client.follow_execution(self.execution_id, cursor):
            (printer.event if "seq" in item else printer.final)(item)

    async def _cancel(self) -> None:
        if self.execution_id is None:
            return
        try:
            if self.sock is not None and not self.sock.closed:
                await self.sock.request({"type": "cancel", "execution_id": self.execution_id})
            else:
                assert self.client is not None
                await self.client.cancel_execution(self.execution_id)
        except ApiError as exc:
            if exc.code not in ("EXECUTION_NOT_RUNNING", "DISCONNECTED"):
                self._error(exc)

    # -- terminal side ----------------------------------------------------------------------

    def _error(self, exc: ApiError) -> None:
        click.echo(error_line(exc), err=True)

    def _note(self, text: str) -> None:
        click.echo(click.style(text, dim=True), err=True, color=self.color)

    def _setup_history(self) -> None:
        if not self.interactive:
            return
        try:
            import readline
        except ImportError:  # no line editing on this platform; input() still works
            return
        self._readline = readline
        readline.set_history_length(1000)
        try:
            readline.read_history_file(self.history_path)
        except (FileNotFoundError, OSError):
            pass

    def _save_history(self) -> None:
        if self._readline is None:
            return
        try:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            self._readline.write_history_file(self.history_path)
        except OSError as exc:
            self._note(f"could not save the history to {self.history_path}: {exc}")

    def _read_statement(self) -> str:
        lines: list[str] = []
        start = self._readline.get_current_history_length() if self._readline else 0
        while True:
            prompt = ("> " if not lines else "... ") if self.interactive else ""
            try:
                line = input(prompt)
            except EOFError:
                if not lines:
                    raise
                self._eof = True  # piped input ended mid-statement: let the server judge it
                return "\n".join(lines)
            lines.append(line)
            source = "\n".join(lines)
            if not is_incomplete(source):
                break
        if self._readline is not None and len(lines) > 1:
            # Keep a multi-line statement as one history entry.
            for pos in range(self._readline.get_current_history_length() - 1, start - 1, -1):
                self._readline.remove_history_item(pos)
            self._readline.add_history(source)
        return source

    def _run_statement(self, source: str) -> None:
        self.execution_id = None
        self.cancel_requested = False
        printer = ExecutionPrinter(color=self.color, interactive=True)
        future = self.runner.submit(self._execute(source, printer))
        while True:
            try:
                self.runner.wait(future)
                return
            except KeyboardInterrupt:
                if self.cancel_requested:
                    future.cancel()
                    self._note("(stopped waiting; the execution may still be running)")
                    return
                self.cancel_requested = True
                self._note("cancelling... (Ctrl+C again to stop waiting)")
                self.runner.submit(self._cancel())
            except ApiError as exc:
                self._error(exc)
                return
            except concurrent.futures.CancelledError:
                return

    def run(self) -> int:
        try:
            info = self.runner.run(self._open())
        except ApiError as exc:
            self.runner.run(self._close())
            self.runner.stop()
            fail_api(exc)
        try:
            status = info.get("status")
            if status != "ready":
                fail("SESSION_NOT_READY", f"session {info.get('id')} is {status}, not ready")
            if self.interactive:
                transport = "WebSocket" if self.sock is not None else "REST polling"
                self._note(
                    f"session {info.get('id')} ({transport}). Ctrl+C cancels a running "
                    f"execution or clears the line, Ctrl+D exits, .help for help."
                )
            self._setup_history()
            while not self._eof:
                try:
                    source = self._read_statement()
                except EOFError:
                    if self.interactive:
                        click.echo()
                    break
                except KeyboardInterrupt:
                    click.echo()
                    continue
                command = source.strip()
                if not command:
                    continue
                if command in (".exit", ".quit"):
                    break
                if command == ".help":
                    self._note(
                        "Type JavaScript; state persists across inputs. Unfinished input "
                        "(open brackets, trailing operator) continues on the next line.\n"
                        ".exit leaves, Ctrl+C cancels or clears, Ctrl+D exits."
                    )
                    continue
                self._run_statement(source)
        finally:
            self._save_history()
            try:
                self.runner.run(self._close())
            except ApiError:
                pass
            self.runner.stop()
        return 0
