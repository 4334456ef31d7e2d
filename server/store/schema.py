"""Schema creation and migration: idempotent, versioned in ``vm_meta``, safe for nodes starting at once.

Version 1 is the single-server schema. Version 2 adds the cluster (API.md §14): the ``nodes``
table, ``sessions.node_id`` with its index, and on PostgreSQL the ``vm_event_ids`` sequence that
hands out event ids in blocks (started past the largest id already stored). Every step checks
before it acts, so running it again, or on a database some steps already reached, is harmless.
On PostgreSQL the whole set-up holds a transaction-level advisory lock: nodes starting together
create the schema once, one after the other.
"""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from server.store.models import SCHEMA_VERSION

EVENT_ID_SEQUENCE = "vm_event_ids"
ID_BLOCK = 1000  # ids a node takes from the sequence at a time (its INCREMENT)
_SETUP_LOCK = 0x766D_7379_7374_656D  # "vmsystem": any constant every node agrees on


class SchemaTooNew(RuntimeError):
    """The database was written by a newer vm-system; refuse rather than corrupt it."""


def setup(engine: Engine) -> None:
    """Create what is missing and bring an older schema up to ``SCHEMA_VERSION``."""
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        if postgres:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SETUP_LOCK})
        SQLModel.metadata.create_all(conn)
        found = conn.execute(text("SELECT value FROM vm_meta WHERE key = 'schema_version'")).scalar()
        if found is not None and int(found) > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database schema version {found} is newer than this server ({SCHEMA_VERSION}); "
                "upgrade vm-system"
            )
        _add_cluster(conn, postgres)
        if found is None:
            conn.execute(
                text("INSERT INTO vm_meta (key, value) VALUES ('schema_version', :v)"),
                {"v": str(SCHEMA_VERSION)},
            )
        elif int(found) < SCHEMA_VERSION:
            conn.execute(
                text("UPDATE vm_meta SET value = :v WHERE key = 'schema_version'"), {"v": str(SCHEMA_VERSION)}
            )


def _add_cluster(conn: Connection, postgres: bool) -> None:
    """Version 2: sessions know their node; PostgreSQL hands out event ids."""
    columns = {c["name"] for c in inspect(conn).get_columns("sessions")}
    if "node_id" not in columns:
        conn.execute(text("ALTER TABLE sessions ADD COLUMN node_id VARCHAR"))
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_sessions_node_status ON sessions (node_id, status)"))
    if postgres:
        start = int(conn.execute(text("SELECT COALESCE(MAX(id), 0) + 1 FROM events")).scalar() or 1)
        conn.execute(
            text(
                f"CREATE SEQUENCE IF NOT EXISTS {EVENT_ID_SEQUENCE} "
                f"INCREMENT BY {ID_BLOCK} START WITH {start}"
            )
        )
