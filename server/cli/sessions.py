"""The `session` and `ops` groups: live sessions, and the server's health and runtime state."""

from __future__ import annotations

from typing import Any

import click

from server.cli import lines, resolve
from server.cli.render import ID_ONLY, api_command, ids_of, output
from server.cli.state import CliState, call, pass_state
from server.client import VmClient


@click.group()
def session() -> None:
    """Sessions: live JavaScript runtimes built from a template."""


@session.command("create")
@click.option("--template-id", required=True, help="Template: its id, a unique id prefix or its name.")
@click.option("--workspace-id", default="default", show_default=True, help="Workspace of the session.")
@click.option("--base-commit", default="HEAD", show_default=True, help="Commit of the worktree.")
@click.option("--worktree-path", required=True, help="Absolute path of an existing directory.")
@ID_ONLY
@pass_state
def session_create(
    state: CliState, template_id: str, workspace_id: str, base_commit: str, worktree_path: str, id_only: bool
) -> None:
    """Create a session (runs the template's libraries and startup files)."""

    async def go(c: VmClient) -> dict[str, Any]:
        return await c.create_session(
            template_id=await resolve.template_id(c, template_id),
            workspace_id=workspace_id,
            base_commit_oid=base_commit,
            worktree_path=worktree_path,
        )

    output(state, call(state, go), ids_of if id_only else lines.session_created)


@session.command("fork")
@click.argument("session_id", metavar="SESSION_ID")
@click.option("--worktree-path", help="The parent's worktree or a directory inside it (default: the same).")
@click.option("--workspace-id", help="Workspace of the fork (default: the parent's).")
@click.option("--base-commit", help="Commit of the fork (default: the parent's).")
@ID_ONLY
@pass_state
def session_fork(
    state: CliState,
    session_id: str,
    worktree_path: str | None,
    workspace_id: str | None,
    base_commit: str | None,
    id_only: bool,
) -> None:
    """Fork a live session: a new session holding a copy of its state (API.md §11)."""

    async def go(c: VmClient) -> dict[str, Any]:
        parent = await resolve.session_id(c, session_id)
        return await c.fork_session(
            parent, worktree_path=worktree_path, workspace_id=workspace_id, base_commit_oid=base_commit
        )

    output(state, call(state, go), ids_of if id_only else lines.session_forked)


@session.command("list")
@click.option("--status", help="Only sessions in this status (starting, ready, crashed, closed).")
@click.option("--template-id", help="Only sessions built from this template (id, prefix or name).")
@ID_ONLY
@pass_state
def session_list(state: CliState, status: str | None, template_id: str | None, id_only: bool) -> None:
    """List sessions, newest first."""

    async def go(c: VmClient) -> list[dict[str, Any]]:
        tid = await resolve.template_id(c, template_id) if template_id else None
        return await c.list_sessions(status=status, template_id=tid)

    output(state, call(state, go), ids_of if id_only else lines.sessions_table)


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
