"""The process backend and the pooled upstream client, driven in-process against real replicas."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys

import psutil
import pytest

from conftest import assert_all_gone, free_port
from dslab.balancer.membership import ReplicaSet
from dslab.common.errors import Unavailable
from dslab.keeper.upstream import (
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamTimeout,
    format_get,
)
from dslab.ring import ConsistentHashRing
from dslab.supervisor import ProcessSupervisor, ReplicaSpec, SpawnError, UnknownReplica

REPLICA = ReplicaSpec(module="dslab.replica")


def run(coro):
    return asyncio.run(coro)


def test_spawn_list_alive_remove():
    async def scenario():
        async with ProcessSupervisor(REPLICA) as sup:
            a, b = await asyncio.gather(sup.spawn("A1"), sup.spawn("B2"))
            assert [r.name for r in sup.replicas()] == ["A1", "B2"] or \
                   [r.name for r in sup.replicas()] == ["B2", "A1"]
            proc = psutil.Process(sup.pid("A1"))
            assert proc.environ()["SERVER_ID"] == "A1" and proc.environ()["HOSTNAME"] == "A1"
            assert sup.alive("A1") and a.port != b.port
            await sup.remove("A1")
            assert not sup.alive("A1") and [r.name for r in sup.replicas()] == ["B2"]
            assert_all_gone([proc], timeout=1)
            with pytest.raises(UnknownReplica):
                await sup.remove("A1")
            with pytest.raises(SpawnError, match="already runs"):
                await sup.spawn("B2")
            return psutil.Process(sup.pid("B2"))

    last = run(scenario())
    assert_all_gone([last])  # close() on leaving the context removed B2


def test_alive_turns_false_when_the_process_dies():
    async def scenario():
        async with ProcessSupervisor(REPLICA) as sup:
            await sup.spawn("V1")
            os.kill(sup.pid("V1"), signal.SIGKILL)
            for _ in range(200):
                if not sup.alive("V1"):
                    return True
                await asyncio.sleep(0.01)
            return False

    assert run(scenario())


def test_a_replica_that_cannot_start_is_a_spawn_error():
    async def scenario():
        async with ProcessSupervisor(ReplicaSpec(module="dslab.no_such_module")) as sup:
            # Which replica, and why: its exit code (Python's 1 for a missing module).
            with pytest.raises(SpawnError, match=r"'X1' exited before listening \(exit code 1\)"):
                await sup.spawn("X1")
            assert sup.replicas() == []

    run(scenario())


def test_failed_add_starts_nothing_and_changes_nothing():
    """One replica of a batch fails to start: the others are stopped, the ring is untouched."""

    class FailOnName(ProcessSupervisor):
        async def spawn(self, name):
            if name == "Bad1":
                raise SpawnError("Bad1 cannot start")
            return await super().spawn(name)

    async def scenario():
        sup = FailOnName(REPLICA)
        rs = ReplicaSet(sup, ConsistentHashRing(hashes="blake2b"), rng=random.Random(1))
        await rs.start(["Server1"])
        try:
            with pytest.raises(Unavailable, match="Bad1 cannot start"):
                await rs.add(3, ["Good1", "Bad1", "Good2"])
            assert rs.names() == ["Server1"] and rs.ring.servers == ["Server1"]
            assert [r.name for r in sup.replicas()] == ["Server1"]
            assert rs.target == 1
        finally:
            await rs.close()

    run(scenario())


def test_pool_reuses_keep_alive_connections_and_survives_a_replica_restart():
    async def scenario():
        async with ProcessSupervisor(REPLICA) as sup:
            replica = await sup.spawn("K1")
            pool = UpstreamPool(replica.host, replica.port, timeout=5)
            for _ in range(20):
                response = await pool.fetch(format_get("/home", "K1", "1"))
                assert response.status == 200 and b"Hello from Server: K1" in response.body
            assert len(pool._idle) == 1  # twenty sequential requests, one connection

            missing = await pool.fetch(format_get("/nope", "K1", "1"))
            assert missing.status == 404 and missing.content_type.startswith(b"application/json")

            # The replica restarts on the same port: the pooled connection is stale.
            port = replica.port
            await sup.remove("K1")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dslab.replica", "--host", "127.0.0.1", "--port", str(port),
                env={**os.environ, "SERVER_ID": "K1b"})
            try:
                for _ in range(100):
                    try:
                        response = await pool.fetch(format_get("/home", "K1", "1"))
                        break
                    except UpstreamConnectError:
                        await asyncio.sleep(0.05)  # the new process is not listening yet
                assert b"K1b" in response.body
            finally:
                proc.terminate()
                await proc.wait()
            pool.close()
            with pytest.raises(UpstreamClosed):
                await pool.fetch(format_get("/home", "K1", "1"))

    run(scenario())


@pytest.mark.parametrize("coarse", [False, True])
def test_pool_errors_connect_refused_and_timeout(coarse):
    """A coarse timeout (the hot path's: swept, no timer per request) fires at most a
    quarter of the timeout late; the exact one (heartbeats') on time."""
    async def scenario():
        refused = UpstreamPool("127.0.0.1", free_port(), timeout=2, coarse_timeout=coarse)
        with pytest.raises(UpstreamConnectError):
            await refused.fetch(format_get("/home", "x", "1"))

        async with ProcessSupervisor(REPLICA) as sup:
            replica = await sup.spawn("T1")
            os.kill(sup.pid("T1"), signal.SIGSTOP)
            timeout = 0.4
            slow = UpstreamPool(replica.host, replica.port, timeout=timeout,
                                coarse_timeout=coarse)
            loop = asyncio.get_running_loop()
            for _ in range(3):  # the sweep goes on between requests
                started = loop.time()
                with pytest.raises(UpstreamTimeout):
                    await slow.fetch(format_get("/home", "T1", "1"))
                waited = loop.time() - started
                late = timeout / 4 if coarse else 0
                assert timeout * 0.95 < waited < timeout + late + 0.2, waited
            os.kill(sup.pid("T1"), signal.SIGCONT)

    run(scenario())


def test_closing_a_pool_fails_requests_in_flight_at_once():
    async def scenario():
        async with ProcessSupervisor(REPLICA) as sup:
            replica = await sup.spawn("F1")
            os.kill(sup.pid("F1"), signal.SIGSTOP)
            pool = UpstreamPool(replica.host, replica.port, timeout=30)
            pending = asyncio.ensure_future(pool.fetch(format_get("/home", "F1", "1")))
            await asyncio.sleep(0.2)
            pool.close()
            with pytest.raises(UpstreamClosed):
                await asyncio.wait_for(pending, 2)
            os.kill(sup.pid("F1"), signal.SIGCONT)

    run(scenario())
