"""Deciding what a chat turn writes and what the model sees, from the stored tree (no I/O).

A post continues the shown path; an edit adds a sibling of the edited user
message; a regeneration adds a sibling reply under the same user message. An
idempotency key seen before turns the request into a retry of what that key
stored: replayed if answered, generated again if cut short, refused while
still streaming or when the retry asks for something else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ziggurat.application.conversations.context import History, TurnParameters, history_of
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.schemas import GenerationOverrides, MessageOut
from ziggurat.application.conversations.tree import MessageTree
from ziggurat.application.conversations.turn import ChatTurn
from ziggurat.application.store.orm import new_id
from ziggurat.errors import Conflict, InvalidRequest, NotFound
from ziggurat.model.engine import ModelInfo

MESSAGE_NOT_FOUND = "No message with this id in this conversation."
STILL_STREAMING = "The reply to this message is still being generated; retry once it has finished."
_KEY_REUSED = "This Idempotency-Key was already used for a different request."

ActionKind = Literal["post", "edit", "regenerate"]


@dataclass(slots=True, frozen=True)
class TurnAction:
    """What the user asked for: `target_id` is the edited message or the regenerated reply."""

    kind: ActionKind
    overrides: GenerationOverrides
    content: str = ""
    target_id: str | None = None


@dataclass(slots=True, frozen=True)
class TurnPlan:
    """What a turn writes and sends.

    `replay` is set when the answer is already stored. Otherwise `reply_id` is a
    new reply (`is_new_reply`) or a cut-short one to generate again, answering
    `user_message`, or, when that is None, a new user message under `parent_id`.
    """

    parameters: TurnParameters
    model: ModelInfo
    history: History
    reply_id: str
    is_new_reply: bool
    parent_id: str | None = None
    user_message: Message | None = None
    newest_at: datetime | None = None
    replay: ChatTurn | None = None


@dataclass(slots=True, frozen=True)
class PlanInputs:
    tree: MessageTree
    current_leaf_id: str | None
    parameters: TurnParameters
    model: ModelInfo
    history_limit: int


def plan_turn(inputs: PlanInputs, action: TurnAction, key: str | None) -> TurnPlan:
    tree = inputs.tree
    existing = next((row for row in tree.messages if key is not None and row.idempotency_key == key), None)
    if existing is not None:
        return _plan_retry(inputs, action, existing)
    if action.kind == "regenerate":
        user_message = user_message_answered_by(tree, action.target_id)
        return _new_reply(inputs, user_message)
    if action.kind == "edit":
        parent_id = tree.parent_of(edited_message(tree, action.target_id))
    else:
        leaf = tree.active_leaf(inputs.current_leaf_id)
        parent_id = leaf.id if leaf is not None else None
    draft = Message(role="user", content=action.content, status="complete")
    return TurnPlan(
        inputs.parameters,
        inputs.model,
        _history(inputs, [*tree.path_to(parent_id), draft]),
        reply_id=new_id(),
        is_new_reply=True,
        parent_id=parent_id,
        newest_at=_newest_at(tree),
    )


def _plan_retry(inputs: PlanInputs, action: TurnAction, existing: Message) -> TurnPlan:
    """A key seen before: replay its answer, or generate it again if it was cut short."""
    tree = inputs.tree
    reply: Message | None
    if existing.role == "assistant":
        target = user_message_answered_by(tree, action.target_id) if action.kind == "regenerate" else None
        if target is None or existing.parent_id != target.id:
            raise Conflict(_KEY_REUSED, param="Idempotency-Key")
        user_message, reply = target, existing
    else:
        if action.kind == "regenerate":
            raise Conflict(_KEY_REUSED, param="Idempotency-Key")
        if existing.content != action.content:
            raise Conflict(
                "This Idempotency-Key was already used for a different message.", param="Idempotency-Key"
            )
        if action.kind == "edit":
            if tree.parent_of(existing) != tree.parent_of(edited_message(tree, action.target_id)):
                raise Conflict(_KEY_REUSED, param="Idempotency-Key")
        user_message = existing
        replies = [child for child in tree.children(existing.id) if child.role == "assistant"]
        reply = replies[-1] if replies else None
    if reply is None:
        return _new_reply(inputs, user_message)
    history = _history(inputs, tree.path_to(user_message.id))
    if reply.status == "complete":
        replay = ChatTurn.replay(MessageOut.from_row(user_message), MessageOut.from_row(reply))
        return TurnPlan(inputs.parameters, inputs.model, history, reply.id, is_new_reply=False, replay=replay)
    if reply.status == "streaming":
        raise Conflict(STILL_STREAMING)
    return TurnPlan(
        inputs.parameters, inputs.model, history, reply.id, is_new_reply=False, user_message=user_message
    )


def _new_reply(inputs: PlanInputs, user_message: Message) -> TurnPlan:
    return TurnPlan(
        inputs.parameters,
        inputs.model,
        _history(inputs, inputs.tree.path_to(user_message.id)),
        reply_id=new_id(),
        is_new_reply=True,
        user_message=user_message,
        newest_at=_newest_at(inputs.tree),
    )


def _history(inputs: PlanInputs, path: Sequence[Message]) -> History:
    return history_of(path, limit=inputs.history_limit)


def _newest_at(tree: MessageTree) -> datetime | None:
    return tree.newest.created_at if tree.newest is not None else None


def edited_message(tree: MessageTree, message_id: str | None) -> Message:
    message = tree.get(message_id)
    if message is None:
        raise NotFound(MESSAGE_NOT_FOUND, param="message_id")
    if message.role != "user":
        raise InvalidRequest(
            "Only your own messages can be edited; regenerate a reply instead.", param="message_id"
        )
    return message


def user_message_answered_by(tree: MessageTree, reply_id: str | None) -> Message:
    reply = tree.get(reply_id)
    if reply is None:
        raise NotFound(MESSAGE_NOT_FOUND, param="message_id")
    question = tree.get(tree.parent_of(reply))
    if reply.role != "assistant" or question is None or question.role != "user":
        raise InvalidRequest(
            "Only a reply can be regenerated; edit your message instead.", param="message_id"
        )
    return question
