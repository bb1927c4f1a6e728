"""The `/api/ws` wire format: the frames a client sends (validated) and the frames the server sends.

Each frame is one JSON object in a text message, told apart by `type`. Client
frames reuse the REST bodies (`MessageCreate`, `GenerationOverrides`), so a
field means the same, with the same limits, on both transports.

- `{"type": "auth", "token"}` first (a JWT access token or an API key with
  the `chat` permission) → `{"type": "ready", "user_id", "heartbeat_s",
  "max_streams"}`, or `error` and close 4401 (4403: no `chat` permission).
  Sent again later with a fresh token of the same user, it replaces the token.
- `chat` (the REST message body: `content`, `model`, `temperature`,
  `max_tokens`; plus `id`, `conversation_id`, `idempotency_key`?), `edit`
  (plus `message_id`) and `regenerate` (`id`, `conversation_id`,
  `message_id`, the overrides, `idempotency_key`?) start a stream named by the
  client's `id`: `{"type": "message", "id", "user_message",
  "assistant_message_id", "replayed", "context"}`, `{"type": "delta", "id",
  "content", "entry_id"}`..., then `{"type": "done", "id", "message"}` (the
  stored reply).
- `{"type": "resume", "id", "message_id", "after"?, "conversation_id"?}`
  follows a reply after an entry id: deltas, then `done`; a reply that
  finished meanwhile gives just `done`, whose message replaces what the client
  had. `conversation_id` is only needed to `cancel` the stream.
- `{"type": "cancel", "id"}` stops the live stream's reply; the stream ends
  with its `done` (status `cancelled`). `unknown_stream` if no such stream.
- `{"type": "ping"}` → `{"type": "pong"}`. The server pings an idle socket;
  the client answers `pong` (any frame counts as alive).

Every stream ends with exactly one `done` or `error` carrying its `id`:
`{"type": "error", "id", "error": {"message", "type", "param", "code"}}`, the
REST error body (plus `retry_after_s` where REST sends `Retry-After`). One
exception: `duplicate_stream_id` refuses a new request whose `id` is live, and
the live stream goes on. Socket codes: `too_many_streams` (over 8 at once) and
`slow_consumer` (see `ws_outbox.py`; the stream can be resumed), both
`rate_limit_error`. Another user's conversation or message gives REST's
`not_found_error`. A bad frame (invalid JSON, unknown `type`, a missing or
invalid field, a binary message, over 64 KiB) gets an `invalid_request_error`
with the frame's `id` when it had one, and the socket stays open.

Close codes: 4401 unauthenticated, 4403 forbidden, 4408 silent client, 1011
server error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ziggurat.application.conversations.models import IDEMPOTENCY_KEY_MAX_LENGTH
from ziggurat.application.conversations.schemas import GenerationOverrides, MessageCreate, MessageOut
from ziggurat.application.conversations.turn import ChatTurn
from ziggurat.connection.http.errors import body_for, error_body
from ziggurat.connection.streams.base import ENTRY_ID
from ziggurat.errors import InvalidRequest, PayloadTooLarge, ZigguratError

Frame = Mapping[str, object]

STREAM_ID_MAX_LENGTH = 64
TOKEN_MAX_LENGTH = 8192

# Close codes: 4401 and 4403 mirror HTTP 401 and 403, 4408 a socket gone quiet (HTTP 408).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_IDLE = 4408
CLOSE_SERVER_ERROR = 1011

StreamId = Annotated[str, Field(min_length=1, max_length=STREAM_ID_MAX_LENGTH)]
ResourceId = Annotated[str, Field(min_length=1, max_length=64)]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=IDEMPOTENCY_KEY_MAX_LENGTH)]
EntryId = Annotated[str, Field(max_length=41, pattern=ENTRY_ID.pattern)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthFrame(_Frame):
    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=TOKEN_MAX_LENGTH)


class PingFrame(_Frame):
    type: Literal["ping"]


class PongFrame(_Frame):
    type: Literal["pong"]


class CancelFrame(_Frame):
    type: Literal["cancel"]
    id: StreamId


class _MessageFrame(MessageCreate):
    """A frame carrying a user message: the REST body plus the stream id and the path's ids."""

    id: StreamId
    conversation_id: ResourceId
    idempotency_key: IdempotencyKey | None = None

    def message(self) -> MessageCreate:
        return MessageCreate.model_validate(self.model_dump(include=set(MessageCreate.model_fields)))


class ChatFrame(_MessageFrame):
    """`POST /api/conversations/{conversation_id}/messages`, as a frame."""

    type: Literal["chat"]


class EditFrame(_MessageFrame):
    """`POST .../messages/{message_id}/edit`, as a frame."""

    type: Literal["edit"]
    message_id: ResourceId


class RegenerateFrame(GenerationOverrides):
    """`POST .../messages/{message_id}/regenerate`, as a frame."""

    type: Literal["regenerate"]
    id: StreamId
    conversation_id: ResourceId
    message_id: ResourceId
    idempotency_key: IdempotencyKey | None = None

    def overrides(self) -> GenerationOverrides:
        fields = set(GenerationOverrides.model_fields)
        return GenerationOverrides.model_validate(self.model_dump(include=fields))


class ResumeFrame(_Frame):
    """`GET /api/messages/{message_id}/stream`, as a frame.

    `conversation_id` is only needed to `cancel` the stream: stopping a reply
    names its conversation, and the client knows it.
    """

    type: Literal["resume"]
    id: StreamId
    message_id: ResourceId
    after: EntryId | None = None
    conversation_id: ResourceId | None = None


StreamRequest = ChatFrame | EditFrame | RegenerateFrame | ResumeFrame
ClientFrame = Annotated[
    AuthFrame | PingFrame | PongFrame | CancelFrame | ChatFrame | EditFrame | RegenerateFrame | ResumeFrame,
    Field(discriminator="type"),
]
_CLIENT_FRAMES: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


class RefusedFrame(Exception):
    """A client frame that cannot be used: the error to answer with, and the frame's `id` if it had one."""

    def __init__(self, error: ZigguratError, stream_id: str | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.stream_id = stream_id


def decode_frame(message: str | None, *, max_bytes: int) -> ClientFrame:
    """The client frame in a WebSocket message (`None`: a binary message); raises `RefusedFrame`."""
    if message is None:
        raise RefusedFrame(
            InvalidRequest("Send frames as text messages holding JSON.", code="invalid_request")
        )
    # `len()` counts characters, a lower bound of the UTF-8 size: encode only frames that may fit.
    if len(message) > max_bytes or len(message.encode()) > max_bytes:
        raise RefusedFrame(PayloadTooLarge(f"A frame may hold at most {max_bytes} bytes."))
    try:
        data = orjson.loads(message)
    except orjson.JSONDecodeError:
        raise RefusedFrame(InvalidRequest("The frame is not valid JSON.", code="invalid_request")) from None
    try:
        return _CLIENT_FRAMES.validate_python(data)
    except ValidationError as exc:
        raise RefusedFrame(_describe(exc), _stream_id_in(data)) from None


def _stream_id_in(data: object) -> str | None:
    if not isinstance(data, dict):
        return None
    stream_id = data.get("id")
    if isinstance(stream_id, str) and 0 < len(stream_id) <= STREAM_ID_MAX_LENGTH:
        return stream_id
    return None


def _describe(exc: ValidationError) -> InvalidRequest:
    """The first problem, worded like REST validation errors (never echoing the input)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    match first["type"]:
        case "union_tag_invalid":
            expected = first.get("ctx", {}).get("expected_tags", "")
            return InvalidRequest(
                f"Unknown frame type; expected one of {expected}.", param="type", code="unknown_type"
            )
        case "union_tag_not_found":
            return InvalidRequest("The frame has no `type`.", param="type", code="invalid_request")
        case "model_attributes_type" | "model_type" | "dict_type":
            return InvalidRequest("A frame must be a JSON object.", code="invalid_request")
    # The first location part is the frame type (the union's tag); the rest names the field.
    param = ".".join(str(part) for part in first["loc"][1:]) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    if exc.error_count() > 1:
        more = exc.error_count() - 1
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return InvalidRequest(message, param=param, code="invalid_request")


def encode(frame: Frame) -> str:
    return orjson.dumps(frame).decode()


PING = encode({"type": "ping"})
PONG = encode({"type": "pong"})


def ready_frame(user_id: str, *, heartbeat_s: float, max_streams: int) -> Frame:
    return {"type": "ready", "user_id": user_id, "heartbeat_s": heartbeat_s, "max_streams": max_streams}


def message_frame(stream_id: str, turn: ChatTurn) -> Frame:
    """The stored user message and the reply's id: the same fields as the SSE `message` event."""
    assert turn.user_message is not None
    return {
        "type": "message",
        "id": stream_id,
        "user_message": turn.user_message.model_dump(mode="json"),
        "assistant_message_id": turn.reply_id,
        "replayed": turn.is_replay,
        "context": turn.context.as_dict() if turn.context is not None else None,
    }


def delta_frame(stream_id: str, content: str, entry_id: str) -> Frame:
    return {"type": "delta", "id": stream_id, "content": content, "entry_id": entry_id}


def done_frame(stream_id: str, message: MessageOut) -> Frame:
    return {"type": "done", "id": stream_id, "message": message.model_dump(mode="json")}


def error_frame(stream_id: str | None, error: ZigguratError) -> Frame:
    """The OpenAI error body as a frame; `retry_after_s` too when the error has one (REST's `Retry-After`)."""
    frame: dict[str, object] = {"type": "error", "id": stream_id, **body_for(error)}
    retry_after_s = getattr(error, "retry_after_s", None)
    if retry_after_s is not None:
        frame["retry_after_s"] = retry_after_s
    return frame


def refusal_frame(stream_id: str | None, message: str, kind: str, code: str) -> Frame:
    """An error of the socket itself (no `ZigguratError` means it): too many streams, slow consumer."""
    return {"type": "error", "id": stream_id, **error_body(message, kind, code=code)}


_SERVER_ERROR_BODY = error_body("The server had an error while processing your request.", "server_error")


def server_error_frame(stream_id: str | None) -> Frame:
    return {"type": "error", "id": stream_id, **_SERVER_ERROR_BODY}
