"""Template service: runtime profiles (settings, capabilities, startup files, modules, libraries)."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from server import errors
from server.clock import now_iso
from server.core.paths import clean_relative_path
from server.core.policy import Policy
from server.core.schemas import CAPABILITY_KINDS as CAPABILITY_KINDS
from server.core.schemas import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from server.core.schemas import MIN_MEM_MB as MIN_MEM_MB
from server.core.schemas import (
    CapabilityCreate,
    Limits,
    Resolver,
    RuntimeSettings,
    StartupFileCreate,
    TemplateCreate,
    TemplatePatch,
)
from server.runtime import libraries, modules
from server.store.store import Store

SUPPORTED_ENGINES = ("quickjs",)
# The original's engine name; templates written for it keep working and are stored as quickjs.
ENGINE_ALIASES = {"goja": "quickjs"}
SUPPORTED_STARTUP_MODES = ("eval",)


def default_settings() -> dict[str, Any]:
    return {
        "limits": Limits().model_dump(),
        "resolver": Resolver().model_dump(),
        "runtime": RuntimeSettings().model_dump(),
    }


def check_template_name(raw: str, **details: Any) -> str:
    """A template name: trimmed, non-empty, at most 200 characters, no control characters."""
    name = raw.strip()
    if not name:
        raise errors.ValidationError("name is required", **details)
    if len(name) > MAX_NAME_LENGTH:
        raise errors.ValidationError(
            f"name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}", **details
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise errors.ValidationError("name must not contain control characters", **details)
    return name


def _shape_template(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "engine": row["engine"],
        "is_active": bool(row["is_active"]),
        "exposed_modules": row["exposed_modules"],
        "libraries": row["libraries"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _shape_settings(row: dict[str, Any]) -> dict[str, Any]:
    # Merge over defaults so rows written by an older version still show every key.
    base = default_settings()
    return {
        "vm_id": row["vm_id"],
        "limits": {**base["limits"], **row["limits"]},
        "resolver": {**base["resolver"], **row["resolver"]},
        "runtime": {**base["runtime"], **row["runtime"]},
    }


def _shape_capability(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "enabled": bool(row["enabled"])}


class TemplateService:
    def __init__(self, store: Store, policy: Policy) -> None:
        self.store = store
        self.policy = policy
        # Settings are read at every execution; the cache is coherent because this process is
        # the only writer and every write goes through this service.
        self._settings_cache: dict[str, dict[str, Any]] = {}
        # Bumped by every settings write: a read that started before a write must not put its
        # (older) result into the cache after the write dropped it.
        self._settings_version: dict[str, int] = {}

    # ------------------------------------------------------------- templates

    async def create(self, body: TemplateCreate) -> dict[str, Any]:
        name = check_template_name(body.name)
        engine = body.engine.strip().lower() or "quickjs"
        engine = ENGINE_ALIASES.get(engine, engine)
        if engine not in SUPPORTED_ENGINES:
            raise errors.EngineUnsupported(
                f"engine {body.engine!r} is not supported; use one of: {', '.join(SUPPORTED_ENGINES)}"
                f" ({', '.join(f'{a} is an alias of {e}' for a, e in ENGINE_ALIASES.items())})",
                requested_engine=body.engine,
                supported_engines=list(SUPPORTED_ENGINES),
            )
        now = now_iso()
        row = {
            "id": str(uuid.uuid4()),
            "name": name,
            "engine": engine,
            "is_active": True,
            "exposed_modules": [],
            "libraries": [],
            "created_at": now,
            "updated_at": now,
        }
        try:
            await self.store.create_template(template=row, settings=default_settings())
        except errors.StoreConflict:
            raise errors.Conflict(f"a template named {name!r} already exists", name=name) from None
        return _shape_template(row)

    async def list(self) -> list[dict[str, Any]]:
        return [_shape_template(r) for r in await self.store.list_templates()]

    async def require(self, template_id: str) -> dict[str, Any]:
        row = await self.store.get_template(template_id=template_id)
        if row is None:
            raise errors.TemplateNotFound(f"template {template_id} does not exist", template_id=template_id)
        return row

    async def detail(self, template_id: str) -> dict[str, Any]:
        version = self._settings_version.get(template_id, 0)
        bundle = await self.store.get_template_bundle(template_id=template_id)
        if bundle is None:
            raise errors.TemplateNotFound(f"template {template_id} does not exist", template_id=template_id)
        settings = _shape_settings(bundle["settings"])
        if self._settings_version.get(template_id, 0) == version:
            self._settings_cache[template_id] = settings
        return {
            "template": _shape_template(bundle["template"]),
            "settings": settings,
            "capabilities": [_shape_capability(c) for c in bundle["capabilities"]],
            "startup_files": bundle["startup_files"],
        }

    def _invalidate(self, template_id: str) -> None:
        self._settings_version[template_id] = self._settings_version.get(template_id, 0) + 1
        self._settings_cache.pop(template_id, None)

    async def settings(self, template_id: str) -> dict[str, Any] | None:
        """Current settings (cached); None when the template has been deleted."""
        cached = self._settings_cache.get(template_id)
        if cached is not None:
            return cached
        try:
            return (await self.detail(template_id))["settings"]
        except errors.TemplateNotFound:
            return None

    async def patch(self, template_id: str, body: TemplatePatch) -> dict[str, Any]:
        new_name = None
        if body.name is not None:
            new_name = check_template_name(body.name, template_id=template_id)
        changes = body.settings.model_dump(exclude_none=True) if body.settings else {}
        mem_mb = changes.get("limits", {}).get("mem_mb")
        if mem_mb is not None and 0 < mem_mb < MIN_MEM_MB:
            raise errors.ValidationError(
                f"limits.mem_mb must be 0 (no limit) or at least {MIN_MEM_MB}: QuickJS and the "
                f"prelude need about {MIN_MEM_MB} MB before any script runs; got {mem_mb}",
                template_id=template_id,
                field="settings.limits.mem_mb",
            )
        if new_name is None and not any(changes.values()):
            return await self.detail(template_id)  # nothing to change: not even updated_at

        def mutate(tpl: dict[str, Any], settings: dict[str, Any]) -> None:
            if new_name is not None:
                tpl["name"] = new_name
            for section, values in changes.items():
                settings[section] = {**settings[section], **values}

        try:
            found = await self.store.update_template(
                template_id=template_id, mutate=mutate, updated_at=now_iso()
            )
        except errors.StoreConflict:
            raise errors.Conflict(f"a template named {new_name!r} already exists", name=new_name) from None
        if not found:
            raise errors.TemplateNotFound(f"template {template_id} does not exist", template_id=template_id)
        self._invalidate(template_id)
        return await self.detail(template_id)

    async def delete(self, template_id: str) -> dict[str, Any]:
        if not await self.store.delete_template(template_id=template_id):
            raise errors.TemplateNotFound(f"template {template_id} does not exist", template_id=template_id)
        self._invalidate(template_id)
        return {"status": "ok", "template_id": template_id}

    # ------------------------------------------------------------- capabilities

    async def add_capability(self, template_id: str, body: CapabilityCreate) -> dict[str, Any]:
        kind, name = body.kind.strip(), body.name.strip()
        if not kind:
            raise errors.ValidationError("kind is required", template_id=template_id)
        if not name:
            raise errors.ValidationError("name is required", template_id=template_id)
        if kind not in CAPABILITY_KINDS:
            raise errors.ValidationError(
                f"kind must be one of {', '.join(CAPABILITY_KINDS)}, got {kind!r}",
                template_id=template_id,
            )
        await self.require(template_id)
        row = {
            "id": str(uuid.uuid4()),
            "vm_id": template_id,
            "kind": kind,
            "name": name,
            "enabled": body.enabled,
            "config": body.config,
            "created_at": now_iso(),
        }
        try:
            await self.store.add_capability(row=row)
        except errors.StoreConflict:
            raise errors.Conflict(
                f"capability ({kind}, {name}) already exists on this template",
                template_id=template_id,
            ) from None
        return {k: row[k] for k in ("id", "vm_id", "kind", "name", "enabled", "config")}

    async def list_capabilities(self, template_id: str) -> builtins.list[dict[str, Any]]:
        await self.require(template_id)
        return [_shape_capability(c) for c in await self.store.list_capabilities(template_id=template_id)]

    async def delete_capability(self, template_id: str, capability_id: str) -> dict[str, Any]:
        return await self._delete_child(
            template_id, "capability", "capability_id", capability_id, self.store.delete_capability
        )

    # ------------------------------------------------------------- startup files

    async def add_startup_file(self, template_id: str, body: StartupFileCreate) -> dict[str, Any]:
        try:
            path = clean_relative_path(body.path)
        except errors.InvalidPath as exc:
            exc.details.setdefault("template_id", template_id)
            exc.details.setdefault("path", body.path)
            raise
        mode = body.mode.strip().lower() or "eval"
        if mode not in SUPPORTED_STARTUP_MODES:
            raise errors.StartupModeUnsupported(
                f"startup mode {body.mode!r} is not supported; use 'eval'",
                requested_mode=body.mode,
                supported_modes=list(SUPPORTED_STARTUP_MODES),
                template_id=template_id,
            )
        await self.require(template_id)
        row = {
            "id": str(uuid.uuid4()),
            "vm_id": template_id,
            "path": path,
            "order_index": body.order_index,
            "mode": mode,
            "created_at": now_iso(),
        }
        try:
            await self.store.add_startup_file(row=row)
        except errors.StoreConflict:
            raise errors.Conflict(
                f"startup file {path!r} is already on this template", template_id=template_id
            ) from None
        return {k: row[k] for k in ("id", "vm_id", "path", "order_index", "mode")}

    async def list_startup_files(self, template_id: str) -> builtins.list[dict[str, Any]]:
        await self.require(template_id)
        return await self.store.list_startup_files(template_id=template_id)

    async def delete_startup_file(self, template_id: str, startup_file_id: str) -> dict[str, Any]:
        return await self._delete_child(
            template_id, "startup file", "startup_file_id", startup_file_id, self.store.delete_startup_file
        )

    async def _delete_child(
        self, template_id: str, noun: str, key: str, child_id: str, delete: Callable[..., Awaitable[bool]]
    ) -> dict[str, Any]:
        """Delete a capability or a startup file: `key` is its id's name, `delete` the store method."""
        await self.require(template_id)
        ids = {"template_id": template_id, key: child_id}
        if not await delete(**ids):
            raise errors.NotFound(f"{noun} {child_id} does not exist on template {template_id}", **ids)
        return {"status": "ok", **ids}

    # ------------------------------------------------------------- modules & libraries

    async def _edit_list(self, template_id: str, column: str, name: str, *, add: bool) -> None:
        def mutate(tpl: dict[str, Any], _settings: dict[str, Any]) -> None:
            items: list[str] = list(tpl[column])
            if add and name not in items:
                items.append(name)
            elif not add and name in items:
                items.remove(name)
            tpl[column] = items

        if not await self.store.update_template(template_id=template_id, mutate=mutate, updated_at=now_iso()):
            raise errors.TemplateNotFound(f"template {template_id} does not exist", template_id=template_id)

    def _module_name(self, raw: str, template_id: str) -> str:
        try:
            return modules.normalize_module_name(raw)
        except modules.ModuleNameError as exc:
            raise errors.ModuleNotAllowed(str(exc), template_id=template_id, name=raw) from None

    async def add_module(self, template_id: str, raw: str) -> dict[str, Any]:
        name = self._module_name(raw, template_id)
        self.policy.check_module(name, template_id=template_id)
        await self._edit_list(template_id, "exposed_modules", name, add=True)
        return {"template_id": template_id, "name": name}

    async def remove_module(self, template_id: str, raw: str) -> dict[str, Any]:
        name = raw.strip().lower()
        await self._edit_list(template_id, "exposed_modules", name, add=False)
        return {"status": "ok", "template_id": template_id, "name": name}

    async def list_modules(self, template_id: str) -> builtins.list[str]:
        return list((await self.require(template_id))["exposed_modules"])

    async def add_library(self, template_id: str, raw: str) -> dict[str, Any]:
        info = libraries.find(raw)
        if info is None:
            raise errors.LibraryNotAllowed(
                f"library {raw.strip()!r} is not in the catalog; choose one of: "
                f"{libraries.available_names()}",
                template_id=template_id,
                name=raw,
            )
        await self._edit_list(template_id, "libraries", info.name, add=True)
        return {"template_id": template_id, "name": info.name}

    async def remove_library(self, template_id: str, raw: str) -> dict[str, Any]:
        name = raw.strip()
        await self._edit_list(template_id, "libraries", name, add=False)
        return {"status": "ok", "template_id": template_id, "name": name}

    async def list_libraries(self, template_id: str) -> builtins.list[str]:
        return list((await self.require(template_id))["libraries"])
