"""One replica of a shard's replica set, as a pure state machine: a message in, a ``Ready`` out.

A replica is a **secondary** or the **primary** of its current term. Its rules:

- **Terms and fencing** (Raft 5.1). The current term only grows, and is persisted (in the
  output's ``hard_state``) before any reply leaves. A message of an older term is refused
  and answered with the newer term, which makes a deposed primary step down; a message of a
  newer term is adopted first (a primary that sees one steps down). Once a replica promised
  T, nothing of a term before T is ever appended to its log.
- **Promise** (election.py): granted to a term above the current one (or repeated for the
  same one), answering the log position.
- **Appointment**: only for the term the replica promised and still holds. The new primary
  writes a no-op of its term first (Raft 5.4.2, 8); nothing is acknowledged before it commits.
- **Append** (log.py): the consistency check, truncation of a conflicting suffix (this is how
  a deposed primary, back as a secondary, drops what it held and was never committed), and
  the commit index learned from the primary, capped by what is known to match it.
- **Commit** (primary.py): majority, through an entry of the current term, the primary
  counted through what its journal holds (``persisted``: its appends may leave before its
  own journal write). Secondaries learn it from the next append or heartbeat; every replica
  applies committed entries in log order (``Ready.apply``). A write is acknowledged when its
  entry is committed; a read at the primary waits until the entries committed when it began
  are applied there.
- **Catch-up**: the primary resumes each secondary from what it holds (probing back from the
  end by the secondary's hints), so a restarted secondary gets only what it lacks. A
  secondary whose next entry was trimmed gets ``NeedsCopy``; once the caller copied the shard
  to it, ``install_copy`` resets its log to start after the copy.

No I/O and no clock: ``heartbeat`` is called by the caller's timer, elections are started by
the manager, and everything to persist or send is in the ``Ready`` each call returns.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from enum import Enum

from .durable import Durable
from .log import NOOP, Accepted, Entry, ReplicaLog
from .messages import (
    Append,
    AppendReply,
    Appoint,
    AppointReply,
    HardState,
    Message,
    NeedsCopy,
    Promise,
    PromiseReply,
    ReadReady,
    Ready,
    Snapshot,
)
from .primary import Mode, Progress, commit_index, majority, trim_point
from .reads import ReadIndex

__all__ = ["Role", "Replica", "NotPrimary", "TwoPrimaries"]


class Role(Enum):
    SECONDARY = "secondary"
    PRIMARY = "primary"


class NotPrimary(Exception):
    """Asked of a replica that is not the primary (the caller redirects or retries)."""


class TwoPrimaries(AssertionError):
    """An append of this replica's own term from another replica: the elector appointed two
    primaries in one term. Never happens with a correct elector."""


class _Out:
    """What the current step produced so far (a builder for ``Ready``)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.truncate_from: int | None = None
        self.append: list[Entry] = []
        self.messages: list[Message] = []
        self.needs_copy: list[NeedsCopy] = []
        self.reads: list[ReadReady] = []
        self.reads_failed: list[Hashable] = []

    def accepted(self, change: Accepted) -> None:
        if change.truncated_from is not None:
            cut = change.truncated_from
            self.append = [e for e in self.append if e.index < cut]
            if self.truncate_from is None or cut < self.truncate_from:
                self.truncate_from = cut
        self.append.extend(change.appended)


class Replica:
    def __init__(self, name: str, *, term: int = 0, commit: int = 0,
                 log: ReplicaLog | None = None, applied: int | None = None,
                 max_batch: int = 64) -> None:
        self.name = name
        self.term = term
        self.log = log if log is not None else ReplicaLog()
        self.commit = max(commit, self.log.snapshot_index)
        self.applied = self.log.snapshot_index if applied is None else applied
        if not self.log.snapshot_index <= self.applied <= self.commit <= self.log.last_index:
            raise ValueError("need snapshot <= applied <= commit <= last index")
        self.max_batch = max_batch
        self.role = Role.SECONDARY
        self.primary: str | None = None  # the primary of ``term``, as far as this replica knows
        self.members: tuple[str, ...] = ()
        self.progress: dict[str, Progress] = {}
        self.term_start = 0  # the primary's no-op: every entry of an earlier term is before it
        # The last index this replica's journal holds as its log has it (``persisted``): the
        # primary counts itself toward a majority only through it, so its appends may leave
        # before its own journal write (Raft's thesis, 10.2.1).
        self.durable_index = self.log.last_index
        self.reads = ReadIndex()
        self._saved = HardState(self.term, self.commit)

    @classmethod
    def restore(cls, name: str, durable: Durable, applied: int, max_batch: int = 64
                ) -> Replica:
        """The replica after a restart: its durable record and its data's applied index."""
        return cls(name, term=durable.term, commit=durable.commit, log=durable.log(),
                   applied=applied, max_batch=max_batch)

    @property
    def is_primary(self) -> bool:
        return self.role is Role.PRIMARY

    # ---- the caller's entry points -------------------------------------------------------
    def step(self, message: Message) -> Ready:
        out = _Out()
        if message.term > self.term:
            self._adopt(message.term, out)
        if isinstance(message, Promise):
            self._promise(message, out)
        elif isinstance(message, Appoint):
            self._appoint(message, out)
        elif isinstance(message, Append):
            self._append(message, out)
        elif isinstance(message, AppendReply):
            self._append_reply(message, out)
        return self._ready(out)

    def propose(self, command: Hashable) -> tuple[Entry, Ready]:
        """A client's write, at the primary: its entry (acknowledge it when that entry is
        committed: its result was decided before it was logged) and what to do now."""
        if not self.is_primary:
            raise NotPrimary(f"{self.name} is not the primary (term {self.term})")
        out = _Out()
        entry = self.log.append_new(self.term, command)
        out.append.append(entry)
        for peer in self.progress:
            if self.progress[peer].mode is Mode.REPLICATE:
                self._send(peer, out)
        self._advance_commit()
        return entry, self._ready(out)

    def heartbeat(self) -> Ready:
        """The caller's heartbeat timer: the primary appends to every peer (resending what was
        not acknowledged, carrying the commit index). Nothing on a secondary."""
        out = _Out()
        if self.is_primary:
            for peer, progress in self.progress.items():
                if progress.mode is Mode.REPLICATE and progress.match < self.log.last_index:
                    progress.next = progress.match + 1  # resend what a lost message carried
                progress.paused = False
                self._send(peer, out, heartbeat=True)
        return self._ready(out)

    def read(self, read_id: Hashable) -> Ready:
        """Begin a linearizable read at the primary (reads.py); released in a later Ready."""
        if not self.is_primary:
            raise NotPrimary(f"{self.name} is not the primary (term {self.term})")
        out = _Out()
        self.reads.begin(read_id, self.commit, self._commit_is_current())
        for peer, progress in self.progress.items():
            progress.paused = False
            self._send(peer, out, heartbeat=True)
        return self._ready(out)

    def reads_by_lease(self) -> Ready:
        """The caller holds a lease: confirm the pending reads without a round."""
        out = _Out()
        if self.is_primary:
            self.reads.confirm_by_lease()
        return self._ready(out)

    def trim(self, upto: int) -> Ready:
        """Drop log entries through ``upto`` (at most what this replica applied)."""
        out = _Out()
        upto = min(upto, self.applied)
        if upto > self.log.snapshot_index:
            self.log.trim(upto)
            out.snapshot = Snapshot(upto, self.log.snapshot_term)
        return self._ready(out)

    def trim_point(self, live: Collection[str], max_entries: int) -> int:
        """At the primary: how far ``trim`` may go, given the ``live`` peers (primary.py)."""
        matches = {p: pr.match for p, pr in self.progress.items()}
        return trim_point(matches, live, self.applied, self.log.last_index, max_entries)

    def install_copy(self, index: int, index_term: int, primary: str, primary_term: int
                     ) -> Ready:
        """The caller replaced this replica's data by a copy of committed data through
        ``index`` (whose entry is of ``index_term``), as ``primary`` of ``primary_term`` asked.
        The caller copies only if ``index`` is above this replica's ``applied`` (else it keeps
        its data and still calls this, for the answer). A copy is committed data, so
        installing it is safe whatever the terms; the answer goes to the primary like an
        append's."""
        out = _Out()
        if primary_term > self.term:
            self._adopt(primary_term, out)
        if index > self.applied:
            kept = self.log.install(index, index_term)
            out.snapshot = Snapshot(index, index_term, kept)
            if not kept:
                self.durable_index = min(self.durable_index, index)
            self.commit = max(self.commit, index)
            self.applied = index
        if primary_term == self.term:
            self.primary = primary
        out.messages.append(AppendReply(self.term, self.name, primary,
                                        success=primary_term == self.term,
                                        match_index=index))
        return self._ready(out)

    def persisted(self, index: int, term: int) -> Ready:
        """The caller's journal now holds this replica's log through ``index``, whose entry
        it wrote with ``term``. Ignored if the log no longer has that entry there (it was cut
        and replaced meanwhile: log matching says the prefix is then not the journal's). At
        the primary, this may commit entries."""
        out = _Out()
        if index > self.durable_index and self.log.term_at(index) == term:
            self.durable_index = index
            self._advance_commit()
        return self._ready(out)

    def copy_failed(self, peer: str) -> Ready:
        """At the primary: the copy to ``peer`` failed; it will be asked for again."""
        out = _Out()
        progress = self.progress.get(peer)
        if self.is_primary and progress is not None and progress.mode is Mode.COPY:
            progress.mode, progress.paused = Mode.PROBE, False
            self._send(peer, out)
        return self._ready(out)

    # ---- handlers ------------------------------------------------------------------------
    def _adopt(self, term: int, out: _Out) -> None:
        """A newer term: take it, and step down if primary."""
        self.term = term
        self.primary = None
        if self.is_primary:
            self._step_down(out)

    def _step_down(self, out: _Out) -> None:
        self.role = Role.SECONDARY
        self.progress = {}
        out.reads_failed.extend(self.reads.drop())
        self.reads = ReadIndex()

    def _promise(self, message: Promise, out: _Out) -> None:
        granted = message.term == self.term  # adopted above if it was higher
        out.messages.append(PromiseReply(self.term, self.name, message.src, message.term,
                                         granted, self.log.position))

    def _appoint(self, message: Appoint, out: _Out) -> None:
        accepted = message.term == self.term and self.name in message.members
        if accepted and not self.is_primary:
            self._become_primary(message.members, out)
        out.messages.append(AppointReply(self.term, self.name, message.src, message.term,
                                         accepted))

    def _become_primary(self, members: tuple[str, ...], out: _Out) -> None:
        self.role = Role.PRIMARY
        self.primary = self.name
        self.members = tuple(members)
        self.reads = ReadIndex()
        start = self.log.last_index + 1
        self.progress = {peer: Progress(next=start) for peer in members if peer != self.name}
        noop = self.log.append_new(self.term, NOOP)
        self.term_start = noop.index
        out.append.append(noop)
        for peer in self.progress:
            self._send(peer, out)
        self._advance_commit()

    def _append(self, message: Append, out: _Out) -> None:
        if message.term < self.term:
            out.messages.append(AppendReply(self.term, self.name, message.src, success=False,
                                            round=message.round))
            return
        if self.is_primary:
            raise TwoPrimaries(f"{message.src} and {self.name} are both primary of "
                               f"term {self.term}")
        self.primary = message.src
        change = self.log.accept(message.prev_index, message.prev_term, message.entries,
                                 self.commit)
        if change is None:
            out.messages.append(AppendReply(
                self.term, self.name, message.src, success=False,
                rejected=message.prev_index, hint=self.log.conflict_hint(message.prev_index),
                round=message.round))
            return
        out.accepted(change)
        if change.truncated_from is not None:
            self.durable_index = min(self.durable_index, change.truncated_from - 1)
        learned = min(message.commit, change.match_index)
        if learned > self.commit:
            self.commit = learned
        out.messages.append(AppendReply(self.term, self.name, message.src, success=True,
                                        match_index=change.match_index, round=message.round))

    def _append_reply(self, message: AppendReply, out: _Out) -> None:
        progress = self.progress.get(message.src)
        if not self.is_primary or message.term != self.term or progress is None:
            return  # stale, or about an earlier term (a newer one was adopted above)
        progress.acked_round = max(progress.acked_round, message.round)
        if message.success:
            if progress.succeeded(message.match_index):
                self._advance_commit()
            if progress.next <= self.log.last_index:
                self._send(message.src, out)
        elif progress.refused(message.rejected, message.hint):
            self._send(message.src, out)

    # ---- the primary's sending and commit ------------------------------------------------
    def _send(self, peer: str, out: _Out, heartbeat: bool = False) -> None:
        progress = self.progress[peer]
        if progress.mode is Mode.COPY:
            if heartbeat:  # has the copy been installed? (its answer may have been lost)
                out.messages.append(Append(self.term, self.name, peer, self.log.snapshot_index,
                                           self.log.snapshot_term, (), self.commit,
                                           self.reads.round))
            return
        if progress.paused and not heartbeat:
            return
        if progress.next < self.log.first_index:
            progress.mode = Mode.COPY
            out.needs_copy.append(NeedsCopy(peer, self.term, self.log.first_index))
            return
        prev = progress.next - 1
        prev_term = self.log.term_at(prev)
        assert prev_term is not None
        entries = self.log.entries(progress.next, limit=self.max_batch)
        if not entries and not heartbeat:
            return
        out.messages.append(Append(self.term, self.name, peer, prev, prev_term, entries,
                                   self.commit, self.reads.round))
        if progress.mode is Mode.PROBE:
            progress.paused = True
        elif entries:
            progress.next = entries[-1].index + 1

    def _advance_commit(self) -> None:
        if not self.is_primary:
            return
        self.commit = commit_index(min(self.durable_index, self.log.last_index),
                                   [p.match for p in self.progress.values()],
                                   len(self.members), self.commit, self.log.term_at,
                                   self.term)

    def _commit_is_current(self) -> bool:
        return self.log.term_at(self.commit) == self.term

    def _settle_reads(self, out: _Out) -> None:
        if not self.is_primary or not self.reads.pending:
            return

        def acked(round_: int) -> int:
            return 1 + sum(1 for p in self.progress.values() if p.acked_round >= round_)

        for read_id, index in self.reads.settle(self.commit, self._commit_is_current(), acked,
                                                majority(len(self.members))):
            out.reads.append(ReadReady(read_id, index))

    # ---- the output ----------------------------------------------------------------------
    def _ready(self, out: _Out) -> Ready:
        self._settle_reads(out)
        hard: HardState | None = None
        if (self.term, self.commit) != (self._saved.term, self._saved.commit):
            hard = HardState(self.term, self.commit)
            self._saved = hard
        apply: Sequence[Entry] = ()
        if self.commit > self.applied:
            apply = self.log.entries(self.applied + 1, self.commit + 1)
            self.applied = self.commit
        return Ready(hard_state=hard, snapshot=out.snapshot, truncate_from=out.truncate_from,
                     append=tuple(out.append), messages=tuple(out.messages),
                     apply=tuple(apply), needs_copy=tuple(out.needs_copy),
                     reads=tuple(out.reads), reads_failed=tuple(out.reads_failed))
