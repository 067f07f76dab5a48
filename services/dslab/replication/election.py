"""The manager's side of an election: terms, promises, and the choice of the new primary.

The balancer, acting as each shard's manager, is the only elector (docs/replication.md says
why). Raft's safety (section 5.4) still holds because an election keeps Raft's rules, with
the manager as the one candidate of every term:

1. **A new term, persisted first.** ``start`` takes a term strictly greater than any it used
   or heard of, and its output asks the caller to make it durable (``persist_term``) before
   sending anything, so a restarted manager never reuses a term: at most one primary per term.
2. **Promises.** Each replica that has not seen a higher term persists the new term, refuses
   appends of older terms from then on (fencing), and answers its log position.
3. **The election restriction.** Once a majority promised, the manager picks, among those that
   promised, the most up-to-date log (last term, then last index: section 5.4.1). Every
   committed entry is on a majority; that majority meets the promising one; so the pick holds
   every committed entry (leader completeness). Its log cannot change between its promise
   and its appointment: it refuses older terms, and no primary of the new term exists yet.
4. **Appointment.** ``Appoint`` goes to the one chosen; it writes a no-op of the new term
   (section 5.4.2), which, once committed, commits everything before it.

The choice is a parameter (``Chooser``) so the tests can show a wrong one loses acknowledged
writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .log import LogPosition
from .messages import Appoint, AppointReply, Message, Promise, PromiseReply
from .primary import majority

__all__ = ["Chooser", "most_up_to_date", "ElectorOutput", "Elector"]

Chooser = Callable[[Mapping[str, LogPosition]], str]


def most_up_to_date(promises: Mapping[str, LogPosition]) -> str:
    """The promiser with the most up-to-date log; among equals, the first name in order."""
    return min(promises, key=lambda name: (-promises[name].last_term,
                                           -promises[name].last_index, name))


@dataclass(frozen=True)
class ElectorOutput:
    """``persist_term``: make this the manager's durable term before sending ``messages``.
    ``appointed``: the replica just made primary (confirmed by its reply), for the shard map."""

    persist_term: int | None = None
    messages: tuple[Message, ...] = ()
    appointed: str | None = None


@dataclass
class _Election:
    term: int
    members: tuple[str, ...]
    promises: dict[str, LogPosition] = field(default_factory=dict)
    chosen: str | None = None


class Elector:
    """One shard's elector. ``term``: the durable highest term used (restore it on restart)."""

    def __init__(self, name: str, term: int = 0, choose: Chooser = most_up_to_date) -> None:
        self.name = name
        self.term = term
        self.highest_seen = term
        self.choose = choose
        self.election: _Election | None = None
        self.primary: str | None = None  # the primary of ``term``, once it accepted

    def start(self, members: tuple[str, ...]) -> ElectorOutput:
        """A new election over ``members`` (the caller decided the primary is lost, or there is
        none yet). Anything of an earlier election is forgotten."""
        if not members:
            raise ValueError("a replica set has at least one member")
        self.term = max(self.term, self.highest_seen) + 1
        self.highest_seen = self.term
        self.election = _Election(self.term, tuple(members))
        self.primary = None
        return ElectorOutput(persist_term=self.term, messages=tuple(
            Promise(self.term, self.name, member) for member in members))

    def step(self, message: Message) -> ElectorOutput:
        election = self.election
        if isinstance(message, PromiseReply):
            self.highest_seen = max(self.highest_seen, message.term)
            if (election is None or message.asked != election.term or not message.granted
                    or message.src not in election.members or election.chosen is not None):
                return ElectorOutput()  # stale, refused, or already decided
            election.promises[message.src] = message.position
            if len(election.promises) < majority(len(election.members)):
                return ElectorOutput()
            election.chosen = self.choose(dict(election.promises))
            return ElectorOutput(messages=(Appoint(election.term, self.name, election.chosen,
                                                   election.members),))
        if isinstance(message, AppointReply):
            self.highest_seen = max(self.highest_seen, message.term)
            if (election is not None and message.asked == election.term and message.accepted
                    and message.src == election.chosen and self.primary is None):
                self.primary = message.src
                return ElectorOutput(appointed=message.src)
        return ElectorOutput()
