"""Where a session lives, and where a new one goes (API.md §14): the cluster's one answer to both.

A session lives on the node that created it. Requests about it that reach another node are
forwarded there (``server/http/forward.py`` does the transport); this module only decides:
``None`` means "answer here" (the session is live here, or it is not live anywhere, so the local
answer is the right one: 404, 409, an idempotent close), a ``Remote`` names the node to ask.
Malformed ids are answered here too, so their 400 is the local one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from server import errors
from server.core.params import is_uuid, parse_uuid
from server.core.sessions import SessionService
from server.store.nodes import NodeStore, Owner

LIVE = ("starting", "ready")


@dataclass(frozen=True)
class Remote:
    node_id: str
    url: str


class Directory:
    def __init__(self, *, nodes: NodeStore, sessions: SessionService) -> None:
        self.nodes = nodes
        self.sessions = sessions
        self.node_id = sessions.node_id

    async def session_owner(self, raw_id: object, *, closing: bool = False) -> Remote | None:
        """The node to forward a request about this session to (None: answer here).

        A session whose node is gone (lost or stopped, not yet reaped) cannot be reached: 503,
        except for a close, which is settled here (the row is closed; the node, if it ever comes
        back, finds its sessions gone).
        """
        if not isinstance(raw_id, str) or not is_uuid(raw_id):
            return None
        session_id = parse_uuid(raw_id, "session")
        if session_id in self.sessions.live:
            return None
        owner = await self.nodes.session_owner(session_id=session_id)
        return self._remote(owner, closing=closing)

    async def execution_owner(self, raw_id: object) -> Remote | None:
        """The node to send a cancel to (None: answer here)."""
        if not isinstance(raw_id, str) or not is_uuid(raw_id):
            return None
        execution_id = parse_uuid(raw_id, "execution")
        pipeline = self.sessions.pipeline
        if execution_id in pipeline.running or execution_id in pipeline.backgrounds:
            return None
        found = await self.nodes.execution_owner(execution_id=execution_id)
        if found is None or found[0] != "running":
            return None
        return self._remote(found[1], closing=False)

    def _remote(self, owner: Owner | None, *, closing: bool) -> Remote | None:
        if owner is None or owner.session_status not in LIVE or owner.node_id in (None, self.node_id):
            return None
        if owner.node_status == "up" and owner.url:
            return Remote(owner.node_id, owner.url)
        if closing:
            return None
        raise errors.NodeUnavailable(
            f"session {owner.session_id} lives on node {owner.node_id}, which is "
            f"{owner.node_status or 'unknown'}; its sessions end when the cluster declares it lost",
            session_id=owner.session_id,
            node_id=owner.node_id,
        )

    async def placement(self) -> Remote | None:
        """Where a new session goes: here while this node has room, else the up node with the most
        room (None when none has any: the local answer is then 503 TOO_MANY_SESSIONS)."""
        cap = self.sessions.settings.max_sessions
        if not cap or len(self.sessions.live) < cap:
            return None
        best: tuple[float, Remote] | None = None
        for node in await self.nodes.list_nodes():
            if node["status"] != "up" or node["id"] == self.node_id:
                continue
            room = math.inf if not node["max_sessions"] else node["max_sessions"] - node["sessions"]
            if room > 0 and (best is None or room > best[0]):
                best = (room, Remote(node["id"], node["url"]))
        return None if best is None else best[1]
