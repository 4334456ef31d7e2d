"""The interactive `vm-system repl`: a terminal REPL over a session (the terminal side).

Node-like: readline editing, `...` for an unfinished statement, history in
`~/.vm-system/history`, Ctrl+C cancels a running input or clears the line, Ctrl+D leaves.
Tab completes names and properties from the server (API.md §12). On a terminal, timers left
pending by an input keep running in the session's background execution, and their output is
printed as it comes, above the prompt and the half-typed line, which are drawn again below it;
`.stop` cancels them. Piped input waits for timers, as a script does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import sys
import threading
from pathlib import Path
from typing import Any

import click

from server.cli.incomplete import is_incomplete
from server.cli.render import ExecutionPrinter, use_color
from server.cli.repl_link import Item, SessionLink
from server.cli.resolve import session_id as resolve_session
from server.cli.state import CliState, LoopThread, error_line, fail, fail_api
from server.client import ApiError

__all__ = ["ReplShell", "is_incomplete"]

# Word boundaries for Tab: everything but identifier characters, so `user.pro⇥` completes `pro`.
COMPLETER_DELIMS = " \t\n`~!@#%^&*()-=+[{]}\\|;:'\",<>/?."

HELP = (
    "Type JavaScript; state persists across inputs. Unfinished input (open brackets, trailing "
    "operator) continues on the next line. Tab completes names and properties.\n"
    "Timers keep running after an input ends; their output shows up as it comes. "
    ".stop cancels them.\n"
    ".exit leaves, Ctrl+C cancels or clears, Ctrl+D exits."
)


class ReplShell:
    """Interactive REPL over the WebSocket (REST polling when the server has none)."""

    def __init__(self, state: CliState, session_id: str) -> None:
        self.state = state
        self.given_id = session_id
        self.interactive = sys.stdin.isatty()
        self.color = use_color()
        self.history_path = Path.home() / ".vm-system" / "history"
        self.runner = LoopThread()
        self.link = SessionLink(
            state,
            session_id,
            on_background=self._background_item,
            on_queued=lambda: self._note("(queued: the session is busy; this runs when it is free)"),
            background=self.interactive,
        )
        self.background_printer = ExecutionPrinter(color=self.color, interactive=True)
        self._eof = False
        self._readline: Any = None
        self._rl_lib: Any = None  # GNU readline itself, to redraw the prompt after background output
        self._out = threading.Lock()
        self._prompt = ""
        self._at_prompt = False
        self._lines: list[str] = []  # lines of the statement being typed
        self._matches: list[str] = []

    # -- output -------------------------------------------------------------------------------

    def _error(self, exc: ApiError) -> None:
        click.echo(error_line(exc), err=True)

    def _note(self, text: str) -> None:
        click.echo(click.style(text, dim=True), err=True, color=self.color)

    def _background_item(self, item: Item) -> None:
        """Output of the background timers (from the loop thread), whenever it comes."""
        printer = self.background_printer
        with self._out:
            if not (self._at_prompt and self.interactive):
                (printer.event if "seq" in item else printer.final)(item)
                return
            sys.stdout.write("\r\x1b[K")  # the prompt line goes; the output takes its place
            sys.stdout.flush()
            (printer.event if "seq" in item else printer.final)(item)
            self._redraw_prompt()

    def _redraw_prompt(self) -> None:
        if self._rl_lib is not None:
            self._rl_lib.rl_forced_update_display()
        else:
            line = self._readline.get_line_buffer() if self._readline is not None else ""
            sys.stdout.write(self._prompt + line)
            sys.stdout.flush()

    # -- readline: history and completion -------------------------------------------------------

    def _setup_readline(self) -> None:
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
        readline.set_completer_delims(COMPLETER_DELIMS)
        readline.set_completer(self._complete)
        readline.parse_and_bind("tab: complete")
        # PyDLL keeps the GIL held while readline redraws, so it never runs at the same time as
        # the main thread's own readline calls (which also hold it).
        with contextlib.suppress(OSError, AttributeError):
            self._rl_lib = ctypes.PyDLL(readline.__file__)
            _ = self._rl_lib.rl_forced_update_display

    def _save_history(self) -> None:
        if self._readline is None:
            return
        try:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            self._readline.write_history_file(self.history_path)
        except OSError as exc:
            self._note(f"could not save the history to {self.history_path}: {exc}")

    def _complete(self, text: str, state: int) -> str | None:
        """readline's completer: the server's candidates for the word at the cursor."""
        if state == 0:
            self._matches = []
            rl = self._readline
            line, begin, end = rl.get_line_buffer(), rl.get_begidx(), rl.get_endidx()
            before = "".join(f"{earlier}\n" for earlier in self._lines)
            try:
                reply = self.runner.run(self.link.complete(before + line[:end], len(before) + end))
            except (ApiError, TimeoutError):
                return None
            start = int(reply.get("from", len(before) + begin)) - len(before)
            names = [str(c.get("name")) for c in reply.get("candidates") or []]
            if start >= begin:
                self._matches = [line[begin:start] + name for name in names]
            else:  # the server's word starts earlier than readline's
                typed = line[start:begin]
                self._matches = [name[len(typed) :] for name in names if name.startswith(typed)]
        return self._matches[state] if state < len(self._matches) else None

    # -- reading and running --------------------------------------------------------------------

    def _read_line(self, prompt: str) -> str:
        self._prompt = prompt
        with self._out:
            self._at_prompt = True
        try:
            return input(prompt)
        finally:
            with self._out:
                self._at_prompt = False

    def _read_statement(self) -> str:
        self._lines = []
        start = self._readline.get_current_history_length() if self._readline else 0
        while True:
            prompt = ("> " if not self._lines else "... ") if self.interactive else ""
            try:
                line = self._read_line(prompt)
            except EOFError:
                if not self._lines:
                    raise
                self._eof = True  # piped input ended mid-statement: let the server judge it
                return "\n".join(self._lines)
            self._lines.append(line)
            source = "\n".join(self._lines)
            if not is_incomplete(source):
                break
        if self._readline is not None and len(self._lines) > 1:
            # Keep a multi-line statement as one history entry.
            for pos in range(self._readline.get_current_history_length() - 1, start - 1, -1):
                self._readline.remove_history_item(pos)
            self._readline.add_history(source)
        self._lines = []
        return source

    def _run_statement(self, source: str) -> None:
        self.link.execution_id = None
        self.link.cancel_requested = False
        printer = ExecutionPrinter(color=self.color, interactive=True)
        future = self.runner.submit(self.link.execute(source, printer))
        while True:
            try:
                self.runner.wait(future)
                return
            except KeyboardInterrupt:
                if self.link.cancel_requested:
                    future.cancel()
                    self._note("(stopped waiting; the execution may still be running)")
                    return
                self.link.cancel_requested = True
                self._note("cancelling... (Ctrl+C again to stop waiting)")
                self.runner.submit(self.link.cancel())
            except ApiError as exc:
                self._error(exc)
                return
            except concurrent.futures.CancelledError:
                return

    def _command(self, command: str) -> bool:
        """A dot-command (`.help`, `.stop`); False when `command` is JavaScript."""
        if command == ".help":
            self._note(HELP)
        elif command == ".stop":
            try:
                stopped = self.runner.run(self.link.stop_timers())
            except ApiError as exc:
                self._error(exc)
                return True
            self._note("timers stopped" if stopped else "no timers are running")
        else:
            return False
        return True

    def run(self) -> int:
        try:
            self.link.session_id = self.runner.run(self._resolve())
            info = self.runner.run(self.link.open())
        except ApiError as exc:
            self.runner.run(self.link.close())
            self.runner.stop()
            fail_api(exc)
        except click.exceptions.Exit:  # an unknown or ambiguous id prefix: already said why
            self.runner.stop()
            raise
        try:
            status = info.get("status")
            if status != "ready":
                fail("SESSION_NOT_READY", f"session {info.get('id')} is {status}, not ready")
            if self.interactive:
                self._note(
                    f"session {info.get('id')} ({self.link.transport}). Tab completes, Ctrl+C "
                    f"cancels a running execution or clears the line, Ctrl+D exits, .help for help."
                )
            self._setup_readline()
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
                if self._command(command):
                    continue
                self._run_statement(source)
        finally:
            self._save_history()
            with contextlib.suppress(ApiError):
                self.runner.run(self.link.close())
            self.runner.stop()
        return 0

    async def _resolve(self) -> str:
        """The session's id from what was typed (a unique prefix works, as elsewhere)."""
        async with self.state.client() as client:
            return await resolve_session(client, self.given_id)
