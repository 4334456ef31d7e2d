"""Async clients for the vm-system API: ``VmClient`` (REST, and the WebSocket follow) and
``VmSocket`` (one WebSocket connection); ``ApiError`` for every failure."""

from server.client.api import VmClient
from server.client.base import ENDED_STATUSES, INTERIM_REPLIES, ApiError
from server.client.socket import VmSocket

__all__ = ["ENDED_STATUSES", "INTERIM_REPLIES", "ApiError", "VmClient", "VmSocket"]
