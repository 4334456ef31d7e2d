"""Request and response schemas (pydantic): strict decoding of bodies, and the OpenAPI document.

Table models never go on the wire; these classes are the wire format. Request models are
strict (no coercion: ``"10"`` is not an int, ``true`` is not an int) and forbid unknown keys.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Integers travel to JavaScript and SQL: keep them within what both represent exactly.
MAX_INT = 2**53 - 1
MAX_NAME_LENGTH = 200
MIN_MEM_MB = 8  # QuickJS and the prelude need this much before any script runs
CAPABILITY_KINDS = ("module", "global", "fs", "net", "env")

# What the services check with their own error codes, said in the OpenAPI document too
# (json_schema_extra only: pydantic must not answer these first with a different code).
UUID = {"format": "uuid"}
NON_BLANK = {"minLength": 1, "pattern": "^[^\\x00]*[^\\x00\\s][^\\x00]*$"}
PRINTABLE_NAME = {
    "minLength": 1,
    "maxLength": MAX_NAME_LENGTH,
    "pattern": "^[^\\x00-\\x1f\\x7f]*[^\\x00-\\x20\\x7f][^\\x00-\\x1f\\x7f]*$",
}


def doc(default: Any = ..., **schema: Any) -> Any:
    return Field(default, json_schema_extra=schema)


# Path fields answer a NUL with INVALID_PATH (422) from the path checks, not the generic 400.
NUL_CHECKED_BY_SERVICE = frozenset({"path", "worktree_path"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# ------------------------------------------------------------------ requests


class TemplateCreate(Strict):
    name: str = doc(**PRINTABLE_NAME)
    engine: str = "quickjs"


class LimitsPatch(Strict):
    cpu_ms: int | None = Field(default=None, ge=0, le=MAX_INT)
    wall_ms: int | None = Field(default=None, ge=0, le=MAX_INT)
    mem_mb: int | None = Field(
        default=None,
        ge=0,
        le=MAX_INT,
        json_schema_extra={"not": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": MIN_MEM_MB}},
    )
    max_events: int | None = Field(default=None, ge=0, le=MAX_INT)
    max_output_kb: int | None = Field(default=None, ge=0, le=MAX_INT)


class ResolverPatch(Strict):
    roots: list[str] | None = None
    extensions: list[str] | None = None
    allow_absolute_repo_imports: bool | None = None


class RuntimePatch(Strict):
    esm: bool | None = None
    strict: bool | None = None
    console: bool | None = None


class SettingsPatch(Strict):
    limits: LimitsPatch | None = None
    resolver: ResolverPatch | None = None
    runtime: RuntimePatch | None = None


class TemplatePatch(Strict):
    name: str | None = doc(None, **PRINTABLE_NAME)
    settings: SettingsPatch | None = None


class CapabilityCreate(Strict):
    kind: str = doc(enum=list(CAPABILITY_KINDS))
    name: str = doc(**NON_BLANK)
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)


class StartupFileCreate(Strict):
    path: str = doc(minLength=1)
    order_index: int = Field(default=0, ge=-MAX_INT, le=MAX_INT)
    mode: str = "eval"


class NameBody(Strict):
    name: str = doc(minLength=1)


class SessionCreate(Strict):
    template_id: str = doc(**UUID)
    workspace_id: str = doc(**NON_BLANK)
    base_commit_oid: str = doc(**NON_BLANK)
    worktree_path: str = doc(**NON_BLANK)


class SessionFork(Strict):
    """Each field defaults to the parent's (API.md §11)."""

    worktree_path: str | None = None
    workspace_id: str | None = None
    base_commit_oid: str | None = None


class CompleteRequest(Strict):
    input: str = doc(minLength=0)  # "" is a fine input: it completes every global name
    cursor: int | None = Field(default=None, ge=0, le=MAX_INT)


class ReplRequest(Strict):
    session_id: str = doc(**UUID)
    input: str = doc(minLength=1)
    wait: bool = True
    timers: Literal["wait", "background"] = "wait"
    queue: bool = False


class RunFileRequest(Strict):
    session_id: str = doc(**UUID)
    path: str = doc(**NON_BLANK)
    args: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    wait: bool = True
    queue: bool = False


# ------------------------------------------------------------------ responses


class Limits(BaseModel):
    cpu_ms: int = 2000
    wall_ms: int = 5000
    mem_mb: int = 128
    max_events: int = 50000
    max_output_kb: int = 256


class Resolver(BaseModel):
    roots: list[str] = Field(default_factory=lambda: ["."])
    extensions: list[str] = Field(default_factory=lambda: [".js", ".mjs"])
    allow_absolute_repo_imports: bool = False


class RuntimeSettings(BaseModel):
    esm: bool = False
    strict: bool = False
    console: bool = True


class TemplateOut(BaseModel):
    id: str
    name: str
    engine: str
    is_active: bool
    exposed_modules: list[str]
    libraries: list[str]
    created_at: str
    updated_at: str


class SettingsOut(BaseModel):
    vm_id: str
    limits: Limits
    resolver: Resolver
    runtime: RuntimeSettings


class CapabilityOut(BaseModel):
    id: str
    vm_id: str
    kind: Literal["module", "global", "fs", "net", "env"]
    name: str
    enabled: bool
    config: dict[str, Any]


class StartupFileOut(BaseModel):
    id: str
    vm_id: str
    path: str
    order_index: int
    mode: str


class TemplateDetail(BaseModel):
    template: TemplateOut
    settings: SettingsOut
    capabilities: list[CapabilityOut]
    startup_files: list[StartupFileOut]


class SessionOut(BaseModel):
    id: str
    vm_id: str
    workspace_id: str
    base_commit_oid: str
    worktree_path: str
    status: Literal["starting", "ready", "crashed", "closed"]
    created_at: str
    closed_at: str | None = None
    last_error: str | None = None
    runtime_meta: dict[str, Any]
    node_id: str | None = None  # the node holding it (null: created before clusters)


class NodeOut(BaseModel):
    id: str
    url: str
    status: Literal["up", "lost", "stopped"]
    started_at: str
    heartbeat_at: str
    sessions: int
    version: str


class EventOut(BaseModel):
    id: int
    execution_id: str
    seq: int
    ts: str
    type: Literal["input_echo", "console", "value", "exception", "system"]
    payload: dict[str, Any]


class ExecutionOut(BaseModel):
    id: str
    session_id: str
    kind: Literal["startup", "repl", "run_file", "background"]
    input: str | None = None
    path: str | None = None
    args: dict[str, Any]
    env: dict[str, Any]
    status: Literal["running", "ok", "error", "timeout", "cancelled"]
    started_at: str
    ended_at: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metrics: dict[str, Any]


class Candidate(BaseModel):
    name: str
    kind: Literal["variable", "function", "class", "property", "keyword"]


class CompletionsOut(BaseModel):
    from_: int = Field(alias="from")
    to: int
    candidates: list[Candidate]


class ExecutionWithEvents(ExecutionOut):
    events: list[EventOut]


class ModuleOut(BaseModel):
    name: str
    description: str
    functions: list[str]


class LibraryOut(BaseModel):
    name: str
    id: str
    version: str
    global_: str = Field(alias="global")
    description: str
    cached: bool


class TemplateNameOut(BaseModel):
    template_id: str
    name: str


class StatusOut(BaseModel):
    status: str


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]


class SandboxOut(BaseModel):
    landlock: bool
    exec: Literal["bubblewrap", "off"]


class RuntimeSummary(BaseModel):
    node_id: str
    active_sessions: int
    active_session_ids: list[str]
    running_executions: int
    engine: str
    version: str
    sandbox: SandboxOut


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
