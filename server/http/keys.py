"""Typed application keys shared by the HTTP modules."""

from __future__ import annotations

from aiohttp import web

from server.services import Services

SERVICES = web.AppKey("services", Services)
MAX_BODY = web.AppKey("max_body", int)
