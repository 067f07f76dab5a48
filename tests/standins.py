"""Stand-ins at the two boundaries whose orders tests must step: a supervisor whose replicas
start, fail and die when the test says, and shard servers that answer from rows in memory.

They stand in only where a test needs to choose what happens when (test_keeper,
test_group_commit); the real processes, containers and shard servers run everywhere else.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import pymongo

from dslab.contract.studdb import InitRequest
from dslab.db.cluster import ShardCluster
from dslab.db.fanout import ServerRefused
from dslab.db.metadata import Metadata
from dslab.db.seed import row, seed_init
from dslab.keeper.upstream import UpstreamClosed, UpstreamConnectError
from dslab.supervisor import Replica, ReplicaSpec, ReplicaSupervisor, SpawnError, UnknownReplica

__all__ = ["Clock", "Part2", "SteppedShardServers", "SteppedSupervisor"]

Step = Callable[[str], Awaitable[None]]


class SteppedSupervisor(ReplicaSupervisor):
    """A stand-in backend: replicas are names; the test kills them, fails their start, or
    holds a start at a gate. Data outlives a replica until ``discard_data``, as a volume does."""

    def __init__(self) -> None:
        super().__init__(ReplicaSpec(module="none"))
        self.running: dict[str, Replica] = {}
        self.killed: set[str] = set()
        self.spawned: list[str] = []
        self.discarded: list[str] = []
        self.data: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
        self.fail_spawns = 0  # the next n spawns fail
        self.nodes: dict[str, str] = {}  # replica -> the node it runs on, if the test says
        self.avoided: dict[str, set[str]] = {}  # replica -> the nodes its spawn was to avoid
        self.before_spawn: Step | None = None
        self._ports = itertools.count(1)  # never dialled: the stand-in servers answer calls

    async def spawn(self, name: str, *, avoid: Collection[str] = ()) -> Replica:
        self.spawned.append(name)
        self.avoided[name] = set(avoid)
        if self.before_spawn is not None:
            await self.before_spawn(name)
        if self.fail_spawns:
            self.fail_spawns -= 1
            raise SpawnError(f"{name} could not start")
        self.killed.discard(name)
        self.running[name] = Replica(name, "127.0.0.1", next(self._ports),
                                     node=self.nodes.get(name))
        self.data.setdefault(name, {})
        return self.running[name]

    async def remove(self, name: str) -> None:
        if self.running.pop(name, None) is None:
            raise UnknownReplica(name)
        self.killed.discard(name)

    def replicas(self) -> list[Replica]:
        return list(self.running.values())

    def alive(self, name: str) -> bool:
        return name in self.running and name not in self.killed

    async def discard_data(self, name: str) -> None:
        self.discarded.append(name)
        self.data.pop(name, None)

    def kill(self, name: str) -> None:
        self.killed.add(name)


class SteppedShardServers:
    """The shard servers' answers, from ``supervisor.data``: what the real ones answer to the
    calls the balancer makes. ``before`` runs ahead of each call, for the test to step."""

    def __init__(self, supervisor: SteppedSupervisor) -> None:
        self.supervisor = supervisor
        self.before: Callable[[str, str, dict[str, Any]], Awaitable[None]] | None = None
        self.refuse: set[tuple[str, str]] = set()  # (server, path) answered with a 500
        self.unanswered: set[tuple[str, str]] = set()  # (server, path) applied, answer lost

    async def call(self, name: str, method: str, path: str,
                   payload: dict[str, Any]) -> dict[str, Any]:
        if self.before is not None:
            await self.before(name, path, payload)
        if not self.supervisor.alive(name):
            raise UpstreamConnectError(f"{name} refused the connection")
        if (name, path) in self.refuse:
            raise ServerRefused(name, 500, "<Error> stepped failure")
        if (name, path) in self.unanswered:
            self.unanswered.discard((name, path))
            self.before, before = None, self.before
            await self.call(name, method, path, payload)  # applied ...
            self.before = before
            raise UpstreamClosed(f"{name} closed the connection")  # ... but never answered
        return self.answer(name, method, path, payload)

    def answer(self, name: str, method: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """What the real shard server answers a valid call (``test_standins`` sends the same
        calls to both and compares), from the rows in ``supervisor.data``."""
        held = self.supervisor.data[name]
        if path == "/config":
            for shard in payload["shards"]:
                held.setdefault(shard, {})
            configured = ", ".join(f"{name}:{shard}" for shard in payload["shards"])
            return {"message": f"{configured} configured", "status": "success"}
        if path == "/copy":
            return {**{s: [held[s][k] for k in sorted(held[s])] for s in payload["shards"]},
                    "status": "success"}
        rows = held[payload["shard"]]
        if path == "/write":  # an id held already is overwritten (a retried write)
            rows.update({r["Stud_id"]: r for r in payload["data"]})
            return {"message": "Data entries added",
                    "current_idx": payload["curr_idx"] + len(payload["data"]), "status": "success"}
        if path == "/insert":  # new rows only; the others are named
            existing = sorted(r["Stud_id"] for r in payload["data"] if r["Stud_id"] in rows)
            rows.update({r["Stud_id"]: r for r in payload["data"] if r["Stud_id"] not in rows})
            return {"message": "Data entries added", "existing": existing,
                    "current_idx": payload["curr_idx"] + len(payload["data"]) - len(existing),
                    "status": "success"}
        if path == "/erase":
            for stud_id in payload["Stud_ids"]:
                rows.pop(stud_id, None)
            return {"message": f"{len(payload['Stud_ids'])} Stud_ids erased", "status": "success"}
        if path == "/read":
            low, high = payload["Stud_id"]["low"], payload["Stud_id"]["high"]
            return {"data": [rows[k] for k in sorted(rows) if low <= k <= high],
                    "status": "success"}
        stud_id = payload["Stud_id"]
        if stud_id not in rows:
            raise ServerRefused(name, 404, f"<Error> No data entry with Stud_id:{stud_id}")
        if path == "/update":
            rows[stud_id] = payload["data"]
            return {"message": f"Data entry for Stud_id:{stud_id} updated", "status": "success"}
        if path == "/del":
            del rows[stud_id]
            return {"message": f"Data entry with Stud_id:{stud_id} removed", "status": "success"}
        raise AssertionError(f"unexpected call {method} {path}")


class Clock:
    """The keeper's clock, moved by the test past a backoff."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


_databases = itertools.count()


class Part2:
    """A shard cluster on stand-in servers: shard a on S1, S2, S3 and shard b on S4, S5."""

    def __init__(self, uri: str) -> None:
        self.sup = SteppedSupervisor()
        self.servers = SteppedShardServers(self.sup)
        self.client: pymongo.AsyncMongoClient[Any] = pymongo.AsyncMongoClient(uri)
        self.meta_db = self.client[f"keeper{next(_databases)}"]
        self.clock = Clock()
        self.cluster = ShardCluster(self.sup, Metadata(self.meta_db), rng=random.Random(3),
                                    call_server=self.servers.call, clock=self.clock)

    async def __aenter__(self) -> Part2:
        await self.cluster.start(heartbeats=False)
        await self.cluster.init(InitRequest.model_validate(seed_init(
            N=5, shards=[{"Stud_id_low": 0, "Shard_id": "a", "Shard_size": 100},
                         {"Stud_id_low": 100, "Shard_id": "b", "Shard_size": 100}],
            servers={"S1": ["a"], "S2": ["a"], "S3": ["a"], "S4": ["b"], "S5": ["b"]})))
        await self.cluster.write([row(i) for i in (1, 2, 3, 101, 102)])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cluster.close()
        await self.client.close()

    def holders(self, shard: str) -> list[str]:
        return sorted(n for n, s in self.cluster.status()["servers"].items() if shard in s)

    def rows(self, name: str, shard: str) -> list[int]:
        return sorted(self.sup.data[name][shard])

    async def saved_servers(self) -> list[str]:
        return sorted([d["Server_id"] async for d in self.meta_db.ServerT.find()])


