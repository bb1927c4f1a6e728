"""Opaque keyset-pagination cursors: `(timestamp, id)` of the last row of a page.

Keyset pages stay fast however deep a client pages (no OFFSET scan) and never
skip or repeat a row when rows are added meanwhile. The cursor is only
base64, not signed: it holds nothing secret, and every query that uses it is
already restricted to what the caller may see.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from ziggurat.errors import InvalidRequest

_INVALID = "The cursor is invalid; use next_cursor from a previous page."


def encode_cursor(at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        at = datetime.fromisoformat(stamp)
    except (ValueError, binascii.Error) as exc:
        raise InvalidRequest(_INVALID, param="cursor") from exc
    if at.tzinfo is None:
        raise InvalidRequest(_INVALID, param="cursor")
    return at, row_id
