"""The message tree of one conversation, in memory: paths, siblings, and which leaf is shown.

Messages link to their parent; siblings (same parent) are the alternatives a
user created by editing a message or regenerating a reply, ordered by
creation. The conversation shows one path, from a root to its current leaf.
Selecting a message shows the newest leaf below it: the newest message of a
subtree is always a leaf (a child is newer than its parent), so that is the
branch the user last worked on there.

Pure functions over already loaded rows (no SQL, no I/O), so the rules can be
tested exhaustively on unsaved `Message` objects. A message whose parent is
not in the conversation (for example deleted) counts as a root.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ziggurat.application.conversations.models import Message


class MessageTree:
    """An immutable view of one conversation's messages as a tree."""

    def __init__(self, nodes: Iterable[Message]) -> None:
        ordered = sorted(nodes, key=lambda node: (node.created_at, node.id))
        self._by_id: dict[str, Message] = {node.id: node for node in ordered}
        self._children: dict[str | None, list[Message]] = {}
        for node in ordered:
            self._children.setdefault(self.parent_of(node), []).append(node)
        self._newest = ordered[-1] if ordered else None

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, node_id: str | None) -> Message | None:
        return self._by_id.get(node_id) if node_id is not None else None

    def parent_of(self, node: Message) -> str | None:
        """The parent's id, or None for a root (including a parent outside this tree)."""
        return node.parent_id if node.parent_id in self._by_id else None

    def children(self, node_id: str | None) -> Sequence[Message]:
        """The children of `node_id` (the roots for None), oldest first."""
        return self._children.get(node_id, ())

    def siblings(self, node: Message) -> Sequence[Message]:
        """`node` and its alternatives, oldest first."""
        return self.children(self.parent_of(node))

    def path_to(self, node_id: str | None) -> list[Message]:
        """Root → `node_id`, inclusive; empty when `node_id` is None or unknown."""
        path: list[Message] = []
        node = self.get(node_id)
        while node is not None:
            path.append(node)
            node = self.get(self.parent_of(node))
        path.reverse()
        return path

    def newest_leaf_under(self, node: Message) -> Message:
        """The most recently created message in `node`'s subtree (always a leaf)."""
        newest = node
        stack = [node]
        while stack:
            current = stack.pop()
            if (current.created_at, current.id) > (newest.created_at, newest.id):
                newest = current
            stack.extend(self.children(current.id))
        return newest

    def active_leaf(self, current_leaf_id: str | None) -> Message | None:
        """The leaf to show: the remembered one while it is still a leaf, else the newest below it.

        An unknown or missing id falls back to the newest message of the
        conversation (always a leaf).
        """
        remembered = self.get(current_leaf_id)
        if remembered is not None:
            return self.newest_leaf_under(remembered)
        return self._newest

    def active_path(self, current_leaf_id: str | None) -> list[Message]:
        leaf = self.active_leaf(current_leaf_id)
        return self.path_to(leaf.id if leaf is not None else None)

    @property
    def newest(self) -> Message | None:
        return self._newest

    @property
    def messages(self) -> Sequence[Message]:
        """Every message, oldest first."""
        return list(self._by_id.values())
