"""`vm-system help [TOPIC]`: the documentation topics shipped in the package, and command help."""

from __future__ import annotations

import importlib.resources

import click

# The original's slugs, in its order; the texts (server/cli/topics/*.md) describe this project.
TOPICS = (
    "getting-started",
    "architecture",
    "templates-and-sessions",
    "api-reference",
    "cli-command-reference",
    "examples",
    "contributing",
)


def topic_text(slug: str) -> str:
    return importlib.resources.files("server.cli").joinpath("topics", f"{slug}.md").read_text("utf-8")


def _title(slug: str) -> str:
    first = topic_text(slug).splitlines()[0]
    return first.lstrip("# ").strip()


@click.command("help")
@click.argument("topic", nargs=-1)
@click.pass_context
def help_command(ctx: click.Context, topic: tuple[str, ...]) -> None:
    """Show a documentation topic, or a command's help (`vm-system help template create`).

    Without TOPIC, lists the topics.
    """
    if not topic:
        click.echo("Documentation topics (vm-system help <topic>):\n")
        for slug in TOPICS:
            click.echo(f"  {slug:<24} {_title(slug)}")
        click.echo("\nCommands: vm-system --help, or vm-system help <command> [<subcommand>].")
        return
    if len(topic) == 1 and topic[0] in TOPICS:
        click.echo(topic_text(topic[0]).rstrip("\n"))
        return
    root = ctx.find_root()
    command: click.Command | None = root.command
    path = ["vm-system"]  # the console script's name, whatever called us
    for word in topic:
        found = command.get_command(ctx, word) if isinstance(command, click.Group) else None
        if found is None:
            raise click.UsageError(
                f"no help topic or command {' '.join(topic)!r}; topics: {', '.join(TOPICS)}"
            )
        command = found
        path.append(word)
    assert command is not None
    with click.Context(command, info_name=" ".join(path), parent=None) as sub:
        click.echo(command.get_help(sub))
