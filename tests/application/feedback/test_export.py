"""Fine-tuning records from a message tree: failed turns are left out so roles always alternate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.application.feedback.conftest import check_chat
from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.tree import MessageTree
from ziggurat.application.feedback.export import is_negative, is_positive, prompt_for, sft_record
from ziggurat.application.feedback.models import Feedback

START = datetime(2026, 1, 1, tzinfo=UTC)


def chain(*rows: tuple[str, str, str]) -> list[Message]:
    """A single path of (role, content, status) messages."""
    messages: list[Message] = []
    for index, (role, content, status) in enumerate(rows):
        parent = messages[-1].id if messages else None
        created_at = START + timedelta(seconds=index)
        messages.append(
            Message(
                id=f"m{index}",
                parent_id=parent,
                role=role,
                content=content,
                status=status,
                created_at=created_at,
            )
        )
    return messages


def test_turns_whose_reply_failed_are_left_out_of_the_prompt() -> None:
    messages = chain(
        ("user", "first", "complete"),
        ("assistant", "", "error"),
        ("user", "second", "complete"),
        ("assistant", "partial", "cancelled"),
        ("user", "third", "complete"),
        ("assistant", "answer", "complete"),
    )
    tree = MessageTree(messages)
    prompt = prompt_for(tree, messages[-1], "sys")
    assert prompt is not None
    check_chat(prompt, ends_with="user")
    assert [m["content"] for m in prompt] == ["sys", "second", "partial", "third"]
    record = sft_record(tree, messages[-1], Feedback(thumb="up"), None)
    assert record is not None
    check_chat(record["messages"], ends_with="assistant")


def test_a_negative_rating_without_a_correction_is_no_training_target() -> None:
    messages = chain(("user", "q", "complete"), ("assistant", "bad", "complete"))
    tree = MessageTree(messages)
    assert sft_record(tree, messages[1], Feedback(thumb="down"), None) is None
    assert sft_record(tree, messages[1], Feedback(comment="meh"), None) is None
    fixed = sft_record(tree, messages[1], Feedback(thumb="down", corrected_answer="good"), None)
    assert fixed == {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}]}


def test_thumbs_decide_before_ratings() -> None:
    assert is_positive(Feedback(rating=4)) and is_negative(Feedback(rating=2))
    assert not is_positive(Feedback(rating=3)) and not is_negative(Feedback(rating=3))
    assert is_negative(Feedback(thumb="down", rating=5)) and not is_positive(Feedback(thumb="down", rating=5))
