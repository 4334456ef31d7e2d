"""Typed application keys shared by the HTTP modules."""

from __future__ import annotations

from aiohttp import web

from server.services import Services

SERVICES = web.AppKey("services", Services)
MAX_BODY = web.AppKey("max_body", int)
ALLOW_BY_PATH = web.AppKey("allow_by_path", dict)  # literal path -> its methods (405 Allow)
