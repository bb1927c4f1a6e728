"""The message tree, on random trees: paths, siblings and the shown leaf are always consistent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from ziggurat.application.conversations.models import Message
from ziggurat.application.conversations.tree import MessageTree

START = datetime(2026, 1, 1, tzinfo=UTC)


def build(parents: list[int | None]) -> list[Message]:
    """Message i is created at second i under message parents[i] (an earlier index, or None for a root)."""
    return [
        Message(
            id=f"m{index}",
            parent_id=None if parent is None else f"m{parent}",
            created_at=START + timedelta(seconds=index),
        )
        for index, parent in enumerate(parents)
    ]


@st.composite
def trees(draw: st.DrawFn) -> list[Message]:
    size = draw(st.integers(min_value=0, max_value=30))
    parents: list[int | None] = []
    for index in range(size):
        parents.append(draw(st.one_of(st.none(), st.integers(0, index - 1))) if index else None)
    return build(parents)


@given(trees(), st.data())
def test_paths_siblings_and_leaves_are_consistent(messages: list[Message], data: st.DataObject) -> None:
    tree = MessageTree(messages)
    for message in messages:
        path = tree.path_to(message.id)
        assert path[-1] is message and path[0].parent_id is None
        assert all(child.parent_id == parent.id for parent, child in pairwise(path))
        siblings = tree.siblings(message)
        assert [s.id for s in siblings].count(message.id) == 1
        assert {s.parent_id for s in siblings} == {message.parent_id}
        assert list(siblings) == sorted(siblings, key=lambda s: s.created_at)
        leaf = tree.newest_leaf_under(message)
        assert not tree.children(leaf.id) and message in tree.path_to(leaf.id)

    chosen = data.draw(st.sampled_from([None, "unknown", *[m.id for m in messages]]))
    active = tree.active_path(chosen)
    if not messages:
        assert active == []
    else:
        assert active[0].parent_id is None and not tree.children(active[-1].id)
        if chosen in {m.id for m in messages}:
            assert tree.get(chosen) in active


def test_selecting_a_message_shows_the_newest_leaf_below_it() -> None:
    #   m0 ─ m1 ─ m2
    #      └ m3 ─ m4
    #   m1 ─ m5          (m5 is the newest leaf under m1)
    tree = MessageTree(build([None, 0, 1, 0, 3, 1]))
    assert [m.id for m in tree.active_path("m1")] == ["m0", "m1", "m5"]
    assert [m.id for m in tree.active_path("m3")] == ["m0", "m3", "m4"]
    assert [m.id for m in tree.active_path(None)] == ["m0", "m1", "m5"]
    assert [m.id for m in tree.siblings(tree.get("m3"))] == ["m1", "m3"]  # type: ignore[arg-type]


def test_a_parent_outside_the_conversation_makes_a_root() -> None:
    orphan = Message(id="x", parent_id="deleted", created_at=START)
    tree = MessageTree([orphan])
    assert tree.path_to("x") == [orphan] and list(tree.children(None)) == [orphan]
