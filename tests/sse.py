"""Parse server-sent events the way a browser's EventSource does (enough of it for tests)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    event: str
    data: str
    id: str | None


def sse_frames(lines: Iterable[str]) -> Iterator[Frame]:
    event, data, frame_id = "message", [], None
    for line in lines:
        if not line:
            if data:
                yield Frame(event, "\n".join(data), frame_id)
            event, data, frame_id = "message", [], None
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            frame_id = value
    if data:
        yield Frame(event, "\n".join(data), frame_id)
