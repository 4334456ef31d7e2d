"""The cluster's ear: one dedicated PostgreSQL connection that LISTENs to the change notices.

Notices are lost while the connection is down, so the listener says when it is back
(``on_connected(again=True)``) and the reader of the notices catches up by cursor. A silent
connection is probed every few seconds (and TCP keepalives are on), so a dead link is noticed
even when nothing is being notified.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

PROBE_EVERY_S = 5.0
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


def libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://...`` as a libpq connection URI."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


class NotifyListener:
    def __init__(
        self,
        url: str,
        channel: str,
        *,
        name: str,
        on_payload: Callable[[str], None],
        on_connected: Callable[[bool], None],
    ) -> None:
        self.conninfo = libpq_url(url)
        self.channel = channel
        self.name = name  # application_name: lets an operator (or a test) find this connection
        self.on_payload = on_payload
        self.on_connected = on_connected
        self.connected = False
        self.reconnects = 0
        self._conn: psycopg.AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and LISTEN (a failure here fails the start), then keep listening."""
        self._conn = await self._connect()
        self.connected = True
        self.on_connected(False)
        self._task = asyncio.create_task(self._run(), name="cluster-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close()

    async def _connect(self) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(
            self.conninfo,
            autocommit=True,
            application_name=self.name,
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        await conn.execute(f'LISTEN "{self.channel}"')
        return conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                if self._conn is None:
                    self._conn = await self._connect()
                    self.connected = True
                    self.reconnects += 1
                    delay = RETRY_FIRST_S
                    log.info("cluster listener connected again; catching up by cursor")
                    self.on_connected(True)
                conn = self._conn
                async for notice in conn.notifies(timeout=PROBE_EVERY_S):
                    self.on_payload(notice.payload)
                await conn.execute("SELECT 1")  # quiet for a while: is the link still there?
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect and catch up
                if self.connected:
                    log.warning("cluster listener lost its connection (%s); reconnecting", exc)
                self.connected = False
                await self._close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
