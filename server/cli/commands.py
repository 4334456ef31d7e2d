"""The root `vm-system` group and its global options, `serve`, `repl`, and the groups wired in."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import click

from server.cli.executions import exec_
from server.cli.help import help_command
from server.cli.libs import libs
from server.cli.repl import ReplShell
from server.cli.sessions import ops, session
from server.cli.state import DEFAULT_SERVER_URL, CliState, fail, pass_state
from server.cli.templates import template

LOG_LEVELS = ("debug", "info", "warn", "warning", "error")

# --------------------------------------------------------------------------------------------
# Root group and serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--server-url",
    envvar="VM_SYSTEM_URL",
    default=DEFAULT_SERVER_URL,
    show_default=True,
    help="Base URL of the vm-system server (env VM_SYSTEM_URL).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON response.")
@click.option("--token", envvar="VM_SYSTEM_TOKEN", help="Bearer token (env VM_SYSTEM_TOKEN).")
@click.option("--db", metavar="PATH", help="Database for `serve`: a SQLite file or a postgresql:// URL.")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Log level of `serve` (and of this command's own logging).",
)
@click.version_option(package_name="vm-system", prog_name="vm-system")
@click.pass_context
def cli(
    ctx: click.Context,
    server_url: str,
    as_json: bool,
    token: str | None,
    db: str | None,
    log_level: str | None,
) -> None:
    """Long-lived JavaScript sessions on QuickJS: server and command-line client.

    `vm-system help` lists the documentation topics.
    """
    ctx.obj = CliState(server_url=server_url, json=as_json, token=token or None, db=db, log_level=log_level)
    if log_level and ctx.invoked_subcommand != "serve":
        logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="vm-system")


@cli.command()
@click.option("--listen", help="HOST:PORT to listen on (default 127.0.0.1:3210).")
@click.option("--db", help="Database: a SQLite file path or a postgresql:// URL.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Library cache directory.")
@click.option("--max-sessions", type=int, help="Maximum live sessions (0 = unlimited).")
@click.option("--idle-timeout", type=float, help="Close sessions idle this many seconds (0 = off).")
@click.option("--token", help="Require this bearer token on every request.")
@click.option("--allowed-origins", help="Comma-separated extra browser origins allowed to call the API.")
@click.option("--allowed-hosts", help="Comma-separated extra Host names answered on a loopback address.")
@click.option("--no-token", is_flag=True, default=None, help="Listen beyond loopback without a token.")
@click.option("--max-connections", type=int, help="Open connections allowed (default 1000).")
@click.option("--max-file-bytes", type=int, help="Largest run-file/startup file (default 10 MiB).")
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
@click.option("--allow-modules", help="Native modules templates may enable (default fs,database).")
@click.option("--worktree-root", multiple=True, help="Directory session worktrees must be in (repeatable).")
@click.option(
    "--checkpoints/--no-checkpoints",
    default=None,
    help="Keep a forked checkpoint per session: rollback, fork and completion (default on).",
)
@click.option("--node-id", help="This node's id in a cluster (default: host name and port).")
@click.option("--advertise-url", help="URL the other nodes reach this one at (default: the listen URL).")
@click.option("--node-timeout", type=float, help="Seconds without heartbeat before a node is lost (10).")
@pass_state
def serve(
    state: CliState,
    listen: str | None,
    db: str | None,
    cache_dir: str | None,
    max_sessions: int | None,
    idle_timeout: float | None,
    token: str | None,
    allowed_origins: str | None,
    allowed_hosts: str | None,
    no_token: bool | None,
    max_connections: int | None,
    max_file_bytes: int | None,
    log_level: str | None,
    allow_modules: str | None,
    worktree_root: tuple[str, ...],
    checkpoints: bool | None,
    node_id: str | None,
    advertise_url: str | None,
    node_timeout: float | None,
) -> None:
    """Run the API server."""
    from server.config import ConfigError, Settings
    from server.errors import DomainError

    try:
        log_level = log_level or state.log_level  # `serve --db` wins over the global --db
        settings = Settings.from_env(
            listen=listen,
            db_url=db if db is not None else state.db,
            cache_dir=cache_dir,
            max_sessions=max_sessions,
            idle_timeout_s=idle_timeout,
            token=token if token is not None else state.token,
            allowed_origins=allowed_origins,
            allowed_hosts=allowed_hosts,
            no_token=no_token,
            max_connections=max_connections,
            max_file_bytes=max_file_bytes,
            log_level=log_level.upper() if log_level else None,
            allow_modules=allow_modules,
            worktree_roots=worktree_root or None,
            checkpoints=checkpoints,
            node_id=node_id,
            advertise_url=advertise_url,
            node_timeout_s=node_timeout,
        )
        from server.app import run_server

        run_server(settings)
    except ConfigError as exc:
        fail("CONFIG", str(exc), exit_code=2)
    except DomainError as exc:  # e.g. the store cannot be opened; the log has the details
        fail(exc.code, exc.message)
    except OSError as exc:  # e.g. the address is already in use
        fail("SERVE", f"cannot start the server: {exc}")


# --------------------------------------------------------------------------------------------
# repl, and the groups that live in their own modules


@cli.command("repl")
@click.argument("session_id")
@pass_state
def repl(state: CliState, session_id: str) -> None:
    """Interactive JavaScript REPL in a session."""
    ReplShell(state, session_id).run()


for _group in (template, session, exec_, ops, libs, help_command):
    cli.add_command(_group)


def _set_global(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        state = ctx.find_object(CliState)
        if state is not None and value not in (None, False):
            setattr(state, attr, value)

    return callback


# The root options a script may also put after the command, as the original's persistent
# flags allowed (`vm-system exec list SID --server-url URL`): (flags, state attribute, option kwargs).
_LATE_GLOBALS: list[tuple[list[str], str, dict[str, Any]]] = [
    (["--json"], "json", {"is_flag": True, "help": "Print the raw JSON response (as the global --json)."}),
    (["--server-url"], "server_url", {"hidden": True}),
    (["--db"], "db", {"hidden": True}),
    (["--log-level"], "log_level", {"hidden": True, "type": click.Choice(LOG_LEVELS, case_sensitive=False)}),
]


def _globals_after_the_command(group: click.Group) -> None:
    """Accept the global options after the command too (``vm-system ops health --json``)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _globals_after_the_command(command)
            continue
        taken = {opt for p in command.params for opt in p.opts}
        for flags, attr, kwargs in _LATE_GLOBALS:
            if flags[0] not in taken:
                command.params.append(
                    click.Option(
                        [*flags, f"late_{attr}"], expose_value=False, callback=_set_global(attr), **kwargs
                    )
                )


_globals_after_the_command(cli)
