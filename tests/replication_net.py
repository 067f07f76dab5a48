"""An in-memory network of replicas and one manager, stepped by hand (etcd's ``newNetwork``).

Every message goes into ``in_flight``; a test (or a hypothesis schedule) delivers, drops,
duplicates or reorders them, crashes and restarts replicas, and starts elections. The network
does what a shard server does with each ``Ready``: the primary's appends leave at once; the
rest waits for the journal: persist it to the replica's ``Durable`` record, then queue its
other messages, then apply its entries to the replica's data (a list of entries: the data is
durable, as the engine's rows are), then tell the replica what its journal now holds
(``Replica.persisted``). A replica in ``slow_disks`` journals only when a test says so
(``journal``), so its appends can be answered, or it can crash, before its own journal holds
them. It also keeps the history the invariants need, and ``check()`` asserts them:

- at most one primary per term;
- log matching: two logs that hold an entry of the same term at one index hold the same
  entries up to there;
- leader completeness: every acknowledged write is, at its index, in the log (or the data) of
  every primary of the term it was acknowledged in or a later one;
- state machine safety: no two replicas apply different entries at one index;
- every replica's commit index and current term never decrease (across restarts too);
- what a replica holds in memory is what it made durable (every change was in a Ready),
  once its journal has caught up;
- a released read's index covers every write acknowledged before the read began.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from dslab.replication import (
    Append,
    Chooser,
    Durable,
    Elector,
    ElectorOutput,
    Entry,
    Message,
    NeedsCopy,
    Ready,
    Replica,
    most_up_to_date,
)

MANAGER = "manager"


class Violation(AssertionError):
    """An invariant of the replication core failed."""


@dataclass
class Read:
    read_id: Hashable
    at: str
    acked_before: int  # the highest acknowledged index when the read began
    index: int | None = None  # once released


@dataclass
class Net:
    names: tuple[str, ...]
    choose: Chooser = most_up_to_date
    max_batch: int = 64
    replica_type: type[Replica] = Replica
    replicas: dict[str, Replica] = field(default_factory=dict)
    disks: dict[str, Durable] = field(default_factory=dict)
    data: dict[str, list[Entry]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    slow_disks: set[str] = field(default_factory=set)  # journal only when ``journal`` says
    unjournaled: dict[str, list[Ready]] = field(default_factory=dict)
    in_flight: list[Message] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)
    acked: dict[int, tuple[Entry, int]] = field(default_factory=dict)  # index -> (entry, term)
    applied_at: dict[int, Entry] = field(default_factory=dict)
    primaries: dict[int, str] = field(default_factory=dict)
    copies: list[tuple[str, NeedsCopy]] = field(default_factory=list)
    reads: dict[Hashable, Read] = field(default_factory=dict)
    high_commit: dict[str, int] = field(default_factory=dict)
    high_term: dict[str, int] = field(default_factory=dict)
    manager_term: int = 0  # the manager's durable term
    events: Counter[str] = field(default_factory=Counter)  # what happened, for coverage

    def __post_init__(self) -> None:
        for name in self.names:
            self.replicas[name] = self.replica_type(name, max_batch=self.max_batch)
            self.disks[name] = Durable()
            self.data[name] = []
        self.elector = Elector(MANAGER, choose=self.choose)

    # ---- outputs -------------------------------------------------------------------------
    def _send(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self.in_flight.append(message)
            self.sent.append(message)

    def handle(self, name: str, ready: Ready) -> Ready:
        """Do what a shard server does with a Ready: send the primary's appends; persist,
        send the rest, apply (now, or at ``journal`` for a slow disk)."""
        self._send(m for m in ready.messages if isinstance(m, Append))
        self.unjournaled.setdefault(name, []).append(ready)
        if name not in self.slow_disks:
            self.journal(name)
        return ready

    def journal(self, name: str) -> None:
        """The replica's journal writes what its Readys asked, in order, each followed by
        what only then may happen (replies sent, entries applied, ``persisted`` told)."""
        while self.unjournaled.get(name):
            ready = self.unjournaled[name].pop(0)
            self._journaled(name, ready)
            if ready.append and name not in self.down:
                last = ready.append[-1]
                replica = self.replicas[name]
                commit = replica.commit
                self.handle(name, replica.persisted(last.index, last.term))
                self.events["commits at a late journal"] += replica.commit > commit

    def _journaled(self, name: str, ready: Ready) -> None:
        self.disks[name].persist(ready)
        self._send(m for m in ready.messages if not isinstance(m, Append))
        self.events["truncations"] += ready.truncate_from is not None
        self.events["copies asked"] += len(ready.needs_copy)
        self.events["reads released"] += len(ready.reads)
        self.events["reads failed"] += len(ready.reads_failed)
        self.events["entries applied"] += len(ready.apply)
        data = self.data[name]
        for entry in ready.apply:
            if entry.index != len(data) + 1:
                raise Violation(f"{name} applies {entry.index} after {len(data)}")
            seen = self.applied_at.setdefault(entry.index, entry)
            if seen != entry:
                raise Violation(f"state machine safety: {name} applies {entry} where another "
                                f"replica applied {seen}: an acknowledged write is lost")
            data.append(entry)
            # Applied means committed: acknowledged (by the primary) or known committed.
            self.acked.setdefault(entry.index, (entry, self.replicas[name].term))
        self.copies.extend((name, need) for need in ready.needs_copy)
        for released in ready.reads:
            read = self.reads[released.read_id]
            read.index = released.index
            if released.index < read.acked_before:
                raise Violation(f"read {read.read_id} released at {released.index}, but "
                                f"{read.acked_before} was acknowledged before it began")

    def _elector(self, output: ElectorOutput) -> ElectorOutput:
        if output.persist_term is not None:
            self.manager_term = output.persist_term
        self.events["appointments"] += output.appointed is not None
        self._send(output.messages)
        return output

    # ---- driving -------------------------------------------------------------------------
    def elect(self, members: tuple[str, ...] | None = None) -> ElectorOutput:
        """The manager starts an election (its promises are then in flight)."""
        return self._elector(self.elector.start(members or self.names))

    def restart_manager(self) -> None:
        self.elector = Elector(MANAGER, term=self.manager_term, choose=self.choose)

    def deliver_one(self, message: Message) -> None:
        if message.to == MANAGER:
            self._elector(self.elector.step(message))
        elif message.to not in self.down:
            self.handle(message.to, self.replicas[message.to].step(message))

    def deliver(self, where: Callable[[Message], bool] = lambda m: True) -> int:
        """Deliver every message in flight that ``where`` accepts (the others stay), in
        order; what they cause is queued, not delivered. Returns how many."""
        now = [m for m in self.in_flight if where(m)]
        self.in_flight = [m for m in self.in_flight if not where(m)]
        for message in now:
            self.deliver_one(message)
        return len(now)

    def settle(self, where: Callable[[Message], bool] = lambda m: True, rounds: int = 2000
               ) -> None:
        """Deliver what ``where`` accepts until none is left (the rest stays in flight)."""
        for _ in range(rounds):
            if not self.deliver(where):
                return
        raise AssertionError("the network did not settle")

    def drop(self, where: Callable[[Message], bool] = lambda m: True) -> int:
        before = len(self.in_flight)
        self.in_flight = [m for m in self.in_flight if not where(m)]
        return before - len(self.in_flight)

    def write(self, command: Hashable, at: str | None = None) -> Entry:
        name = at or self.primary()
        entry, ready = self.replicas[name].propose(command)
        self.handle(name, ready)
        return entry

    def heartbeat(self, name: str | None = None) -> None:
        name = name or self.primary()
        self.handle(name, self.replicas[name].heartbeat())

    def read(self, read_id: Hashable, at: str | None = None) -> Read:
        name = at or self.primary()
        read = Read(read_id, name, max(self.acked, default=0))
        self.reads[read_id] = read
        self.handle(name, self.replicas[name].read(read_id))
        return read

    def crash(self, name: str) -> None:
        """Volatile state is lost, what the journal had not written with it; the durable
        record and the data stay."""
        self.down.add(name)
        self.unjournaled.pop(name, None)

    def restart(self, name: str) -> None:
        self.down.discard(name)
        self.replicas[name] = self.replica_type.restore(name, self.disks[name],
                                                        len(self.data[name]), self.max_batch)

    def run_copies(self) -> None:
        """Do the copies primaries asked for: the primary's data to the peer (initial sync)."""
        copies, self.copies = self.copies, []
        for source, need in copies:
            primary = self.replicas[source]
            if source in self.down or need.peer in self.down:
                if source not in self.down:
                    self.handle(source, primary.copy_failed(need.peer))
                continue
            rows = list(self.data[source])
            index = len(rows)
            if index > self.replicas[need.peer].applied:  # never copy older data over newer
                self.data[need.peer] = rows
                self.events["copies installed"] += 1
            self.handle(need.peer, self.replicas[need.peer].install_copy(
                index, rows[-1].term if rows else 0, source, need.term))
            # The copy's record is journaled with its rows, even on a slow disk: a crash
            # between the two is journal.load's to mend (test_replication_journal.py).
            self.journal(need.peer)

    def primary(self) -> str:
        live = [n for n in self.names if n not in self.down and self.replicas[n].is_primary]
        if not live:
            raise AssertionError("no primary")
        return max(live, key=lambda n: self.replicas[n].term)

    def appends_to(self, name: str, since: int = 0) -> list[Append]:
        return [m for m in self.sent[since:] if isinstance(m, Append) and m.to == name]

    # ---- invariants ----------------------------------------------------------------------
    def check(self) -> None:
        logs: dict[str, dict[int, Entry]] = {}
        for name in self.names:
            disk = self.disks[name]
            replica = self.replicas[name]
            if name not in self.down and not self.unjournaled.get(name):
                held = list(replica.log.entries(replica.log.first_index))
                if (held != disk.entries or disk.term != replica.term
                        or disk.snapshot_index != replica.log.snapshot_index):
                    raise Violation(f"{name} holds what it did not make durable")
                if disk.commit != replica.commit:
                    raise Violation(f"{name}'s commit index {replica.commit} is not durable")
                if replica.is_primary:
                    if self.primaries.setdefault(replica.term, name) != name:
                        raise Violation(f"two primaries in term {replica.term}: "
                                        f"{self.primaries[replica.term]} and {name}")
                    self._complete(name)
            if disk.commit < self.high_commit.get(name, 0):
                raise Violation(f"{name}'s commit index went back")
            if disk.term < self.high_term.get(name, 0):
                raise Violation(f"{name}'s term went back")
            self.high_commit[name], self.high_term[name] = disk.commit, disk.term
            logs[name] = {e.index: e for e in disk.entries}
        names = list(self.names)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                common = sorted(set(logs[a]) & set(logs[b]), reverse=True)
                agree = next((k for k in common if logs[a][k].term == logs[b][k].term), None)
                if agree is None:
                    continue
                for k in common:
                    if k <= agree and logs[a][k] != logs[b][k]:
                        raise Violation(f"log matching: {a} and {b} differ at {k} though "
                                        f"they agree at {agree}")

    def _complete(self, name: str) -> None:
        replica = self.replicas[name]
        for index, (entry, term) in self.acked.items():
            if term > replica.term:
                continue
            if index <= replica.log.snapshot_index:
                held = self.data[name][index - 1] if index <= len(self.data[name]) else None
            else:
                got = replica.log.entries(index, index + 1)
                held = got[0] if got else None
            if held != entry:
                raise Violation(f"leader completeness: acknowledged {entry} is not in the "
                                f"log of {name}, primary of term {replica.term}")
