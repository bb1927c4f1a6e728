"""Random ids (UUID version 4) without a system call per id.

`uuid.uuid4()` reads 16 bytes with its own `getrandom` call and builds a
`UUID` object in Python; a streamed chat request made four of them (request
id, completion id, rate-limit ticket, usage row), a few percent of a gateway's
CPU per request in profiles (bench/gateway_overhead.py). Here the bytes come
from the same source (`os.urandom`, so ids stay unguessable) 4 KiB at a time,
and a forked child starts with a fresh buffer, so no two processes ever share
ids.
"""

from __future__ import annotations

import os
from typing import Final

_BUFFER_BYTES: Final = 4096
_ID_BYTES: Final = 16
# Version 4 and the RFC 4122 variant, as `uuid.uuid4()` sets them.
_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_SET: Final = (0x4000 << 64) | (0x8000 << 48)


class _RandomPool:
    __slots__ = ("_buffer", "_offset", "_watches_forks")

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = _BUFFER_BYTES
        self._watches_forks = False

    def refill(self) -> None:
        if not self._watches_forks:
            # Registered on first use, not at import: importing a ziggurat module has no effects.
            os.register_at_fork(after_in_child=self.forget)
            self._watches_forks = True
        self._buffer = os.urandom(_BUFFER_BYTES)
        self._offset = 0

    def forget(self) -> None:
        """After a fork: the parent's remaining bytes must not become the child's ids too."""
        self._buffer = b""
        self._offset = _BUFFER_BYTES

    def next_int(self) -> int:
        if self._offset + _ID_BYTES > _BUFFER_BYTES:
            self.refill()
        start = self._offset
        self._offset = start + _ID_BYTES
        return (int.from_bytes(self._buffer[start : start + _ID_BYTES]) & _CLEAR) | _SET


_pool = _RandomPool()


def new_id_hex() -> str:
    """32 lowercase hex digits: what `uuid.uuid4().hex` returns."""
    return f"{_pool.next_int():032x}"


def new_id_text() -> str:
    """The 36-character form: what `str(uuid.uuid4())` returns."""
    digits = f"{_pool.next_int():032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
