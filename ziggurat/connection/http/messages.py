"""`GET /api/messages/{id}/stream`: resume a reply's event stream, on any gateway.

A client whose connection dropped (or whose gateway died) sends the id of the
last `delta` it received as `Last-Event-ID` (browsers' `EventSource` does so
by itself) or as `?after=`, and gets the rest: more `delta`s, then `done`. A
reply that finished meanwhile comes back as a single `done` holding the whole
stored reply, which replaces what the client had.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query
from starlette.responses import Response

from ziggurat.connection.http.conversations import stream_turn
from ziggurat.connection.http.deps import ApplicationDep, ChatPrincipalDep
from ziggurat.connection.http.sse import sse_response
from ziggurat.connection.streams.base import ENTRY_ID

router = APIRouter(prefix="/api/messages", tags=["conversations"])

EntryId = Annotated[str | None, Query(max_length=41, pattern=ENTRY_ID.pattern)]


@router.get("/{message_id}/stream", response_model=None)
async def resume_stream(
    message_id: Annotated[str, Path(min_length=1, max_length=64)],
    principal: ChatPrincipalDep,
    application: ApplicationDep,
    after: EntryId = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=41, pattern=ENTRY_ID.pattern)
    ] = None,
) -> Response:
    """The reply's events after `Last-Event-ID` (or `after`); from the start when neither is given."""
    turn = await application.chat.resume(principal, message_id, after=last_event_id or after)
    return sse_response(stream_turn(turn))
