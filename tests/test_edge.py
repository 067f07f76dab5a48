"""The edge of both balancers, with raw sockets: limits answered before anything is forwarded
(414, 431), timeouts (408, an idle connection closed), a bound on open connections (503), and
405 with ``Allow`` wherever a method is not served. A client's bad request never counts
against a replica: /rep and the balancer's own counters of failed tries, evictions and
replacements are what they were.

Timeouts and limits are configured short here; deadlines derive from them.
"""

from __future__ import annotations

import contextlib
import json
import resource
import select
import socket
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ShardServer, assert_error, balancer_options, seed_init
from dslab.openapi import document_json
from dslab.stack import BalancerProcess, wait_until

EDGE = ["--max-request-line", "1024", "--max-header-bytes", "4096", "--max-headers", "20",
        "--header-timeout", "0.5", "--body-timeout", "0.5", "--idle-timeout", "0.5",
        "--send-timeout", "0.5"]
SHORT = 0.5  # the timeouts above


def answer_of(sock: socket.socket, deadline: float) -> tuple[int | None, dict, bytes]:
    """Read until the server closes (or ``deadline`` passes): status, headers, body."""
    sock.settimeout(max(0.05, deadline - time.monotonic()))
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    if not data:
        return None, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def send(balancer: BalancerProcess, raw: bytes, wait: float = 5.0) -> tuple[int | None, dict, bytes]:
    with socket.create_connection(("127.0.0.1", balancer.port)) as sock:
        sock.sendall(raw)
        return answer_of(sock, time.monotonic() + wait)


def served_again(balancer: BalancerProcess, args: list[str], opened: float) -> None:
    """Wait for a new connection to be served (200) again, once the test has closed one of
    those it held at ``--max-connections``: the place is free when the balancer reads the
    close. Until the soonest the balancer would close a held connection itself (its idle or
    header timeout from ``args``, from ``opened``, before the held ones were opened): served
    after that, the place may have been freed by the timeout and not by the close."""
    options = balancer_options("dslab.balancer", *args)
    deadline = opened + min(options.idle_timeout, options.header_timeout)
    request = b"GET /home HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    def served() -> bool:
        code, _, _ = send(balancer, request, wait=max(0.05, deadline - time.monotonic()))
        return code == 200

    wait_until(served, deadline - time.monotonic(),
               what="a new connection served after a held one was closed")


def error_message(body: bytes) -> str:
    payload = json.loads(body)
    assert set(payload) == {"message", "status"} and payload["status"] == "failure", payload
    assert payload["message"].startswith("<Error> ")
    return payload["message"]


def counters(balancer: BalancerProcess) -> dict[str, float]:
    """What would count against a replica: failed tries, retries, evictions, replacements."""
    text = httpx.get(f"{balancer.url}/metrics", timeout=10).text
    wanted = ("dslab_upstream_failures_total", "dslab_retries_total", "dslab_evictions_total",
              "dslab_replacements_total")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                out[sample.name] = out.get(sample.name, 0) + sample.value
    return out


@pytest.fixture(scope="module", params=["native", "python"])
def lb(request):
    """Both planes: the native one hands what it does not proxy to the Python front end, which
    must refuse it as when it is the only front end."""
    balancer = BalancerProcess(args=["-n", "3", "--hash", "blake2b", "--plane", request.param,
                                     *EDGE]).start()
    try:
        yield balancer
    finally:
        balancer.stop()


@pytest.fixture
def untouched(lb):
    """The replicas and what counts against them, the same after the test as before."""
    before = (httpx.get(f"{lb.url}/rep", timeout=10).json(), counters(lb))
    yield
    assert (httpx.get(f"{lb.url}/rep", timeout=10).json(), counters(lb)) == before


@pytest.mark.parametrize("raw, status, fragment", [
    (b"GET /home?rid=" + b"7" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "over 1024 bytes"),
    (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "over 1024 bytes"),
    (b"GET /home HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n", 431, "over 4096 bytes"),
    (b"GET /home HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % k for k in range(30))
     + b"\r\n", 431, "More than 20 header fields"),
    (b"GET /home HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 20_000 + b"\r\n", 431, "More than 20"),
], ids=["long-query", "100KB-line", "big-header", "many-headers", "20000-headers"])
def test_over_a_limit_is_refused_at_the_edge_and_counts_against_no_replica(
        lb, untouched, raw, status, fragment):
    code, headers, body = send(lb, raw)
    assert code == status and headers.get("connection") == "close"
    assert fragment in error_message(body)


def test_within_the_limits_is_served(lb, untouched):
    code, _, body = send(lb, b"GET /home?rid=" + b"7" * 900 + b" HTTP/1.1\r\nHost: x\r\n"
                         + b"X-Pad: " + b"p" * 3000 + b"\r\nConnection: close\r\n\r\n")
    assert code == 200 and b"Hello from Server" in body


@pytest.mark.parametrize("path", ["/rep", "/openapi.json"])
def test_an_http11_request_with_no_host_to_a_balancer_path_is_400(lb, untouched, path):
    """Tornado refuses it (found by the planes' differential fuzz): a 400, not a 502."""
    code, _, body = send(lb, f"GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    assert code == 400 and "Missing Host header" in error_message(body)


@pytest.mark.parametrize("raw, part", [
    (b"GET /home HTTP/1.1\r\nHost: x\r\n", "headers"),  # headers never finished
    (b"G", "headers"),  # one byte: a request has begun
    (b"POST /add HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"n\"", "body"),
])
def test_a_request_that_stops_half_way_gets_408_in_time(lb, untouched, raw, part):
    started = time.monotonic()
    code, _, body = send(lb, raw, wait=SHORT + 5)
    waited = time.monotonic() - started
    assert code == 408 and f"request's {part} did not arrive within 0.5 s" in error_message(body)
    assert SHORT * 0.9 <= waited < SHORT + 3


def test_a_connection_that_sends_nothing_is_closed_silently(lb, untouched):
    """Idle, not slow: no 408, which a client's pool would read as its next answer."""
    with socket.create_connection(("127.0.0.1", lb.port)) as sock:
        started = time.monotonic()
        sock.settimeout(SHORT + 5)
        assert sock.recv(65536) == b""
        assert SHORT * 0.9 <= time.monotonic() - started < SHORT + 3


def test_an_idle_keep_alive_connection_is_closed(lb):
    with socket.create_connection(("127.0.0.1", lb.port)) as sock:
        sock.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.settimeout(SHORT + 5)
        assert sock.recv(65536) == b""  # closed by the server, with nothing more said
        assert SHORT * 0.9 <= time.monotonic() - started < SHORT + 3


def test_thousands_of_half_sent_requests_are_closed_while_a_client_is_served(lb, untouched):
    """1 500 connections that never finish their headers (slowloris): each is answered 408 and
    closed within the header timeout, and a normal client is served meanwhile."""
    socks = []
    try:
        for _ in range(1500):
            sock = socket.create_connection(("127.0.0.1", lb.port))
            sock.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(sock)
        with httpx.Client(base_url=lb.url, timeout=10) as client:
            assert client.get("/home").status_code == 200
        deadline = time.monotonic() + SHORT + 10
        answers = [answer_of(sock, deadline)[0] for sock in socks]
        assert answers == [408] * len(socks)
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("plane", ["native", "python"])
def test_past_max_connections_a_new_connection_gets_503(plane):
    # The limit is per process (each worker's, as nginx's worker_connections): one worker here.
    args = ["-n", "1", "--workers", "1", "--max-connections", "5", "--idle-timeout", "30",
            "--header-timeout", "30", "--plane", plane]
    balancer = BalancerProcess(args=args).start()
    held = []
    try:
        opened = time.monotonic()
        for _ in range(5):
            held.append(socket.create_connection(("127.0.0.1", balancer.port)))
        code, _, body = send(balancer, b"GET /home HTTP/1.1\r\nHost: x\r\n\r\n")
        assert code == 503 and "Too many connections" in error_message(body)
        for sock in held[:2]:  # room again: served
            sock.close()
        served_again(balancer, args, opened)
    finally:
        for sock in held:
            sock.close()
        balancer.stop()


def test_part2_refuses_at_the_edge_and_its_servers_and_status_stay_as_they_were(start_db):
    db = start_db(*EDGE)
    # A connection per request: a kept-alive one would sit idle past the short idle timeout
    # while the raw requests run, and be closed under the next request.
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=db.url, timeout=60, limits=fresh) as client:
        assert client.post("/init", json=seed_init()).status_code == 200
        before = (client.get("/status").json(), {n: p.pid for n, p in db.replica_processes().items()})
        for raw, status in [
                (b"POST /read HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 50 + b"\r\n", 431),
                (b"POST /read?" + b"q" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
                (b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{", 408)]:
            assert send(db, raw, wait=SHORT + 5)[0] == status
        assert (client.get("/status").json(),
                {n: p.pid for n, p in db.replica_processes().items()}) == before


def test_a_process_under_a_low_open_file_limit_raises_it_to_the_hard_one():
    """Started with its soft limit at 256 (below the hard one), ``raise_fd_limit`` (which every
    service's ``serve`` calls first) lifts it to the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit here is {hard}: nothing to raise")
    code = ("import resource; from dslab.common.runtime import raise_fd_limit; "
            "before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]; raise_fd_limit(); "
            "print(before, *resource.getrlimit(resource.RLIMIT_NOFILE))")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    before, soft, after_hard = map(int, done.stdout.split())
    assert before == 256 and soft == after_hard == hard


# ---- 405 with Allow, on every path of both balancers and the shard server ----------------------
def openapi_paths(name: str) -> dict[str, list[str]]:
    """Each path of a balancer's OpenAPI document with the methods it serves; a templated path
    ({path}: anything proxied) stands for one example."""
    document = json.loads(document_json(name))
    return {path.replace("{path}", "anything"):
            [m.upper() for m in ("get", "post", "put", "delete") if m in methods]
            for path, methods in document["paths"].items()}


PART1 = openapi_paths("balancer")
PART2 = openapi_paths("db")
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def assert_405s(url: str, paths: dict[str, list[str]]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for path, allowed in paths.items():
            for method in METHODS:
                if method in allowed:
                    continue
                response = client.request(method, path, content=b"{}")
                assert_error(response, 405)
                assert response.headers["Allow"] == ", ".join(allowed), (method, path)


def test_every_method_a_part1_path_does_not_serve_is_405_with_allow(lb, untouched):
    assert_405s(lb.url, PART1)


def test_every_method_a_part2_path_does_not_serve_is_405_with_allow(start_db):
    db = start_db()
    with httpx.Client(base_url=db.url, timeout=60) as client:
        assert client.post("/init", json=seed_init()).status_code == 200
    assert_405s(db.url, PART2)  # GET /read was a 502 (a handler built with the wrong arguments)


def test_every_method_a_shard_server_path_does_not_serve_is_405_with_allow(tmp_path):
    shard = {"/config": ["POST"], "/heartbeat": ["GET"], "/copy": ["GET"], "/read": ["POST"],
             "/write": ["POST"], "/insert": ["POST"], "/update": ["PUT"], "/del": ["DELETE"],
             "/erase": ["POST"]}
    with ShardServer(tmp_path) as client:
        assert_405s(str(client.base_url), shard)



# ---- the table (#34), each row on both planes ------------------------------------------
def metric(balancer: BalancerProcess, name: str) -> float:
    text = httpx.get(f"{balancer.url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name)


@contextlib.contextmanager
def soft_open_file_limit(soft: int):
    """This process's soft limit lowered to ``soft`` meanwhile (a child started meanwhile
    inherits it, as from a shell's ``ulimit -n``), then restored."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


IDLE_CONNECTIONS = 2500


@pytest.mark.parametrize("plane", ["native", "python"])
def test_thousands_of_idle_connections_under_a_1024_soft_limit_leave_a_client_served(plane):
    """Started with a soft limit of 1024 (the usual shell's), the balancer raises it: with
    2 500 idle keep-alive connections open, a normal client's 20 requests and /rep are all
    served in time, and no replica is blamed for the balancer's descriptors."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2 * IDLE_CONNECTIONS + 200:
        pytest.skip(f"the hard open-file limit here is {hard}")
    with soft_open_file_limit(1024):
        balancer = BalancerProcess(args=["-n", "3", "--hash", "blake2b", "--plane", plane,
                                         "--idle-timeout", "60"]).start()
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", balancer.port), timeout=10))
        with httpx.Client(base_url=balancer.url, timeout=5,
                          limits=httpx.Limits(max_keepalive_connections=0)) as client:
            statuses = [client.get("/home", params={"rid": str(k)}).status_code
                        for k in range(20)]
            assert statuses == [200] * 20
            assert client.get("/rep").status_code == 200
        # failed tries (per replica: none counted, none listed), retries, evictions, ...
        assert not any(counters(balancer).values())
        if plane == "native":  # served by the plane itself, not handed over
            assert metric(balancer, "dslab_plane_answers_total") == 20
            assert metric(balancer, "dslab_plane_descriptors_exhausted_total") == 0
    finally:
        for sock in idle:
            sock.close()
        balancer.stop()


def test_a_client_that_pipelines_and_never_reads_is_read_no_further_then_dropped(lb, untouched):
    """GETs pipelined without end, no answer read: the balancer stops reading them (the
    client's sending blocks), and drops the connection within the send timeout."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers back up soon
        sock.connect(("127.0.0.1", lb.port))
        sock.setblocking(False)
        batch = b"GET /home?rid=7 HTTP/1.1\r\nHost: x\r\n\r\n" * 500
        poller = select.poll()
        poller.register(sock, select.POLLOUT | select.POLLERR | select.POLLHUP)
        sent, dropped = 0, False
        deadline = time.monotonic() + 30 + SHORT  # answers fill the buffers first: seconds
        while time.monotonic() < deadline:
            try:
                sent += sock.send(batch)
            except BlockingIOError:
                events = poller.poll(100)
                if any(e & (select.POLLERR | select.POLLHUP) for _, e in events):
                    dropped = True
                    break
            except (ConnectionResetError, BrokenPipeError):
                dropped = True
                break
        assert dropped, f"still open after {sent} bytes"
        # The kernel's buffers on both sides hold some MB; an unbounded reader takes more.
        assert sent < 64 << 20


@pytest.mark.parametrize("raw, fragment", [
    (b"GET /home HTTP/1.1\r\nX-Request-ID: 1\r\n\r\n", "Missing Host header"),
    (b"GET /home HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "Multiple Host headers"),
    (b"GET /home HTTP/1.0\r\nHost: x\r\nhost: x\r\n\r\n", "Multiple Host headers"),
    (b"GET /home HTTP/1.1\nHost: x\n\n", "Malformed HTTP request"),  # bare LF
], ids=["no-host", "two-hosts", "two-hosts-1.0", "bare-lf"])
def test_no_host_two_hosts_or_bare_lf_is_400(lb, untouched, raw, fragment):
    """RFC 9112 §3.2 (Host) and llhttp's framing, on the proxied path of both planes."""
    code, headers, body = send(lb, raw)
    assert code == 400 and headers.get("connection") == "close"
    assert fragment in error_message(body)


@pytest.mark.parametrize("raw", [
    b"GET /home HTTP/1.0\r\nX-Request-ID: 3\r\n\r\n",
    b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 3\r\nConnection: close\r\n\r\n",
], ids=["http10", "connection-close"])
def test_a_request_that_asks_to_close_is_answered_and_closed(lb, untouched, raw):
    with socket.create_connection(("127.0.0.1", lb.port)) as sock:
        sock.sendall(raw)
        sock.settimeout(5)
        data = b""
        while chunk := sock.recv(65536):  # a timeout (not closed) raises
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in data


def test_connections_handed_over_count_under_max_connections_until_closed():
    """The native plane's count is the one count: connections it handed to the Python front
    end (here: kept-alive /rep clients) hold their places until that front end closes them."""
    args = ["-n", "1", "--workers", "2", "--max-connections", "3", "--idle-timeout", "30",
            "--plane", "native"]
    balancer = BalancerProcess(args=args).start()
    held = []
    try:
        opened = time.monotonic()
        for _ in range(3):  # each handed over on its first request, and kept open there
            sock = socket.create_connection(("127.0.0.1", balancer.port), timeout=10)
            sock.sendall(b"GET /rep HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            held.append(sock)
        code, _, body = send(balancer, b"GET /home HTTP/1.1\r\nHost: x\r\n\r\n")
        assert code == 503 and "Too many connections" in error_message(body)
        held.pop().close()  # the front end closes its side: the place is free again
        served_again(balancer, args, opened)
    finally:
        for sock in held:
            sock.close()
        balancer.stop()
