"""The sharded database behind the Part 2 balancer, assembled: one object the HTTP layer holds.

    state.py       what is known in memory: configuration, placement, rings, counts (pure)
    servers.py     the client of the shard servers
    membership.py  /init /status /add /rm, a restart, replacing servers
    recovery.py    refilling a server, and a shard whose servers all died
    datapath.py    /read /write /update /del (--replication all: every replica, the lock held)
    majoritypath.py  the same under --replication majority: each shard's primary and its log
    primaries.py   who is each shard's primary (elections by shardmanager.py)
    keeper/        (shared with Part 1) start, watch, evict, replace: the servers' lifecycle

Locks: membership changes hold the keeper's lock; data changes of a shard hold that shard's
lock (``ShardLocks``), and so do refills of it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..contract.studdb import AddRequest, InitRequest, RmRequest
from ..keeper.keeper import ReplicaKeeper
from ..ring import HashRing
from ..supervisor import ReplicaSupervisor
from .datapath import DataPath
from .fanout import ServerRefused
from .locks import ShardLocks
from .majoritypath import MajorityDataPath
from .membership import ShardMembership
from .metadata import Metadata
from .metrics import DbMetrics
from .primaries import Primaries
from .servers import Call, ShardServers
from .shardmanager import Terms
from .state import ClusterState

__all__ = ["REPLICATIONS", "ServerRefused", "ShardCluster"]

REPLICATIONS = ("all", "majority")


class ShardCluster:
    def __init__(self, supervisor: ReplicaSupervisor, metadata: Metadata, *,
                 data_root: Path | None = None, hashes: str = "blake2b", algorithm: str = "ring",
                 request_timeout: float = 30.0, heartbeat_interval: float = 0.25,
                 heartbeat_timeout: float = 1.0, heartbeat_misses: int = 3,
                 lock_timeout: float = 60.0, read_consistency: str = "linearizable",
                 replication: str = "all", repl_timeout: float = 2.0,
                 rng: random.Random | None = None,
                 call_server: Call | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``call_server`` and ``clock`` are the two boundaries a test may step: the shard
        servers' answers and the keeper's clock (its backoffs); real ones by default."""
        rng = rng or random.Random()
        self.state = ClusterState(hashes, algorithm)
        self.locks = ShardLocks(lock_timeout,
                                on_wait=lambda shard, s: self.metrics.lock_wait.labels(shard).observe(s))
        self.membership = ShardMembership(self.state, metadata, ShardServers(
            lambda name: self.keeper.pool(name), lambda: self.keeper.wake(), rng, call_server),
            self.locks, rng)
        self.servers = self.membership.servers
        self.keeper = ReplicaKeeper(
            supervisor, self.membership, noun="shard servers", request_timeout=request_timeout,
            heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout,
            heartbeat_misses=heartbeat_misses, data_root=data_root, clock=clock)
        self.membership.bind(self.keeper)
        self.metrics = DbMetrics(self.keeper)
        self.membership.recovery.observe = lambda phase, s: self.metrics.revival.labels(phase).observe(s)
        if replication not in REPLICATIONS:
            raise ValueError(f"replication {replication!r}: one of {REPLICATIONS}")
        self.replication = replication
        self.primaries: Primaries | None = None
        self.data: DataPath | MajorityDataPath
        if replication == "all":
            self.data = DataPath(self.state, metadata, self.servers, self.locks,
                                 self.keeper.evict, self.metrics, read_consistency)
        else:
            servers = self.servers

            async def settle(shard: str, primary: str) -> object:  # its no-op committed
                return await servers.call(primary, "POST", "/repl/read",
                                          {"shard": shard, "Stud_id": {"low": 0, "high": 0}})
            self.primaries = Primaries(Terms(metadata.db), self.state.live, self.keeper.pool,
                                       repl_timeout, settle, on_election=self.metrics.elected)
            self.data = MajorityDataPath(self.state, self.servers, self.locks, self.primaries,
                                         self.metrics, read_consistency)
            data = self.data

            # A join runs under the keeper's lock, which the heartbeats need too: it waits
            # for the newcomer's catch-up no longer than the heartbeats take to find a death.
            detection = heartbeat_misses * (heartbeat_interval + heartbeat_timeout)

            async def join(shard: str, name: str) -> None:  # by the log, not a copy
                await data.join(shard, name, within=detection)
            self.membership.recovery.join_by_log = join
            self.membership.quorum_lost = self.primaries.quorum_lost

    # What tests and tools read.
    @property
    def rings(self) -> dict[str, HashRing]:
        return self.state.rings

    @property
    def valid_idx(self) -> dict[str, int]:
        return self.state.valid_idx

    @property
    def in_sync(self) -> dict[str, set[str]]:
        return self.state.in_sync

    async def start(self, *, heartbeats: bool = True) -> None:
        """Load the metadata and start what it lists; ``heartbeats=False`` leaves the rounds
        to the caller (tests step them with ``keeper.heartbeat_round``)."""
        await self.membership.load()
        if heartbeats:
            self.keeper.start_monitor()

    async def close(self) -> None:
        await self.keeper.close()
        if self.primaries is not None:
            self.primaries.close()

    # ---- configuration ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self.membership.status()

    async def init(self, request: InitRequest) -> None:
        await self.membership.init(request)

    async def add(self, request: AddRequest) -> tuple[int, list[str]]:
        return await self.membership.add(request)

    async def rm(self, request: RmRequest) -> tuple[int, list[str]]:
        return await self.membership.rm(request)

    # ---- data -------------------------------------------------------------------------------
    async def read(self, low: int, high: int) -> tuple[list[str], list[dict[str, Any]]]:
        return await self.data.read(low, high)

    async def write(self, data: list[Any]) -> int:
        return await self.data.write(data)

    async def update(self, stud_id: int, data: Any) -> None:
        await self.data.update(stud_id, data)

    async def delete(self, stud_id: int) -> None:
        await self.data.delete(stud_id)
