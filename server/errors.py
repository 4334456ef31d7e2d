"""Domain errors: one class per API error code; the HTTP layer turns them into the envelope."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "INTERNAL"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class ValidationError(DomainError):
    code, status = "VALIDATION_ERROR", 400


class InvalidRequest(DomainError):
    code, status = "INVALID_REQUEST", 400


class Unauthorized(DomainError):
    code, status = "UNAUTHORIZED", 401


class Forbidden(DomainError):
    code, status = "FORBIDDEN", 403


class NotFound(DomainError):
    code, status = "NOT_FOUND", 404


class TemplateNotFound(DomainError):
    code, status = "TEMPLATE_NOT_FOUND", 404


class SessionNotFound(DomainError):
    code, status = "SESSION_NOT_FOUND", 404


class ExecutionNotFound(DomainError):
    code, status = "EXECUTION_NOT_FOUND", 404


class FileNotFound(DomainError):
    code, status = "FILE_NOT_FOUND", 404


class MethodNotAllowed(DomainError):
    code, status = "METHOD_NOT_ALLOWED", 405


class Conflict(DomainError):
    code, status = "CONFLICT", 409


class SessionNotReady(DomainError):
    code, status = "SESSION_NOT_READY", 409


class SessionBusy(DomainError):
    code, status = "SESSION_BUSY", 409


class ExecutionNotRunning(DomainError):
    code, status = "EXECUTION_NOT_RUNNING", 409


class RequestTimeout(DomainError):
    code, status = "REQUEST_TIMEOUT", 408


class PayloadTooLarge(DomainError):
    code, status = "PAYLOAD_TOO_LARGE", 413


class InvalidPath(DomainError):
    code, status = "INVALID_PATH", 422


class OutputLimitExceeded(DomainError):
    code, status = "OUTPUT_LIMIT_EXCEEDED", 422


class StartupModeUnsupported(DomainError):
    code, status = "STARTUP_MODE_UNSUPPORTED", 422


class StartupFailed(DomainError):
    code, status = "STARTUP_FAILED", 422


class ModuleNotAllowed(DomainError):
    code, status = "MODULE_NOT_ALLOWED", 422


class LibraryNotAllowed(DomainError):
    code, status = "LIBRARY_NOT_ALLOWED", 422


class LibraryUnavailable(DomainError):
    code, status = "LIBRARY_UNAVAILABLE", 422


class EngineUnsupported(DomainError):
    code, status = "ENGINE_UNSUPPORTED", 422


class TooManySessions(DomainError):
    code, status = "TOO_MANY_SESSIONS", 503


class TooManyConnections(DomainError):
    code, status = "TOO_MANY_CONNECTIONS", 503


class NodeUnavailable(DomainError):
    """The node that holds a session cannot be reached (a cluster, API.md §14)."""

    code, status = "NODE_UNAVAILABLE", 503


class Internal(DomainError):
    code, status = "INTERNAL", 500


class Forwarded(DomainError):
    """An error another node answered (a forwarded request), passed on as it came."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        details = error.get("details")
        super().__init__(str(error.get("message", "")), **(details if isinstance(details, dict) else {}))
        self.status = status
        self.code = str(error.get("code", "INTERNAL"))


class StoreError(Internal):
    """The database failed; ``operation`` names what was being done (never SQL or paths)."""

    def __init__(self, operation: str, **details: Any) -> None:
        super().__init__(f"store failure: could not {operation}", **details)
        self.operation = operation


class StoreConflict(Exception):
    """A unique constraint was violated (mapped to CONFLICT by the services)."""


def status_by_code() -> dict[str, int]:
    """The HTTP status of every error code, derived from the classes (one source of truth)."""
    table: dict[str, int] = {}

    def walk(cls: type[DomainError]) -> None:
        table.setdefault(cls.code, cls.status)
        for sub in cls.__subclasses__():
            walk(sub)

    walk(DomainError)
    return table
