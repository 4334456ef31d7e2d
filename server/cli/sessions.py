"""The `session` and `ops` groups: live sessions, and the server's health and runtime state."""

from __future__ import annotations

import click

from server.cli import lines
from server.cli.render import api_command, output
from server.cli.state import CliState, call, pass_state


@click.group()
def session() -> None:
    """Sessions: live JavaScript runtimes built from a template."""


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
    output(state, data, lines.session_created)


@session.command("list")
@click.option("--status", help="Only sessions in this status (starting, ready, crashed, closed).")
@click.option("--template-id", help="Only sessions built from this template.")
@pass_state
def session_list(state: CliState, status: str | None, template_id: str | None) -> None:
    """List sessions, newest first."""
    data = call(state, lambda c: c.list_sessions(status=status, template_id=template_id))
    output(state, data, lines.sessions_table)


api_command(session, "get", "get_session", lines.session_detail, "Show a session.", arg="session_id")
api_command(
    session,
    "close",
    "close_session",
    "Closed session: {arg}",
    "Close a session (idempotent).",
    arg="session_id",
)


@click.group()
def ops() -> None:
    """Server health and runtime state."""


def _pretty(data: object) -> None:
    click.echo(lines.pretty(data))


api_command(ops, "health", "health", _pretty, "Check that the server and its store answer.")
api_command(ops, "runtime-summary", "runtime_summary", _pretty, "Live sessions and running executions.")
