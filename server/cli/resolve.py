"""Ids as people type them: a unique prefix (the UI shows 8 characters) or a template's name.

A full UUID is passed through untouched (the server then answers as it always did: the
original's scripts see the same lines), and so is a session or execution id that is not a
plausible prefix; a template that is neither an id nor a name is a local error. A prefix is
at least 4 hexadecimal digits (dashes allowed, as in a pasted UUID); one that matches nothing,
or more than one thing, is a local error that says which. Templates and sessions are listed
once per lookup; an execution prefix is looked up among the newest 1,000 executions of every
session (one request per session).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from server.cli.state import fail
from server.client import VmClient

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_PREFIX = re.compile(r"^[0-9a-fA-F][0-9a-fA-F-]{3,35}$")
_EXECUTIONS_PER_SESSION = 1000
_CONCURRENT_LISTS = 8


def _is_prefix(text: str) -> bool:
    return bool(_PREFIX.match(text)) and sum(c != "-" for c in text) >= 4


def _pick(given: str, what: str, items: Iterable[tuple[str, str]], lister: str) -> str:
    """The one id in ``items`` ((id, label) pairs) that starts with ``given``."""
    prefix = given.lower()
    found = sorted({(i, label) for i, label in items if i.lower().startswith(prefix)})
    if len(found) == 1:
        return found[0][0]
    if not found:
        fail(f"{what.upper()}_NOT_FOUND", f"no {what} id starts with {given!r} (`{lister}` lists them)")
    shown = ", ".join(f"{i[:12]}… ({label})" if label else f"{i[:12]}…" for i, label in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    fail("AMBIGUOUS_ID", f"{given!r} matches {len(found)} {what}s: {shown}{more}; type more of the id")


async def template_id(client: VmClient, given: str) -> str:
    """A template's id from its id, a unique id prefix, or its name."""
    if _UUID.match(given):
        return given
    templates = await client.list_templates()
    named = [t["id"] for t in templates if t.get("name") == given]  # names are unique
    if named:
        return str(named[0])
    if not _is_prefix(given):
        fail(
            "TEMPLATE_NOT_FOUND",
            f"no template is named {given!r}, and it is not a template id (`template list` lists them)",
        )
    items = ((str(t["id"]), str(t.get("name", ""))) for t in templates)
    return _pick(given, "template", items, "template list")


async def session_id(client: VmClient, given: str) -> str:
    """A session's id from its id or a unique id prefix."""
    if _UUID.match(given) or not _is_prefix(given):
        return given
    sessions = await client.list_sessions()
    items = ((str(s["id"]), str(s.get("status", ""))) for s in sessions)
    return _pick(given, "session", items, "session list")


async def execution_id(client: VmClient, given: str) -> str:
    """An execution's id from its id or a unique id prefix (searched in every session)."""
    if _UUID.match(given) or not _is_prefix(given):
        return given
    sessions = await client.list_sessions()
    gate = asyncio.Semaphore(_CONCURRENT_LISTS)

    async def executions_of(sid: str) -> list[dict[str, Any]]:
        async with gate:
            return await client.list_executions(sid, limit=_EXECUTIONS_PER_SESSION)

    pages = await asyncio.gather(*(executions_of(str(s["id"])) for s in sessions))
    items = ((str(e["id"]), str(e.get("kind", ""))) for page in pages for e in page)
    return _pick(given, "execution", items, "exec list SESSION_ID")


Resolver = Callable[[VmClient, str], Awaitable[str]]

# The resolver for each id argument's name.
BY_ARGUMENT: dict[str, Resolver] = {
    "template_id": template_id,
    "session_id": session_id,
    "execution_id": execution_id,
}
