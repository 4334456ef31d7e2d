"""Typed application keys shared by the HTTP modules."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from server.services import Services
from server.store.listen import NotifyListener

SERVICES = web.AppKey("services", Services)
MAX_BODY = web.AppKey("max_body", int)
ALLOW_BY_PATH = web.AppKey("allow_by_path", dict)  # literal path -> its methods (405 Allow)
FORWARDED_BY = "X-VM-Forwarded-By"  # header of a request forwarded by another node (its id)
# Set by run_server: how this process stops itself (another process took its node id).
ON_REPLACED: web.AppKey[Callable[[], None]] = web.AppKey("on_replaced")
LISTENER = web.AppKey("cluster_listener", NotifyListener)  # a cluster's LISTEN connection
