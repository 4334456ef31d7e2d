"""The root `vm-system` group, `serve`, `repl`, and the template, session and ops commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from server.cli.executions import exec_
from server.cli.libs import libs
from server.cli.render import (
    CAPABILITIES,
    LIBRARIES,
    SESSION_KEYS,
    SESSIONS,
    STARTUP_FILES,
    TEMPLATE_KEYS,
    TEMPLATES,
    as_block,
    as_table,
    echo_names,
    output,
    print_execution_block,
    print_template_detail,
)
from server.cli.repl import ReplShell
from server.cli.state import DEFAULT_SERVER_URL, JSON_OBJECT, CliState, call, fail, pass_state

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
@click.version_option(package_name="vm-system", prog_name="vm-system")
@click.pass_context
def cli(ctx: click.Context, server_url: str, as_json: bool, token: str | None) -> None:
    """Long-lived JavaScript sessions on QuickJS: server and command-line client."""
    ctx.obj = CliState(server_url=server_url, json=as_json, token=token or None)


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
@click.option("--allowed-origins", help="Comma-separated browser origins allowed on the WebSocket.")
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
@click.option("--allow-modules", help="Native modules templates may enable (default fs,database).")
@click.option("--worktree-root", multiple=True, help="Directory session worktrees must be in (repeatable).")
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
    log_level: str | None,
    allow_modules: str | None,
    worktree_root: tuple[str, ...],
) -> None:
    """Run the API server."""
    from server.config import ConfigError, Settings
    from server.errors import DomainError

    try:
        settings = Settings.from_env(
            listen=listen,
            db_url=db,
            cache_dir=cache_dir,
            max_sessions=max_sessions,
            idle_timeout_s=idle_timeout,
            token=token if token is not None else state.token,
            allowed_origins=allowed_origins,
            log_level=log_level.upper() if log_level else None,
            allow_modules=allow_modules,
            worktree_roots=worktree_root or None,
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
# Commands that take ids/names and print the response


@cli.group()
def template() -> None:
    """Templates: what a session is built from (limits, modules, libraries, startup files)."""


@cli.group()
def session() -> None:
    """Sessions: live JavaScript runtimes built from a template."""


@cli.group()
def ops() -> None:
    """Server health and runtime state."""


_HELP = {
    "template list": "List templates, newest first.",
    "template get": "Show a template with its settings, capabilities and startup files.",
    "template delete": "Delete a template (sessions made from it keep running).",
    "template list-capabilities": "List a template's capabilities.",
    "template list-startup": "List a template's startup files in run order.",
    "template add-module": "Enable a native module (fs, database, exec) in a template.",
    "template remove-module": "Remove a native module from a template.",
    "template list-modules": "List the native modules a template enables.",
    "template add-library": "Add a catalog library (e.g. lodash-4.17.21) to a template.",
    "template remove-library": "Remove a library from a template.",
    "template list-libraries": "List the libraries a template loads, in order.",
    "template list-available-modules": "List the native modules a template can enable.",
    "template list-available-libraries": "List the library catalog as the server sees it.",
    "session get": "Show a session.",
    "session close": "Close a session (idempotent).",
    "exec get": "Show an execution.",
    "exec cancel": "Cancel a running execution.",
    "ops health": "Check that the server and its store answer.",
    "ops runtime-summary": "Live sessions and running executions.",
}


def _simple(group: click.Group, name: str, args: str, method: str, human: Callable[[Any], None]) -> None:
    """Add `group name ARGS...` that calls `VmClient.<method>(*ARGS)` and prints the answer."""
    names = args.split()

    def callback(**values: str) -> None:
        state = click.get_current_context().find_object(CliState)
        assert state is not None
        data = call(state, lambda c: getattr(c, method)(*(values[n] for n in names)))
        output(state, data, human)

    params: list[click.Parameter] = [
        click.Argument([n], metavar="ID" if n == "id" else n.upper()) for n in names
    ]
    help_ = _HELP[f"{group.name} {name}"]
    group.add_command(click.Command(name, callback=callback, params=params, help=help_))


def _said(verb: str, noun: str, key: str = "name") -> Callable[[Any], None]:
    return lambda d: click.echo(f"{verb} {noun} {d.get(key)}")


_T, _S, _E = template, session, exec_
for _group, _name, _args, _method, _human in [
    (_T, "list", "", "list_templates", as_table(TEMPLATES)),
    (_T, "get", "id", "get_template", print_template_detail),
    (_T, "delete", "id", "delete_template", _said("Deleted", "template", "template_id")),
    (_T, "list-capabilities", "id", "list_capabilities", as_table(CAPABILITIES)),
    (_T, "list-startup", "id", "list_startup_files", as_table(STARTUP_FILES)),
    (_T, "add-module", "id name", "add_template_module", _said("Added", "module")),
    (_T, "remove-module", "id name", "remove_template_module", _said("Removed", "module")),
    (_T, "list-modules", "id", "list_template_modules", echo_names),
    (_T, "add-library", "id name", "add_template_library", _said("Added", "library")),
    (_T, "remove-library", "id name", "remove_template_library", _said("Removed", "library")),
    (_T, "list-libraries", "id", "list_template_libraries", echo_names),
    (_T, "list-available-modules", "", "list_modules", as_table("name functions description")),
    (_T, "list-available-libraries", "", "list_libraries", as_table(LIBRARIES)),
    (_S, "get", "id", "get_session", as_block(SESSION_KEYS)),
    (_S, "close", "id", "close_session", as_block(SESSION_KEYS)),
    (_E, "get", "id", "get_execution", print_execution_block),
    (_E, "cancel", "id", "cancel_execution", print_execution_block),
    (ops, "health", "", "health", as_block()),
    (ops, "runtime-summary", "", "runtime_summary", as_block()),
]:
    _simple(_group, _name, _args, _method, _human)


# --------------------------------------------------------------------------------------------
# template and session commands with options


@template.command("create")
@click.argument("name")
@click.option("--engine", help="JavaScript engine (only quickjs).")
@pass_state
def template_create(state: CliState, name: str, engine: str | None) -> None:
    """Create a template."""
    data = call(state, lambda c: c.create_template(name, engine=engine))
    output(state, data, as_block(TEMPLATE_KEYS))


def _limit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for key, what in reversed(
        [
            ("cpu_ms", "CPU time per execution, ms"),
            ("wall_ms", "elapsed time per execution, ms"),
            ("mem_mb", "memory, MiB"),
            ("max_events", "events per execution"),
            ("max_output_kb", "console output per execution, KiB"),
        ]
    ):
        flag = "--" + key.replace("_", "-")
        help_ = f"Limit: {what} (0 = none)."
        fn = click.option(flag, key, type=click.IntRange(min=0), help=help_)(fn)
    return fn


@template.command("update")
@click.argument("template_id", metavar="ID")
@click.option("--name", help="New name.")
@click.option("--limits", type=JSON_OBJECT, help="Limits as JSON, e.g. '{\"cpu_ms\": 1000}'.")
@_limit_options
@click.option("--runtime", type=JSON_OBJECT, help="Runtime as JSON, e.g. '{\"strict\": true}'.")
@click.option("--resolver", type=JSON_OBJECT, help="Resolver settings as JSON.")
@pass_state
def template_update(
    state: CliState,
    template_id: str,
    name: str | None,
    limits: dict[str, Any] | None,
    runtime: dict[str, Any] | None,
    resolver: dict[str, Any] | None,
    **limit_flags: int | None,
) -> None:
    """Rename a template or change its settings (merged key by key; flags win over --limits)."""
    merged = {**(limits or {}), **{k: v for k, v in limit_flags.items() if v is not None}}
    settings = {"limits": merged or None, "runtime": runtime, "resolver": resolver}
    settings = {k: v for k, v in settings.items() if v is not None}
    if name is None and not settings:
        raise click.UsageError(
            "nothing to update: pass --name, --limits (or --cpu-ms, --wall-ms, ...), --runtime or --resolver"
        )
    data = call(state, lambda c: c.update_template(template_id, name=name, settings=settings))
    output(state, data, print_template_detail)


@template.command("add-capability")
@click.argument("template_id", metavar="ID")
@click.option("--kind", required=True, help="module, global, fs, net or env.")
@click.option("--name", required=True, help="Capability name.")
@click.option("--config", type=JSON_OBJECT, help="Configuration as a JSON object.")
@click.option("--disabled", is_flag=True, help="Add it disabled.")
@pass_state
def template_add_capability(
    state: CliState,
    template_id: str,
    kind: str,
    name: str,
    config: dict[str, Any] | None,
    disabled: bool,
) -> None:
    """Add a capability to a template."""
    data = call(
        state,
        lambda c: c.add_capability(template_id, kind=kind, name=name, enabled=not disabled, config=config),
    )
    output(state, data, as_block())


@template.command("add-startup")
@click.argument("template_id", metavar="ID")
@click.argument("path")
@click.option("--order", "order_index", type=int, help="Position in the startup sequence.")
@click.option("--mode", help="Startup mode (only eval).")
@pass_state
def template_add_startup(
    state: CliState, template_id: str, path: str, order_index: int | None, mode: str | None
) -> None:
    """Add a startup file (a path relative to the session's worktree)."""
    data = call(state, lambda c: c.add_startup_file(template_id, path, order_index=order_index, mode=mode))
    output(state, data, as_block())


@session.command("create")
@click.option("--template-id", required=True, help="Template to build the session from.")
@click.option("--workspace-id", required=True, help="Workspace the session belongs to.")
@click.option("--base-commit", required=True, help="Commit the worktree is checked out at.")
@click.option("--worktree-path", required=True, help="Absolute path of an existing directory.")
@pass_state
def session_create(
    state: CliState, template_id: str, workspace_id: str, base_commit: str, worktree_path: str
) -> None:
    """Create a session (runs the template's libraries and startup files)."""
    data = call(
        state,
        lambda c: c.create_session(
            template_id=template_id,
            workspace_id=workspace_id,
            base_commit_oid=base_commit,
            worktree_path=worktree_path,
        ),
    )
    output(state, data, as_block(SESSION_KEYS))


@session.command("list")
@click.option("--status", help="Only sessions in this status (starting, ready, crashed, closed).")
@click.option("--template-id", help="Only sessions built from this template.")
@pass_state
def session_list(state: CliState, status: str | None, template_id: str | None) -> None:
    """List sessions, newest first."""
    data = call(state, lambda c: c.list_sessions(status=status, template_id=template_id))
    output(state, data, as_table(SESSIONS))


# --------------------------------------------------------------------------------------------
# repl, and the groups that live in their own modules


@cli.command("repl")
@click.argument("session_id")
@pass_state
def repl(state: CliState, session_id: str) -> None:
    """Interactive JavaScript REPL in a session."""
    ReplShell(state, session_id).run()


cli.add_command(exec_)
cli.add_command(libs)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(CliState).json = True  # type: ignore[union-attr]


def _json_after_the_command(group: click.Group) -> None:
    """Accept ``--json`` after the command too (``vm-system ops health --json``)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _json_after_the_command(command)
        elif not any("--json" in p.opts for p in command.params if isinstance(p, click.Option)):
            command.params.append(
                click.Option(
                    ["--json", "json_after"],
                    is_flag=True,
                    expose_value=False,
                    callback=_set_json,
                    help="Print the raw JSON response (same as the global --json).",
                )
            )


_json_after_the_command(cli)
