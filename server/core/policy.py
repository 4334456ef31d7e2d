"""The operator's security policy: which native modules templates may use, where worktrees may be,
and which confinement this machine offers (checked once, when the server starts)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from server import errors
from server.config import ConfigError, Settings
from server.runtime import exec_box, modules, sandbox

log = logging.getLogger(__name__)

# Never a worktree: the host's system directories themselves...
SYSTEM_DIRS = frozenset({"/", "/etc", "/proc", "/sys", "/dev", "/boot", "/usr", "/bin", "/sbin", "/var"})
# ...nor anything inside these. (/tmp, /var/tmp and home directories stay allowed.)
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/etc", "/boot")


class Policy:
    """The policy of one running server, built from its settings by ``Policy.start``."""

    def __init__(self, settings: Settings, sandbox_status: dict[str, Any]) -> None:
        self.allowed_modules: tuple[str, ...] = settings.allow_modules
        self.worktree_roots = tuple(str(r) for r in settings.worktree_roots)
        self.sandbox = sandbox_status
        # The server's own files: a worktree may not contain them, and the runtime and the
        # library cache may not contain a worktree either (a session could rewrite them).
        self._own_files: list[tuple[str, str]] = []
        if settings.db_url.startswith("sqlite:///"):
            self._own_files.append((os.path.realpath(settings.db_url[len("sqlite:///") :]), "its database"))
        self._shared_trees = [(os.path.realpath(settings.cache_dir), "its library cache")]
        self._shared_trees += [(p, "the Python runtime it runs on") for p in sandbox.runtime_read_paths()]

    @classmethod
    def start(cls, settings: Settings) -> Policy:
        """Check the policy against this machine; ConfigError when the server cannot keep it."""
        for name in settings.allow_modules:
            try:
                modules.normalize_module_name(name)
            except modules.ModuleNameError as exc:
                raise ConfigError(f"--allow-modules: {exc.reason}") from None
        landlock = sandbox.landlock_abi() > 0
        if not landlock:
            log.warning(
                "Landlock is not available on this kernel: session workers run without file-system "
                "confinement (they still drop every capability and set no_new_privs)"
            )
        mode = "off"
        if "exec" in settings.allow_modules:
            reason = exec_box.probe()
            if reason is not None:
                raise ConfigError(
                    f"--allow-modules lists exec, but {reason}; exec only runs inside bubblewrap: "
                    f"install it (Debian package bubblewrap) or remove exec from --allow-modules"
                )
            mode = "bubblewrap"
        return cls(settings, {"landlock": landlock, "exec": mode})

    # ------------------------------------------------------------------ modules

    def check_module(self, name: str, **details: Any) -> None:
        if name not in self.allowed_modules:
            raise errors.ModuleNotAllowed(
                f"native module {name!r} is not allowed on this server; the operator allows "
                f"{', '.join(self.allowed_modules) or 'none'} (vm-system serve --allow-modules)",
                name=name,
                allowed_modules=list(self.allowed_modules),
                **details,
            )

    def check_template_modules(self, names: list[str], template_name: str, **details: Any) -> None:
        """A template stored earlier may enable a module the policy no longer allows."""
        refused = [n for n in names if n not in self.allowed_modules]
        if refused:
            raise errors.ModuleNotAllowed(
                f"template {template_name!r} enables {', '.join(map(repr, refused))}, which this "
                f"server does not allow (vm-system serve --allow-modules "
                f"{','.join(self.allowed_modules) or 'none'}); remove it from the template or "
                f"ask the operator to allow it",
                refused_modules=refused,
                allowed_modules=list(self.allowed_modules),
                **details,
            )

    # ------------------------------------------------------------------ worktrees

    def check_worktree(self, raw: str) -> str:
        """The real path of an acceptable session worktree, else 422 INVALID_PATH."""
        value = raw.strip()
        if "\x00" in value or not os.path.isabs(value) or not os.path.isdir(value):
            raise errors.InvalidPath(
                f"worktree_path must be an absolute path to an existing directory: {raw!r}",
                worktree_path=raw,
            )
        real = os.path.realpath(value)
        if self.worktree_roots and not any(_inside(real, root) for root in self.worktree_roots):
            raise errors.InvalidPath(
                f"worktree_path {raw!r} is outside the directories this server allows for "
                f"worktrees: {', '.join(self.worktree_roots)} (vm-system serve --worktree-root)",
                worktree_path=raw,
            )
        top = "/" + Path(real).parts[1] if real != "/" else "/"
        if (
            real in SYSTEM_DIRS
            or (real == top and top.startswith("/lib"))
            or any(_inside(real, tree) for tree in SYSTEM_TREES)
        ):
            raise errors.InvalidPath(
                f"worktree_path {raw!r} is a system directory; use a directory of your own "
                f"(such as one under /tmp, /srv or a home directory)",
                worktree_path=raw,
            )
        for path, what in self._own_files:
            if _inside(path, real):
                raise errors.InvalidPath(
                    f"worktree_path {raw!r} contains the server's own files ({what}); use a "
                    f"directory that does not",
                    worktree_path=raw,
                )
        for path, what in self._shared_trees:
            if _inside(path, real) or _inside(real, path):
                raise errors.InvalidPath(
                    f"worktree_path {raw!r} overlaps the server's own files ({what}: {path}); use "
                    f"a directory apart from them",
                    worktree_path=raw,
                )
        return real


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
