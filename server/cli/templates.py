"""The `template` group: templates, their capabilities, startup files, modules and libraries.

Every command takes this project's forms and the original's (UPSTREAM-CLI.md) side by side:
``template create NAME`` or ``--name NAME``, ``add-module ID NAME`` or ``--name NAME``, and so on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import click

from server.cli import lines
from server.cli.libs import local_cache_dir
from server.cli.render import ID_ONLY, api_command, echo_json, ids_of, output
from server.cli.resolve import template_id as resolve_template
from server.cli.state import JSON_OBJECT, CliState, call, fail, pass_state
from server.client import VmClient

# Wherever a template id is taken, a unique id prefix or the template's name works too.
_ID = click.argument("template_id", metavar="TEMPLATE_ID")


def on_template(
    state: CliState, template_id: str, fn: Callable[[VmClient, str], Awaitable[Any]]
) -> tuple[str, Any]:
    """Resolve ``template_id`` (resolve.py), then call ``fn(client, id)``: (the id, the answer)."""
    resolved: dict[str, str] = {}

    async def go(c: VmClient) -> Any:
        resolved["id"] = await resolve_template(c, template_id)
        return await fn(c, resolved["id"])

    data = call(state, go)
    return resolved["id"], data


@click.group()
def template() -> None:
    """Templates: what a session is built from (limits, modules, libraries, startup files)."""


def one_of(argument: str | None, option: str | None, what: str, flag: str) -> str:
    """A value given as an argument (this project's form) or as an option (the original's)."""
    if argument is not None and option is not None and argument != option:
        raise click.UsageError(f"the {what} is given twice, as {argument!r} and as {flag} {option!r}")
    value = option if option is not None else argument
    if value is None:
        raise click.UsageError(f"missing the {what}: pass it as an argument or with {flag}")
    return value


# --------------------------------------------------------------------------------------------
# Templates


@template.command("create")
@click.argument("name", required=False)
@click.option("--name", "name_option", metavar="NAME", help="Template name (or the NAME argument).")
@click.option("--engine", help="JavaScript engine: quickjs (goja is accepted as an alias).")
@ID_ONLY
@pass_state
def template_create(
    state: CliState, name: str | None, name_option: str | None, engine: str | None, id_only: bool
) -> None:
    """Create a template; prints `Created template: <name> (ID: <id>)`."""
    chosen = one_of(name, name_option, "template name", "--name")
    data = call(state, lambda c: c.create_template(chosen, engine=engine))
    output(state, data, ids_of if id_only else lines.template_created)


api_command(
    template, "list", "list_templates", lines.template_table, "List templates, newest first.", id_only=True
)
api_command(
    template,
    "get",
    "get_template",
    lines.template_detail,
    "Show a template with its settings, capabilities, startup files, modules and libraries.",
    arg="template_id",
)
api_command(
    template,
    "delete",
    "delete_template",
    "Deleted template: {arg}",
    "Delete a template (sessions made from it keep running).",
    arg="template_id",
)


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
@_ID
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
    _, data = on_template(
        state, template_id, lambda c, tid: c.update_template(tid, name=name, settings=settings)
    )
    output(state, data, lines.template_detail)


# --------------------------------------------------------------------------------------------
# Capabilities and startup files

_TRUE, _FALSE = {"1", "t", "true", "yes", "on"}, {"0", "f", "false", "no", "off"}


class _CobraBoolFlags(click.Command):
    """Also accepts ``--enabled=true|false``, the way the original's bool flags are spelled."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        fixed: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                fixed.extend(args[i:])
                break
            flag, eq, value = arg.partition("=")
            if eq and flag == "--enabled" and value.strip().lower() in _TRUE | _FALSE:
                arg = "--enabled" if value.strip().lower() in _TRUE else "--disabled"
            fixed.append(arg)
        return super().parse_args(ctx, fixed)


@template.command("add-capability", cls=_CobraBoolFlags)
@_ID
@click.option("--kind", default="module", show_default=True, help="module, global, fs, net or env.")
@click.option("--name", required=True, help="Capability name.")
@click.option("--config", type=JSON_OBJECT, default="{}", show_default=True, help="Config as a JSON object.")
@click.option(
    "--enabled/--disabled",
    default=True,
    show_default=True,
    help="Add it enabled or disabled (--enabled=false works too).",
)
@ID_ONLY
@pass_state
def template_add_capability(
    state: CliState,
    template_id: str,
    kind: str,
    name: str,
    config: dict[str, Any],
    enabled: bool,
    id_only: bool,
) -> None:
    """Add a capability; prints `Added capability: kind:name to template <id>`."""
    tid, data = on_template(
        state,
        template_id,
        lambda c, tid: c.add_capability(tid, kind=kind, name=name, enabled=enabled, config=config),
    )
    said = f"Added capability: {data.get('kind')}:{data.get('name')} to template {tid}"
    output(state, data, ids_of if id_only else lambda _: click.echo(said))


@template.command("remove-capability")
@_ID
@click.argument("capability", metavar="CAPABILITY")
@pass_state
def template_remove_capability(state: CliState, template_id: str, capability: str) -> None:
    """Remove a capability, given as its id (or a unique prefix), kind:name, or name."""
    tid, cap = _remove(
        state,
        template_id,
        capability,
        ("capability", "list-capabilities", "list_capabilities", "delete_capability"),
        lambda x: (x.get("id"), f"{x.get('kind')}:{x.get('name')}", x.get("name")),
    )
    said = f"Removed capability: {cap.get('kind')}:{cap.get('name')} from template {tid}"
    output(state, cap, lambda _: click.echo(said))


def _remove(
    state: CliState,
    template_id: str,
    given: str,
    kind: tuple[str, str, str, str],
    names: Callable[[dict[str, Any]], tuple[Any, ...]],
) -> tuple[str, dict[str, Any]]:
    """Find the template's item that ``given`` names (``names(item)``, or a unique id prefix)
    and delete it; ``kind`` is (what it is, the command that lists them, the client's list and
    delete methods)."""
    what, lister, list_method, delete_method = kind

    async def remove(c: VmClient, tid: str) -> dict[str, Any]:
        items: list[dict[str, Any]] = await getattr(c, list_method)(tid)
        exact = [x for x in items if given in names(x)]
        by_prefix = [x for x in items if len(given) >= 4 and str(x.get("id", "")).startswith(given.lower())]
        item = _one(exact or by_prefix, f"{what} {given!r} on template {tid}", f"template {lister}")
        await getattr(c, delete_method)(tid, str(item["id"]))
        return item

    return on_template(state, template_id, remove)


def _one(found: list[dict[str, Any]], what: str, lister: str) -> dict[str, Any]:
    """The one match, or a local error saying there is none or several."""
    if len(found) == 1:
        return found[0]
    if not found:
        fail("NOT_FOUND", f"no {what} (`vm-system {lister} TEMPLATE_ID` lists them)")
    fail("AMBIGUOUS_ID", f"{len(found)} matches for {what}; give its id instead")


api_command(
    template,
    "list-capabilities",
    "list_capabilities",
    lines.capabilities_table,
    "List a template's capabilities.",
    arg="template_id",
)


@template.command("add-startup")
@_ID
@click.argument("path", required=False)
@click.option("--path", "path_option", metavar="PATH", help="Worktree-relative file (or the PATH argument).")
@click.option("--order", "order_index", type=int, default=10, show_default=True, help="Run order position.")
@click.option("--mode", default="eval", show_default=True, help="Startup mode (only eval).")
@ID_ONLY
@pass_state
def template_add_startup(
    state: CliState,
    template_id: str,
    path: str | None,
    path_option: str | None,
    order_index: int,
    mode: str,
    id_only: bool,
) -> None:
    """Add a startup file (a path relative to the session's worktree)."""
    chosen = one_of(path, path_option, "startup file path", "--path")
    normalized = mode.strip().lower() or "eval"
    if normalized != "eval":  # refused before any request, in the original's words
        raise click.UsageError(
            f"unsupported startup mode {json.dumps(mode)}: only eval is currently supported"
        )
    tid, data = on_template(
        state,
        template_id,
        lambda c, tid: c.add_startup_file(tid, chosen, order_index=order_index, mode=normalized),
    )
    said = f"Added startup file: {data.get('path')} (order: {data.get('order_index')}) to template {tid}"
    output(state, data, ids_of if id_only else lambda _: click.echo(said))


@template.command("remove-startup")
@_ID
@click.argument("startup", metavar="STARTUP")
@pass_state
def template_remove_startup(state: CliState, template_id: str, startup: str) -> None:
    """Remove a startup file, given as its id (or a unique prefix) or its path."""
    tid, item = _remove(
        state,
        template_id,
        startup,
        ("startup file", "list-startup", "list_startup_files", "delete_startup_file"),
        lambda f: (f.get("id"), f.get("path")),
    )
    output(state, item, lambda _: click.echo(f"Removed startup file: {item.get('path')} from template {tid}"))


api_command(
    template,
    "list-startup",
    "list_startup_files",
    lines.startup_table,
    "List a template's startup files in run order.",
    arg="template_id",
)


# --------------------------------------------------------------------------------------------
# Modules and libraries: the same six commands twice


def _names_commands(noun: str, plural: str, example: str) -> None:
    def add_remove(verb: str, done: str, method: str, preposition: str) -> None:
        @template.command(f"{verb.lower()}-{noun}", help=f"{verb} a {noun} ({example}) on a template.")
        @_ID
        @click.argument("name", required=False)
        @click.option("--name", "name_option", metavar="NAME", help=f"The {noun} (or the NAME argument).")
        @pass_state
        def command(state: CliState, template_id: str, name: str | None, name_option: str | None) -> None:
            chosen = one_of(name, name_option, f"{noun} name", "--name")
            tid, data = on_template(state, template_id, lambda c, tid: getattr(c, method)(tid, chosen))
            said = f"{done} {noun}: {chosen} {preposition} template {tid}"
            output(state, data, lambda _: click.echo(said))

    add_remove("Add", "Added", f"add_template_{noun}", "to")
    add_remove("Remove", "Removed", f"remove_template_{noun}", "from")

    @template.command(f"list-{plural}", help=f"List the {plural} a template has, in order.")
    @_ID
    @pass_state
    def list_command(state: CliState, template_id: str) -> None:
        _, data = on_template(state, template_id, lambda c, tid: getattr(c, f"list_template_{plural}")(tid))
        output(state, data, lambda items: lines.names(items, f"No {plural} configured"))


_names_commands("module", "modules", "fs, database or exec")
_names_commands("library", "libraries", "e.g. lodash-4.17.21")


@template.command("list-available-modules")
def template_list_available_modules() -> None:
    """Print the native-module catalog as JSON (no server needed)."""
    from server.runtime import modules

    echo_json(modules.catalog_json())


@template.command("list-available-libraries")
def template_list_available_libraries() -> None:
    """Print the library catalog as JSON, `cached` as seen from here (no server needed)."""
    from server.runtime import libraries

    echo_json(libraries.catalog_json(local_cache_dir(None)[0]))
