"""`/api/ws`: chat over one WebSocket, several replies multiplexed, with the semantics of the SSE routes.

The frames are described in `ws_protocol.py`; this module runs a socket.

Authentication comes in the first frame (within 10 s): browsers cannot set
headers on a WebSocket, and a token in the URL would end up in access logs.
Failure closes the socket with 4401 (4403: no `chat` permission). The
credential is checked again for every request, as REST checks every request,
so a revoked key or a signed-out session stops working on an open socket too.
The Origin header is not checked: cross-site WebSocket hijacking rides on
cookies the browser attaches by itself, this socket reads no cookie, and a
hostile page that opens it still needs the token.

A reply is detached from the socket: leaving (or `slow_consumer`) stops only
this socket's reading; the reply goes on being generated and stored and is
resumed from any socket or gateway. Only `cancel` stops it. Liveness: a
`{"type": "ping"}` every `HEARTBEAT_S` on an idle socket; a socket the server
has heard nothing from for `IDLE_HEARTBEATS` heartbeats is closed (4408).
Backpressure: `ws_outbox.py`.

Logs `ws_connected` and `ws_closed` (with the socket's stream, frame and
coalescing counts); never frame contents.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from contextlib import aclosing, suppress
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from ziggurat.application.auth.principal import SCOPE_CHAT, Principal
from ziggurat.application.container import Application
from ziggurat.application.conversations.turn import ChatTurn, TurnDelta
from ziggurat.cancellation import cancel_and_wait
from ziggurat.connection.http import ws_protocol as protocol
from ziggurat.connection.http.deps import Services
from ziggurat.connection.http.ws_outbox import Outbox
from ziggurat.errors import Forbidden, InvalidRequest, Unauthenticated, ZigguratError
from ziggurat.service.lifecycle import Draining
from ziggurat.telemetry import get_logger, user_id_var

log = get_logger(__name__)

router = APIRouter(tags=["conversations"])

AUTH_TIMEOUT_S = 10.0
HEARTBEAT_S = 20.0
IDLE_HEARTBEATS = 3
"""Heartbeats without a frame from the client before the socket is closed as dead."""
MAX_STREAMS = 8
MAX_FRAME_BYTES = 64 * 1024
OUTBOX_MAX_FRAMES = 64
MAX_PENDING_CHARS = 256 * 1024
CLOSE_TIMEOUT_S = 5.0

TurnOpener = Callable[[Principal], Coroutine[object, object, ChatTurn]]


@router.websocket("/api/ws")
async def chat_socket(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    if services.application is None:  # a worker: `app.py` mounts this router only for gateways
        await websocket.close(protocol.CLOSE_SERVER_ERROR)
        return
    await websocket.accept()
    await ChatSocket(websocket, services.application, services.draining).serve()


@dataclass(slots=True, eq=False)
class _Stream:
    id: str
    key: int
    conversation_id: str | None
    reply_id: str | None = None
    task: asyncio.Task[None] | None = None
    is_cancel_requested: bool = False
    is_ended: bool = False


class ChatSocket:
    """One accepted socket: authenticates, then serves its streams until the client leaves or goes quiet.

    Invariants: only the outbox's writer sends (after `ready`); every stream
    ends with exactly one `done` or `error` unless the socket closes first; the
    socket closing cancels only its own readers, never a reply. Work a client
    asked for that outlives the socket (opening a turn, stopping a reply) is
    awaited, not cancelled, when it closes, so an accepted frame is never lost.
    """

    def __init__(self, websocket: WebSocket, application: Application, draining: Draining) -> None:
        self._websocket = websocket
        self._application = application
        self._draining = draining
        self._outbox = Outbox(max_frames=OUTBOX_MAX_FRAMES, max_pending_chars=MAX_PENDING_CHARS)
        self._heartbeat_s = HEARTBEAT_S
        self._streams: dict[str, _Stream] = {}
        self._readers: set[asyncio.Task[None]] = set()
        self._openings: set[asyncio.Task[ChatTurn]] = set()
        self._stops: set[asyncio.Task[None]] = set()
        self._stream_count = 0
        self._keys = itertools.count()
        self._token = ""
        self._user_id = ""
        self._last_received = 0.0
        self._slow_consumers = 0

    async def serve(self) -> None:
        principal = await self._authenticate()
        if principal is None:
            return
        user_id_var.set(principal.user_id)
        loop = asyncio.get_running_loop()
        opened_at = self._last_received = loop.time()
        log.info("ws_connected", api_key_id=principal.api_key_id)
        close_code: int | None = protocol.CLOSE_SERVER_ERROR
        # A draining server waits until no stream runs here and every frame is sent.
        unwatch = self._draining.watch(lambda: int(bool(self._streams) or not self._outbox.is_flushed))
        try:
            close_code = await self._run()
        finally:
            unwatch()
            await self._settle()
            log.info(
                "ws_closed",
                close_code=close_code,
                duration_s=round(loop.time() - opened_at, 3),
                streams=self._stream_count,
                frames_sent=self._outbox.frames_sent,
                deltas_coalesced=self._outbox.deltas_coalesced,
                slow_consumers=self._slow_consumers,
            )
        if close_code is not None:
            await self._close(close_code)

    async def _authenticate(self) -> Principal | None:
        """The first frame must authenticate; None when it did not (the socket is then closed)."""
        try:
            message = await asyncio.wait_for(self._websocket.receive(), AUTH_TIMEOUT_S)
        except TimeoutError:
            wanted = f'Send {{"type": "auth", "token": ...}} within {AUTH_TIMEOUT_S:g} s of connecting.'
            await self._refuse(Unauthenticated(wanted))
            return None
        if message["type"] == "websocket.disconnect":
            return None
        try:
            frame = protocol.decode_frame(message.get("text"), max_bytes=MAX_FRAME_BYTES)
            if not isinstance(frame, protocol.AuthFrame):
                raise Unauthenticated('The first frame must be {"type": "auth", "token": ...}.')
            principal = await self._check(frame.token)
        except protocol.RefusedFrame as refused:
            await self._refuse(refused.error)
            return None
        except ZigguratError as exc:
            await self._refuse(exc)
            return None
        self._token, self._user_id = frame.token, principal.user_id
        ready = protocol.ready_frame(
            principal.user_id, heartbeat_s=self._heartbeat_s, max_streams=MAX_STREAMS
        )
        try:
            await self._websocket.send_text(protocol.encode(ready))
        except WebSocketDisconnect:
            return None
        return principal

    async def _check(self, token: str) -> Principal:
        """The token's user; run again for each request on the socket, as REST checks each request."""
        principal = await self._application.authenticator.authenticate(token)
        if not principal.has_scope(SCOPE_CHAT):
            raise Forbidden(f"This credential does not have the `{SCOPE_CHAT}` permission.")
        return principal

    async def _refuse(self, error: ZigguratError) -> None:
        code = protocol.CLOSE_FORBIDDEN if isinstance(error, Forbidden) else protocol.CLOSE_UNAUTHENTICATED
        with suppress(WebSocketDisconnect, WebSocketDisconnected, TimeoutError):
            await asyncio.wait_for(
                self._websocket.send_text(protocol.encode(protocol.error_frame(None, error))), CLOSE_TIMEOUT_S
            )
        await self._close(code)

    async def _close(self, code: int) -> None:
        # A dead peer never drains the socket: don't wait on it for longer than the timeout.
        with suppress(WebSocketDisconnect, WebSocketDisconnected, TimeoutError):
            await asyncio.wait_for(self._websocket.close(code), CLOSE_TIMEOUT_S)

    async def _run(self) -> int | None:
        """Read, write and watch the socket until the client leaves (None) or it must be closed (the code)."""
        parts = {
            asyncio.create_task(self._read(), name="ws-read"),
            asyncio.create_task(self._outbox.drain(self._websocket.send_text), name="ws-write"),
            asyncio.create_task(self._heartbeat(), name="ws-heartbeat"),
        }
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(*parts)
        try:
            return done.pop().result()
        except WebSocketDisconnect:  # the writer found the client gone
            return None
        except Exception as exc:
            log.exception("ws_failed", error_type=type(exc).__name__)
            return protocol.CLOSE_SERVER_ERROR

    async def _settle(self) -> None:
        """Stop reading replies for this socket; let accepted work (openings, stops) finish."""
        await cancel_and_wait(*self._readers)
        if self._openings or self._stops:
            await asyncio.gather(*self._openings, *self._stops, return_exceptions=True)

    async def _heartbeat(self) -> int:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._heartbeat_s)
            if loop.time() - self._last_received > IDLE_HEARTBEATS * self._heartbeat_s:
                return protocol.CLOSE_IDLE
            self._outbox.offer_ping(protocol.PING)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._outbox.wait_for_room()
            message = await self._websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            self._last_received = loop.time()
            try:
                frame = protocol.decode_frame(message.get("text"), max_bytes=MAX_FRAME_BYTES)
            except protocol.RefusedFrame as refused:
                self._outbox.put(protocol.error_frame(refused.stream_id, refused.error))
                continue
            match frame:
                case protocol.PingFrame():
                    self._outbox.put_encoded(protocol.PONG)
                case protocol.PongFrame():
                    pass
                case protocol.AuthFrame():
                    await self._reauthenticate(frame.token)
                case protocol.CancelFrame():
                    self._cancel(frame.id)
                case _:
                    self._open(frame)

    async def _reauthenticate(self, token: str) -> None:
        try:
            principal = await self._check(token)
            if principal.user_id != self._user_id:
                raise Forbidden("This socket belongs to another user; open a new socket to switch users.")
        except ZigguratError as exc:
            self._outbox.put(protocol.error_frame(None, exc))
            return
        self._token = token
        self._outbox.put(
            protocol.ready_frame(principal.user_id, heartbeat_s=self._heartbeat_s, max_streams=MAX_STREAMS)
        )

    def _open(self, frame: protocol.StreamRequest) -> None:
        if frame.id in self._streams:
            message = "A stream with this id is still running; use a new id for each stream."
            self._outbox.put(
                protocol.refusal_frame(frame.id, message, "invalid_request_error", "duplicate_stream_id")
            )
            return
        if len(self._streams) >= MAX_STREAMS:
            message = f"At most {MAX_STREAMS} streams may run at once on one socket."
            self._outbox.put(
                protocol.refusal_frame(frame.id, message, "rate_limit_error", "too_many_streams")
            )
            return
        stream = _Stream(id=frame.id, key=next(self._keys), conversation_id=frame.conversation_id)
        self._stream_count += 1
        self._streams[stream.id] = stream
        stream.task = asyncio.create_task(
            self._follow(stream, self._opener(frame)), name=f"ws-stream-{stream.id}"
        )
        self._readers.add(stream.task)
        stream.task.add_done_callback(self._readers.discard)

    def _opener(self, frame: protocol.StreamRequest) -> TurnOpener:
        chat = self._application.chat
        match frame:
            case protocol.EditFrame() as edit:
                return lambda p: chat.edit_message(
                    p, edit.conversation_id, edit.message_id, edit.message(), edit.idempotency_key
                )
            case protocol.ChatFrame() as post:
                return lambda p: chat.post_message(
                    p, post.conversation_id, post.message(), post.idempotency_key
                )
            case protocol.RegenerateFrame() as again:
                return lambda p: chat.regenerate(
                    p, again.conversation_id, again.message_id, again.overrides(), again.idempotency_key
                )
            case protocol.ResumeFrame() as resume:
                return lambda p: chat.resume(p, resume.message_id, after=resume.after)

    async def _follow(self, stream: _Stream, open_turn: TurnOpener) -> None:
        """Relay one stream's frames, and end it with one `done` or `error` (unless the socket closes)."""
        turn: ChatTurn | None = None
        try:
            turn = await self._open_turn(open_turn, await self._check(self._token))
            stream.reply_id = turn.reply_id
            if stream.is_cancel_requested:
                self._stop(stream)
            if turn.user_message is not None:
                self._outbox.put(protocol.message_frame(stream.id, turn), stream=stream.key)
            self._end(stream, await self._relay(stream, turn))
        except ZigguratError as exc:
            self._end(stream, protocol.error_frame(stream.id, exc))
        except Exception as exc:  # the stream's 500 handler: the socket and the other streams go on
            log.exception("ws_stream_failed", error_type=type(exc).__name__)
            self._end(stream, protocol.server_error_frame(stream.id))
        finally:
            self._forget(stream)
            if turn is not None:
                await turn.aclose()

    async def _relay(self, stream: _Stream, turn: ChatTurn) -> protocol.Frame:
        """Queue the turn's deltas; the frame that ends the stream."""
        async with aclosing(turn.events()) as events:
            async for event in events:
                if not isinstance(event, TurnDelta):
                    return protocol.done_frame(stream.id, event.message)
                if not self._outbox.add_delta(stream.key, stream.id, event.text, event.entry_id):
                    # Leaving only stops this reader: the reply goes on and can be resumed.
                    self._slow_consumers += 1
                    message = "The client read too slowly; resume after the last entry_id received."
                    return protocol.refusal_frame(stream.id, message, "rate_limit_error", "slow_consumer")
        raise AssertionError("a chat turn ends with its stored reply")

    async def _open_turn(self, open_turn: TurnOpener, principal: Principal) -> ChatTurn:
        """Open the turn even if this socket closes meanwhile: the client's message was accepted."""
        opening = asyncio.create_task(open_turn(principal), name="ws-open-turn")
        self._openings.add(opening)
        opening.add_done_callback(self._openings.discard)
        return await asyncio.shield(opening)

    def _cancel(self, stream_id: str) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            message = "No stream with this id is running on this socket."
            self._outbox.put(
                protocol.refusal_frame(stream_id, message, "invalid_request_error", "unknown_stream")
            )
            return
        if stream.is_cancel_requested:
            return
        stream.is_cancel_requested = True
        if stream.reply_id is not None:  # otherwise the stream stops its reply once it knows it
            self._stop(stream)

    def _stop(self, stream: _Stream) -> None:
        stopping = asyncio.create_task(self._stop_reply(stream), name=f"ws-stop-{stream.id}")
        self._stops.add(stopping)
        stopping.add_done_callback(self._stops.discard)

    async def _stop_reply(self, stream: _Stream) -> None:
        """Stop the stream's reply; its stream then ends with `done`. A refusal ends the stream instead."""
        assert stream.reply_id is not None
        try:
            if stream.conversation_id is None:
                raise InvalidRequest(
                    "To cancel a resumed stream, resume it with its `conversation_id`.",
                    param="conversation_id",
                )
            await self._application.chat.stop(
                await self._check(self._token), stream.conversation_id, stream.reply_id
            )
        except ZigguratError as exc:
            frame = protocol.error_frame(stream.id, exc)
        except Exception as exc:
            log.exception("ws_stop_failed", error_type=type(exc).__name__)
            frame = protocol.server_error_frame(stream.id)
        else:
            return
        if not stream.is_ended and stream.task is not None:
            self._end(stream, frame)
            stream.task.cancel()

    def _end(self, stream: _Stream, frame: protocol.Frame) -> None:
        if stream.is_ended:
            return
        stream.is_ended = True
        self._outbox.put(frame, stream=stream.key)
        self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        """Free the stream's id for reuse (only if it still names this stream)."""
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]
