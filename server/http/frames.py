"""WebSocket text frames built here, so that several go out in one write.

aiohttp writes each frame with its own ``transport.write``, and on a socket with nothing
queued each write is a ``send`` system call that pushes its own TCP segment: the frames an
execution produces at once (its events, its final record, ``complete``) would cost one each.
``text_frames`` frames them all (RFC 6455 section 5.2: FIN, opcode 1, unmasked from a server,
no extensions) for a single write.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

_FIN_TEXT = 0x81
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame_header(length: int) -> bytes:
    if length < 126:
        return _SHORT.pack(_FIN_TEXT, length)
    if length < 1 << 16:
        return _MEDIUM.pack(_FIN_TEXT, 126, length)
    return _LONG.pack(_FIN_TEXT, 127, length)


def text_frames(payloads: Iterable[bytes]) -> bytes:
    """One unfragmented text frame per payload (each valid UTF-8), back to back."""
    parts: list[bytes] = []
    for payload in payloads:
        parts.append(text_frame_header(len(payload)))
        parts.append(payload)
    return b"".join(parts)
