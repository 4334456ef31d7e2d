"""Server settings: one frozen dataclass built from defaults, environment and CLI flags."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:3210"
DEFAULT_DB = "vm-system.db"
DEFAULT_NODE_TIMEOUT_S = 10.0
HEARTBEAT_EVERY_S = 2.0
# Node ids travel in NOTIFY payloads (space- and comma-separated) and in messages.
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,62}")


class ConfigError(ValueError):
    """A setting has a value the server cannot use."""


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:3210`` for IPv6) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ConfigError(f"listen address must look like HOST:PORT, e.g. 127.0.0.1:3210: {value!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def is_loopback_name(name: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ::1."""
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def normalize_db_url(value: str) -> str:
    """Turn a plain path or a ``postgresql://`` URL into a SQLAlchemy URL."""
    if value.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    if "://" in value:
        return value
    return "sqlite:///" + str(Path(value).expanduser().resolve())


def default_node_id(host_name: str, port: int) -> str:
    """A stable id from the host name and the port (the same node keeps it across restarts)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", host_name).strip("-.") or "node"
    return f"{name[:56]}:{port}"


def check_node_id(value: str) -> str:
    if not _NODE_ID.fullmatch(value):
        raise ConfigError(
            f"node id must be 1-63 letters, digits, '.', '_', ':' or '-', starting with a letter "
            f"or digit: {value!r}"
        )
    return value


def check_url(value: str) -> str:
    url = value.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^\s/?#]+", url):
        raise ConfigError(f"advertise URL must look like http://HOST:PORT (no path): {value!r}")
    return url


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def parse_modules(value: str) -> tuple[str, ...]:
    """``fs,database`` → ("fs", "database"); names are checked against the catalog at start."""
    return tuple(dict.fromkeys(m.strip().lower() for m in value.split(",") if m.strip()))


def parse_roots(values: Any) -> tuple[Path, ...]:
    roots = []
    for raw in values:
        if not str(raw).strip():
            continue
        path = Path(str(raw).strip()).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"worktree root {str(raw)!r} is not an existing directory (--worktree-root)")
        roots.append(path)
    return tuple(dict.fromkeys(roots))


@dataclass(frozen=True)
class Settings:
    listen: str = DEFAULT_LISTEN
    db_url: str = field(default_factory=lambda: normalize_db_url(DEFAULT_DB))
    cache_dir: Path = field(default_factory=lambda: Path(".vm-cache/libraries").resolve())
    max_body_bytes: int = 1024 * 1024
    max_sessions: int = 0  # 0 = unlimited
    idle_timeout_s: float = 0.0  # 0 = sessions never expire
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    no_token: bool = False
    max_connections: int = 1000
    max_file_bytes: int = 10 * 1024 * 1024
    header_timeout_s: float = 10.0
    ws_queue_bytes: int = 16 * 1024 * 1024
    ws_heartbeat_s: float = 30.0
    cancel_grace_s: float = 0.2
    checkpoints: bool = True  # keep a forked checkpoint per session (rollback, fork, completion)
    log_level: str = "INFO"
    # Security policy (API.md §13): native modules templates may enable; where worktrees may be.
    allow_modules: tuple[str, ...] = ("fs", "database")
    worktree_roots: tuple[Path, ...] = ()
    # Cluster (API.md §14): who this node is, where the others reach it, when a silent one is lost.
    node_id: str | None = None  # None: default_node_id(host name, port); see effective_node_id
    advertise_url: str | None = None  # None: the listen URL; see effective_advertise_url
    node_timeout_s: float = DEFAULT_NODE_TIMEOUT_S

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]

    @property
    def listens_on_loopback(self) -> bool:
        return is_loopback_name(self.host)

    @property
    def effective_node_id(self) -> str:
        return self.node_id or default_node_id(socket.gethostname(), self.port)

    @property
    def effective_advertise_url(self) -> str:
        if self.advertise_url:
            return self.advertise_url
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()  # a wildcard is not an address another node can dial
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def heartbeat_s(self) -> float:
        """Every 2 s, or more often when the node timeout is short (at least 3 beats per timeout)."""
        return min(HEARTBEAT_EVERY_S, self.node_timeout_s / 4)

    def with_generated_token(self) -> Settings:
        """A random token when listening beyond loopback without one (unless ``no_token``)."""
        if self.token or self.no_token or self.listens_on_loopback:
            return self
        return replace(self, token=secrets.token_urlsafe(24))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``VM_SYSTEM_*`` environment variables, then explicit overrides.

        Overrides whose value is None are ignored, so CLI flags can be passed straight through.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        mapping: dict[str, tuple[str, Callable[[str], Any]]] = {
            "VM_SYSTEM_LISTEN": ("listen", str),
            "VM_SYSTEM_DB": ("db_url", normalize_db_url),
            "VM_SYSTEM_CACHE_DIR": ("cache_dir", lambda v: Path(v).expanduser().resolve()),
            "VM_SYSTEM_MAX_BODY_BYTES": ("max_body_bytes", int),
            "VM_SYSTEM_MAX_SESSIONS": ("max_sessions", int),
            "VM_SYSTEM_IDLE_TIMEOUT": ("idle_timeout_s", float),
            "VM_SYSTEM_TOKEN": ("token", str),
            "VM_SYSTEM_ALLOWED_ORIGINS": ("allowed_origins", _split_list),
            "VM_SYSTEM_LOG_LEVEL": ("log_level", str),
            "VM_SYSTEM_CHECKPOINTS": ("checkpoints", _parse_bool),
            "VM_SYSTEM_ALLOWED_HOSTS": ("allowed_hosts", _split_list),
            "VM_SYSTEM_NO_TOKEN": ("no_token", _parse_bool),
            "VM_SYSTEM_MAX_CONNECTIONS": ("max_connections", int),
            "VM_SYSTEM_MAX_FILE_BYTES": ("max_file_bytes", int),
            "VM_SYSTEM_HEADER_TIMEOUT": ("header_timeout_s", float),
            "VM_SYSTEM_WS_QUEUE_BYTES": ("ws_queue_bytes", int),
            "VM_SYSTEM_ALLOW_MODULES": ("allow_modules", parse_modules),
            "VM_SYSTEM_WORKTREE_ROOTS": ("worktree_roots", lambda v: parse_roots(v.split(os.pathsep))),
            "VM_SYSTEM_NODE_ID": ("node_id", check_node_id),
            "VM_SYSTEM_ADVERTISE_URL": ("advertise_url", check_url),
            "VM_SYSTEM_NODE_TIMEOUT": ("node_timeout_s", float),
        }
        for var, (name, conv) in mapping.items():
            raw = env.get(var)
            if raw:
                try:
                    values[name] = conv(raw)
                except ValueError as exc:
                    raise ConfigError(f"{var} has an invalid value {raw!r}: {exc}") from exc
        for name, value in overrides.items():
            if value is None:
                continue
            if name == "db_url":
                value = normalize_db_url(value)
            elif name == "cache_dir":
                value = Path(value).expanduser().resolve()
            elif name in ("allowed_origins", "allowed_hosts") and isinstance(value, str):
                value = _split_list(value)
            elif name == "allow_modules":
                value = parse_modules(value) if isinstance(value, str) else tuple(value)
            elif name == "worktree_roots":
                value = parse_roots([value] if isinstance(value, str) else value)
            elif name == "node_id":
                value = check_node_id(value)
            elif name == "advertise_url":
                value = check_url(value)
            values[name] = value
        settings = replace(cls(), **values)
        settings.validate()
        return settings

    def validate(self) -> None:
        parse_listen(self.listen)
        for f in fields(self):
            if f.name in ("max_body_bytes", "max_sessions", "max_file_bytes", "ws_queue_bytes"):
                if getattr(self, f.name) < 0:
                    raise ConfigError(f"{f.name} must be zero or positive")
        if self.token and self.no_token:
            raise ConfigError("--token and --no-token contradict each other; give one")
        if self.max_connections < 1:
            raise ConfigError("max connections must be at least 1")
        if self.header_timeout_s <= 0:
            raise ConfigError("header timeout must be positive")
        if self.idle_timeout_s < 0:
            raise ConfigError("idle timeout must be zero or positive (0 disables it)")
        if not 0.5 <= self.node_timeout_s <= 3600:
            raise ConfigError("node timeout must be between 0.5 and 3600 seconds")
