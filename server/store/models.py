"""SQLModel table definitions: the persisted shape of templates, sessions, executions, events."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 2  # 2: nodes table, sessions.node_id, the event id sequence (PostgreSQL)

# Timestamps are stored as fixed-width RFC 3339 strings ("2026-01-02T03:04:05.123456Z"):
# they read back byte-identical on SQLite and PostgreSQL and sort lexicographically.
# JSON-valued columns are stored as text and decoded by the store.


class MetaRow(SQLModel, table=True):
    __tablename__ = "vm_meta"
    key: str = Field(primary_key=True)
    value: str


class TemplateRow(SQLModel, table=True):
    __tablename__ = "templates"
    id: str = Field(primary_key=True)
    name: str = Field(sa_column_kwargs={"unique": True}, index=False)
    engine: str
    is_active: bool = True
    exposed_modules: str = Field(default="[]", sa_type=Text)
    libraries: str = Field(default="[]", sa_type=Text)
    created_at: str
    updated_at: str


class SettingsRow(SQLModel, table=True):
    __tablename__ = "template_settings"
    vm_id: str = Field(
        sa_column=Column(Text, ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True)
    )
    limits: str = Field(sa_type=Text)
    resolver: str = Field(sa_type=Text)
    runtime: str = Field(sa_type=Text)


class CapabilityRow(SQLModel, table=True):
    __tablename__ = "capabilities"
    __table_args__ = (UniqueConstraint("vm_id", "kind", "name", name="uq_capability"),)
    id: str = Field(primary_key=True)
    vm_id: str = Field(sa_column=Column(Text, ForeignKey("templates.id", ondelete="CASCADE"), nullable=False))
    kind: str
    name: str
    enabled: bool = True
    config: str = Field(default="{}", sa_type=Text)
    created_at: str


class StartupFileRow(SQLModel, table=True):
    __tablename__ = "startup_files"
    __table_args__ = (UniqueConstraint("vm_id", "path", name="uq_startup_path"),)
    id: str = Field(primary_key=True)
    vm_id: str = Field(sa_column=Column(Text, ForeignKey("templates.id", ondelete="CASCADE"), nullable=False))
    path: str
    order_index: int = 0
    mode: str = "eval"
    created_at: str


class NodeRow(SQLModel, table=True):
    """A server of the cluster (API.md §14). ``incarnation`` changes at every start: a process
    whose incarnation is no longer in the row has been replaced and must not act for the node."""

    __tablename__ = "nodes"
    id: str = Field(primary_key=True)
    url: str
    status: str  # up | lost | stopped
    incarnation: str
    started_at: str
    heartbeat_at: str
    version: str
    max_sessions: int = 0  # 0 = no limit (placement reads it)


class SessionRow(SQLModel, table=True):
    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_created", "created_at"),
        Index("ix_sessions_node_status", "node_id", "status"),
    )
    id: str = Field(primary_key=True)
    # No foreign key: deleting a template keeps its sessions (API.md section 9).
    vm_id: str = Field(index=True)
    workspace_id: str
    base_commit_oid: str
    worktree_path: str = Field(sa_type=Text)
    status: str = Field(index=True)
    created_at: str
    closed_at: str | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    runtime_meta: str = Field(default="{}", sa_type=Text)
    node_id: str | None = None  # the node whose worker holds it (NULL: written before clusters)


class ExecutionRow(SQLModel, table=True):
    __tablename__ = "executions"
    __table_args__ = (Index("ix_executions_session_started", "session_id", "started_at"),)
    id: str = Field(primary_key=True)
    session_id: str = Field(sa_column=Column(Text, ForeignKey("sessions.id"), nullable=False))
    kind: str
    input: str | None = Field(default=None, sa_type=Text)
    path: str | None = Field(default=None, sa_type=Text)
    args: str = Field(default="{}", sa_type=Text)
    env: str = Field(default="{}", sa_type=Text)
    status: str = Field(index=True)
    started_at: str
    ended_at: str | None = None
    result: str | None = Field(default=None, sa_type=Text)
    error: str | None = Field(default=None, sa_type=Text)
    metrics: str = Field(default="{}", sa_type=Text)


class EventRow(SQLModel, table=True):
    __tablename__ = "events"
    # Only the indexes reads need: every extra index roughly halves bulk-insert speed. Session
    # feeds find their events through executions(session_id) and the (execution_id, seq) key.
    __table_args__ = (UniqueConstraint("execution_id", "seq", name="uq_event_seq"),)
    # Ids are assigned by the server (one counter, increasing across the whole server), so a
    # batch is one executemany with no RETURNING round trip. On SQLite the column is an
    # INTEGER PRIMARY KEY, i.e. the rowid itself, not a second b-tree.
    id: int = Field(
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False)
    )
    execution_id: str = Field(sa_column=Column(Text, ForeignKey("executions.id"), nullable=False))
    seq: int
    ts: str
    type: str
    payload: str = Field(sa_type=Text)
