"""The process backend and the pooled upstream client, driven in-process against real replicas."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
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
    UpstreamProtocolError,
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
        async def spawn(self, name, *, avoid=()):
            if name == "Bad1":
                raise SpawnError("Bad1 cannot start")
            return await super().spawn(name, avoid=avoid)

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


@contextlib.contextmanager
def unanswered_port():
    """A port whose connects hang, as a gone node's do: a listener that never accepts, its
    accept queue filled, so the kernel drops every further SYN."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            yield port
        finally:
            for filler in fillers:
                filler.close()


def test_closing_a_pool_fails_a_connect_that_hangs_at_once():
    """An evicted replica's requests fail now even while their connect hangs, instead of
    holding a shard's write (and its lock) for the whole request timeout."""
    async def scenario():
        with unanswered_port() as port:
            short = UpstreamPool("127.0.0.1", port, timeout=0.3)
            with pytest.raises(UpstreamConnectError):  # the connect does hang
                await short.fetch(format_get("/home", "H1", "1"))
            pool = UpstreamPool("127.0.0.1", port, timeout=30)
            pending = asyncio.ensure_future(pool.fetch(format_get("/home", "H1", "1")))
            await asyncio.sleep(0.2)
            assert not pending.done()
            pool.close()
            with pytest.raises(UpstreamClosed):
                await asyncio.wait_for(pending, 2)
            caller = asyncio.ensure_future(UpstreamPool("127.0.0.1", port, timeout=30).fetch(
                format_get("/home", "H1", "1")))
            await asyncio.sleep(0.2)
            caller.cancel()  # the caller's own cancel stays a cancel
            with pytest.raises(asyncio.CancelledError):
                await caller

    run(scenario())


def sent(pool: UpstreamPool, raw: bytes) -> asyncio.Future | None:
    """``pool.send``'s callback as a future; None when it sent nothing."""
    future = asyncio.get_running_loop().create_future()

    def ended(response, error):
        assert not future.done(), "called back twice"
        future.set_result((response, error))
    return future if pool.send(raw, ended) else None


def test_send_answers_by_callback_on_an_idle_connection_only():
    """The proxy's hot path: no idle connection (or exact timers) sends nothing and leaves it
    to ``fetch``; an idle one is used, and kept for the next request."""
    async def scenario():
        async with ProcessSupervisor(REPLICA) as sup:
            replica = await sup.spawn("C1")
            exact = UpstreamPool(replica.host, replica.port, timeout=5)
            await exact.fetch(format_get("/home", "C1", "1"))
            assert sent(exact, format_get("/home", "C1", "1")) is None

            pool = UpstreamPool(replica.host, replica.port, timeout=5, coarse_timeout=True)
            assert sent(pool, format_get("/home", "C1", "1")) is None  # nothing to send on
            await pool.fetch(format_get("/home", "C1", "1"))
            for _ in range(5):
                response, error = await sent(pool, format_get("/home", "C1", "1"))
                assert error is None and response.status == 200 and b"C1" in response.body
            assert len(pool._idle) == 1

    run(scenario())


def test_send_retries_a_keep_alive_connection_the_server_closed_as_it_was_used():
    """A server may close an idle keep-alive connection just as a request goes out on it
    (Tornado does at its idle timeout). This stand-in server, a real TCP peer, does it every
    time on a connection's second request: the answer must come through a new connection,
    with no error."""
    async def scenario():
        answered = 0

        async def serve(reader, writer):
            nonlocal answered
            served_here = 0
            while await reader.readuntil(b"\r\n\r\n"):
                if served_here == 1:
                    writer.close()  # the race: closed with the request unanswered
                    return
                served_here += 1
                answered += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            pool = UpstreamPool("127.0.0.1", port, timeout=5, coarse_timeout=True)
            await pool.fetch(format_get("/home", "s", "1"))
            response, error = await sent(pool, format_get("/home", "s", "1"))
            assert error is None and response.body == b"ok" and answered == 2
        finally:
            server.close()

    run(scenario())


def test_an_interim_answer_is_skipped_and_a_101_is_a_protocol_error():
    """As the native plane reads a replica: a 1xx answer is not the answer (the final one
    follows it), and a 101 is the replica's failure (nothing here asks to switch protocols).
    A stand-in server, a real TCP peer, sends what no replica here sends."""
    async def scenario():
        async def serve(reader, writer):
            try:
                while head := await reader.readuntil(b"\r\n\r\n"):
                    if head.startswith(b"GET /switch "):
                        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                                     b"Connection: upgrade\r\n\r\n")
                    else:
                        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                                     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n"
                                     b"hi")
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the client closed the connection
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            pool = UpstreamPool("127.0.0.1", port, timeout=10)
            response = await pool.fetch(format_get("/interim", "s", "1"))
            assert (response.status, response.body) == (200, b"hi")
            assert response.headers == [(b"Content-Length", b"2"), (b"X-A", b"1")]
            with pytest.raises(UpstreamProtocolError, match="101 to a request with no Upgrade"):
                await pool.fetch(format_get("/switch", "s", "1"))
            pool.close()
        finally:
            server.close()

    run(scenario())


def test_a_forwarded_get_says_who_asked_and_how_and_a_heartbeat_does_not():
    assert format_get("/home?x=1", "Server1", "42", "10.0.0.7") == (
        b"GET /home?x=1 HTTP/1.1\r\nHost: Server1\r\nX-Request-ID: 42\r\n"
        b"X-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n\r\n")
    assert format_get("/home", "S", "1", "") == (
        b"GET /home HTTP/1.1\r\nHost: S\r\nX-Request-ID: 1\r\nX-Forwarded-Proto: http\r\n\r\n")
    assert format_get("/heartbeat", "S", "0") == (
        b"GET /heartbeat HTTP/1.1\r\nHost: S\r\nX-Request-ID: 0\r\n\r\n")


def test_send_times_out_and_fails_at_once_when_the_pool_closes():
    async def scenario():
        async with ProcessSupervisor(REPLICA) as sup:
            replica = await sup.spawn("D1")
            timeout = 0.4
            pool = UpstreamPool(replica.host, replica.port, timeout=timeout, coarse_timeout=True)
            await pool.fetch(format_get("/home", "D1", "1"))
            os.kill(sup.pid("D1"), signal.SIGSTOP)
            loop = asyncio.get_running_loop()
            started = loop.time()
            response, error = await sent(pool, format_get("/home", "D1", "1"))
            waited = loop.time() - started
            assert response is None and isinstance(error, UpstreamTimeout)
            assert timeout * 0.95 < waited < timeout * 1.25 + 0.2, waited  # swept: a quarter late
            assert not pool._idle  # a half-read exchange is not reused

            os.kill(sup.pid("D1"), signal.SIGCONT)
            await pool.fetch(format_get("/home", "D1", "1"))
            os.kill(sup.pid("D1"), signal.SIGSTOP)
            pending = sent(pool, format_get("/home", "D1", "1"))
            pool.close()
            response, error = await asyncio.wait_for(pending, timeout / 2)  # at once, not timed out
            assert response is None and isinstance(error, UpstreamClosed)
            os.kill(sup.pid("D1"), signal.SIGCONT)

    run(scenario())


def test_an_answer_read_like_the_last_one_is_taken_whole_and_anything_else_is_parsed():
    """A connection reuses what it parsed off a head it saw before, only for a read that is
    that head and a body of the same length: the body is the new one. Another length, a
    split read, a chunked answer or a 1xx before it is parsed as usual. A stand-in server, a
    real TCP peer, answers each request with the next of these reads."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Kind: a\r\nContent-Length: 5\r\n\r\n"
    reads = [
        [head + b"first"],
        [head + b"again"],                                   # same head, same size: reused
        [head.replace(b"5", b"6") + b"longer"],              # another length: parsed
        [head[:20], head[20:] + b"split"],                   # a head over two reads
        [b"HTTP/1.1 200 OK\r\nX-Kind: a\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nchunk\r\n0\r\n\r\n"],
        [b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + head + b"after"],
        [head + b"last!"],
    ]
    bodies = [b"first", b"again", b"longer", b"split", b"chunk", b"after", b"last!"]

    async def scenario():
        async def serve(reader, writer):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                for parts in reads:
                    await reader.readuntil(b"\r\n\r\n")
                    for part in parts:
                        writer.write(part)
                        await writer.drain()
                        await asyncio.sleep(0.02)  # each part its own read
                await reader.read()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            pool = UpstreamPool("127.0.0.1", port, timeout=5, coarse_timeout=True)
            got = []
            for _ in reads:
                response = await pool.fetch(format_get("/home", "s", "1"))
                got.append(response)
            assert [r.body for r in got] == bodies
            assert all(r.status == 200 for r in got)
            assert [dict(r.headers).get(b"X-Kind") for r in got] == [b"a"] * len(got)
            # Taken whole (no parse), from what the first one's parse kept: the head known.
            assert [bool(r.head) for r in got] == [False, True, False, False, False, False,
                                                   True]
            assert got[6].head is got[1].head
            assert len(pool._idle) == 1  # one connection throughout
        finally:
            server.close()

    run(scenario())
