"""Who may call the server: the Host and Origin checks, the API token, and browser headers.

- A server listening on a loopback address answers only requests whose ``Host`` names a
  loopback address (or one of ``--allowed-hosts``): a DNS-rebinding page reaches it under its
  own host name and is refused.
- A request carrying an ``Origin`` that is not the server's own (or one of
  ``--allowed-origins``) is refused: cross-site form posts, ``fetch`` and WebSockets alike.
  On loopback the ``Host`` it is compared with has already been checked.
- With a token, every API request except ``/health``, and ``/metrics``, must carry it:
  ``Authorization: Bearer``, ``?token=``, or the cookie the UI gets on its first ``?token=`` visit.
"""

from __future__ import annotations

import hmac
import re
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from server import errors
from server.config import Settings, is_loopback_name

API_PREFIX = "/api/v1"
HEALTH = f"{API_PREFIX}/health"
METRICS = "/metrics"  # Prometheus: outside the API, behind the same token
_TOKEN_IN_QUERY = re.compile(r"(?i)((?:^|[?&])token=)[^&#]*")

# The UI is plain ES modules from /static and inline styles injected by its editor; nothing
# else loads, posts or frames it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def mask_token(path_qs: str) -> str:
    """``path_qs`` with any ``token=`` value replaced, for logs."""
    return _TOKEN_IN_QUERY.sub(r"\1***", path_qs)


def host_name(host: str) -> str:
    """The name in a ``Host`` header (or a configured host), without port or brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host.rstrip(".")


def host_allowed(host: str | None, allowed: tuple[str, ...]) -> bool:
    if host is None:
        return True  # HTTP/1.0 without Host: not a browser, so not a rebinding page
    if "*" in allowed:
        return True
    name = host_name(host)
    return is_loopback_name(name) or any(name == host_name(a) for a in allowed)


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    if origin is None:
        return True  # not a browser: programs and the CLI send no Origin
    if "*" in allowed or origin in allowed:
        return True
    return host is not None and urlsplit(origin).netloc.lower() == host.strip().lower()


def token_cookie(settings: Settings) -> str:
    # Cookies are shared by every port of a host: name it after the port so two servers on
    # one machine do not overwrite each other's.
    return f"vm_system_token_{settings.port}"


def _supplied_token(request: web.Request, settings: Settings) -> str:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[7:]
    return request.query.get("token") or request.cookies.get(token_cookie(settings), "")


def _token_ok(supplied: str, token: str) -> bool:
    return bool(supplied) and hmac.compare_digest(supplied.encode(), token.encode())


def check_request(request: web.Request, settings: Settings) -> None:
    """Raise FORBIDDEN/UNAUTHORIZED for a request that may not proceed.

    The UI's first ``?token=`` visit raises a redirect to the same address without the token,
    which sets the cookie.
    """
    host = request.headers.get("Host")
    if settings.listens_on_loopback and not host_allowed(host, settings.allowed_hosts):
        raise errors.Forbidden(
            f"host {host!r} is not allowed: this server listens on a loopback address and answers "
            "only localhost, 127.0.0.1 and [::1]; start it with --allowed-hosts to add a name"
        )
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, host, settings.allowed_origins):
        raise errors.Forbidden(
            f"origin {origin!r} is not allowed: browsers may call this server only from its own "
            "pages; start it with --allowed-origins to permit another origin"
        )
    token = settings.token
    if token is None:
        return
    path = request.path
    if path.startswith(API_PREFIX + "/") or path in (API_PREFIX, METRICS):
        if path != HEALTH and not _token_ok(_supplied_token(request, settings), token):
            raise errors.Unauthorized(
                "missing or wrong API token; send 'Authorization: Bearer <token>', or open the "
                "URL with ?token= that the server printed"
            )
    elif "token" in request.query and request.method in ("GET", "HEAD"):
        _sign_in(request, settings, token)


def _sign_in(request: web.Request, settings: Settings, token: str) -> None:
    if not _token_ok(request.query["token"], token):
        raise errors.Unauthorized("wrong token in the address; use the URL the server printed")
    rest = [(k, v) for k, v in request.query.items() if k != "token"]
    response = web.HTTPFound(request.path + (f"?{urlencode(rest)}" if rest else ""))
    response.set_cookie(
        token_cookie(settings),
        token,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    raise response


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
