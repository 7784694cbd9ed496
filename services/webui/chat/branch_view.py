"""What the page's action rows need: a message's place among its siblings ("‹ 2 / 3 ›"), the
models a reply can be regenerated with, the agents a chat can be branched to."""

from __future__ import annotations

from dataclasses import dataclass

from ..fleet import registry
from ..models import ConversationSession
from . import tree


@dataclass(frozen=True)
class Place:
    session_id: str
    siblings: tree.Siblings
    model_id: str | None  # the model that wrote a reply
    models: tuple[tuple[str, str], ...]  # (model_id, name) of the session's agent
    agents: tuple[tuple[str, str], ...]  # (agent_id, name): the session's agent first
    writable: bool  # not archived, agent still in the registry

    @property
    def branched(self) -> bool:
        return self.siblings.count > 1


def placer(session: ConversationSession, shape: tree.Tree | None = None):
    """A function message_id, model_id → Place, sharing one tree and one fleet lookup."""
    shape = shape or tree.load(session)
    fleet = registry()
    agent = fleet.get(session.agent_id)
    models = tuple((m.model_id, m.name) for m in agent.models) if agent else ()
    others = tuple((a.agent_id, a.name) for a in fleet.agents if a.agent_id != session.agent_id)
    agents = ((session.agent_id, session.agent_name), *others)
    writable = agent is not None and not session.is_archived

    def place(message_id: str, model_id: str | None = None) -> Place | None:
        if message_id not in shape.nodes:
            return None
        return Place(session.id, shape.siblings(message_id), model_id or session.model_id, models, agents, writable)

    return place
