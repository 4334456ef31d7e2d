"""Request and response schemas (pydantic): strict decoding of bodies, and the OpenAPI document.

Table models never go on the wire; these classes are the wire format. Request models are
strict (no coercion: ``"10"`` is not an int, ``true`` is not an int) and forbid unknown keys.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Integers travel to JavaScript and SQL: keep them within what both represent exactly.
MAX_INT = 2**53 - 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# ------------------------------------------------------------------ requests


class TemplateCreate(Strict):
    name: str
    engine: str = "quickjs"


class LimitsPatch(Strict):
    cpu_ms: int | None = Field(default=None, ge=0, le=MAX_INT)
    wall_ms: int | None = Field(default=None, ge=0, le=MAX_INT)
    mem_mb: int | None = Field(default=None, ge=0, le=MAX_INT)
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
    name: str | None = None
    settings: SettingsPatch | None = None


class CapabilityCreate(Strict):
    kind: str
    name: str
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)


class StartupFileCreate(Strict):
    path: str
    order_index: int = Field(default=0, ge=-MAX_INT, le=MAX_INT)
    mode: str = "eval"


class NameBody(Strict):
    name: str


class SessionCreate(Strict):
    template_id: str
    workspace_id: str
    base_commit_oid: str
    worktree_path: str


class ReplRequest(Strict):
    session_id: str
    input: str
    wait: bool = True


class RunFileRequest(Strict):
    session_id: str
    path: str
    args: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    wait: bool = True


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
    kind: Literal["startup", "repl", "run_file"]
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
