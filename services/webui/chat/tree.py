"""A session's messages as a tree: the current path, siblings, and switching between them.

Each message names its parent (the previous message on its path); the session names its current
leaf. Editing a message or regenerating a reply adds a sibling, so nothing is ever overwritten.
One query reads a session's (id, parent_id, role, created_at) and the walk happens in Python:
sessions hold at most thousands of messages.

A session written without parents (before the tree, or by code that does not know it) has no
leaf: its path is all its messages in order, and `adopt` chains them before the first branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm.attributes import set_committed_value

from ..extensions import db
from ..models import ConversationSession, Message


@dataclass(frozen=True)
class Node:
    id: str
    parent_id: str | None
    role: str
    created_at: datetime


@dataclass(frozen=True)
class Siblings:
    """Where a message stands among the messages that share its parent and role."""

    ids: tuple[str, ...]
    index: int  # 0-based

    @property
    def position(self) -> int:
        return self.index + 1

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def previous_id(self) -> str | None:
        return self.ids[self.index - 1] if self.index > 0 else None

    @property
    def next_id(self) -> str | None:
        return self.ids[self.index + 1] if self.index + 1 < len(self.ids) else None


class Tree:
    def __init__(self, nodes: list[Node], leaf_id: str | None):
        self.nodes = {node.id: node for node in nodes}
        ordered = sorted(nodes, key=lambda n: (n.created_at, n.id))
        self.children: dict[str | None, list[Node]] = {}
        for node in ordered:
            self.children.setdefault(node.parent_id, []).append(node)
        self.linear = leaf_id is None or leaf_id not in self.nodes
        self.ordered = ordered
        self.leaf_id = ordered[-1].id if self.linear and ordered else leaf_id

    def path(self, leaf_id: str | None = None) -> list[str]:
        """Message ids from the root to `leaf_id` (default: the current leaf)."""
        if self.linear and leaf_id is None:
            return [node.id for node in self.ordered]
        ids: list[str] = []
        seen: set[str] = set()
        node = self.nodes.get(leaf_id or self.leaf_id or "")
        while node is not None and node.id not in seen:  # a cycle (a bad import) ends the walk
            seen.add(node.id)
            ids.append(node.id)
            node = self.nodes.get(node.parent_id) if node.parent_id else None
        ids.reverse()
        return ids

    def parent_of(self, message_id: str) -> str | None:
        """The parent as the tree reads it: for a session written without parents, the message before."""
        if self.linear:
            index = next(i for i, node in enumerate(self.ordered) if node.id == message_id)
            return self.ordered[index - 1].id if index else None
        return self.nodes[message_id].parent_id

    def parents(self) -> dict[str, str | None]:
        if self.linear:
            return {node.id: (self.ordered[i - 1].id if i else None) for i, node in enumerate(self.ordered)}
        return {node_id: node.parent_id for node_id, node in self.nodes.items()}

    def siblings(self, message_id: str) -> Siblings:
        node = self.nodes[message_id]
        if self.linear:
            return Siblings((node.id,), 0)
        same = tuple(n.id for n in self.children.get(node.parent_id, []) if n.role == node.role)
        return Siblings(same, same.index(node.id))

    def newest_leaf_under(self, message_id: str) -> str:
        """Descend from a message, always into its newest child, to a leaf."""
        current = message_id
        seen = {current}
        while self.children.get(current):
            current = self.children[current][-1].id
            if current in seen:
                break
            seen.add(current)
        return current

    def has_branches(self) -> bool:
        return not self.linear and any(
            len([n for n in kids if n.role == role]) > 1
            for kids in self.children.values()
            for role in ("user", "assistant")
        )


# Built once (each page, send and reply end loads a tree): building costs more than running it.
_TREE_ROWS = select(Message.id, Message.parent_id, Message.role, Message.created_at).where(
    Message.session_id == bindparam("session_id")
)


def load(session: ConversationSession) -> Tree:
    rows = db.session.execute(_TREE_ROWS, {"session_id": session.id}).all()
    return Tree([Node(*row) for row in rows], session.current_leaf_id)


def path_ids(session: ConversationSession) -> list[str]:
    return load(session).path()


def current_path(session: ConversationSession, roles: tuple[str, ...] | None = None) -> list[Message]:
    """The messages of the current path, root first (only `roles`, if given)."""
    return messages_of(path_ids(session), roles)


def messages_of(ids: list[str], roles: tuple[str, ...] | None = None) -> list[Message]:
    """These messages, in this order."""
    if not ids:
        return []
    query = select(Message).where(Message.id.in_(ids))
    if roles:
        query = query.where(Message.role.in_(roles))
    by_id = {message.id: message for message in db.session.scalars(query)}
    return [by_id[i] for i in ids if i in by_id]


def adopt(session: ConversationSession) -> None:
    """Chain the messages of a session written without parents into one path (no commit).

    A no-op for a session that has a leaf. The caller holds the session's write claim.
    """
    if session.current_leaf_id is not None:
        return
    ids = path_ids(session)
    if not ids:
        return
    table = Message.__table__
    pairs = [{"mid": child, "pid": parent} for parent, child in zip(ids, ids[1:])]
    if pairs:
        db.session.execute(
            update(table).where(table.c.id == bindparam("mid")).values(parent_id=bindparam("pid")),
            pairs,
        )
    set_leaf(session, ids[-1])


def set_leaf(session: ConversationSession, leaf_id: str) -> None:
    table = ConversationSession.__table__
    db.session.execute(update(table).where(table.c.id == session.id).values(current_leaf_id=leaf_id))
    set_committed_value(session, "current_leaf_id", leaf_id)
