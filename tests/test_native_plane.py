"""The native data plane (``--plane native``, ``services/native``): it routes as the Python
ring does, answers byte for byte as the Python plane answers, hands over what it does not
proxy, sees every admin change before it is answered, and counts what it serves.

Its pure parts (request ids, hashing, walks) are held to ``dslab.ring`` on generated input;
the rest runs real balancers with real replicas.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from itertools import islice

import httpx
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from dslab.balancer import native
from dslab.balancer.proxy import request_id_from
from dslab.ring import HASH_PAIRS, ConsistentHashRing, make_ring, request_number
from dslab.stack import BalancerProcess

# Where cargo is, `make venv` builds the plane: missing then is a failure, not a skip.
pytestmark = pytest.mark.skipif(not native.available() and shutil.which("cargo") is None,
                                reason="no Rust toolchain here: the native plane is not built")

ARGS = ["-n", "3", "--hash", "blake2b"]


# ---- pure: the plane computes what dslab.ring computes --------------------------------------
ids = st.one_of(st.integers(0, 10**19).map(lambda n: str(n).encode()),
                st.binary(min_size=1, max_size=40))


@settings(max_examples=400, deadline=None)
@given(hash_name=st.sampled_from(sorted(HASH_PAIRS)), request_id=ids,
       slots=st.integers(1, 5000))
def test_a_request_id_hashes_to_the_slot_the_python_ring_computes(hash_name, request_id, slots):
    import dslab_dataplane

    expected = HASH_PAIRS[hash_name].request(request_number(request_id.decode("latin-1"))) % slots
    assert dslab_dataplane.route_slot(hash_name, request_id, slots) == expected


class _Drawn(random.Random):
    def randint(self, a: int, b: int) -> int:
        return -1  # marks "drawn at random" in the Python proxy's answer


query = st.lists(st.sampled_from(["rid=", "rid=7", "rid=abc", "x=1", "rid", "=", "rid=9&rid=8"]),
                 max_size=4).map("&".join)


@settings(max_examples=300, deadline=None)
@given(header=st.one_of(st.none(), st.binary(max_size=12)), path=st.sampled_from(["/home", "/"]),
       query=query, question=st.booleans())
def test_the_request_id_is_read_as_the_python_proxy_reads_it(header, path, query, question):
    import dslab_dataplane

    uri = f"{path}?{query}" if question else path
    python = request_id_from(header, uri, _Drawn())
    found = dslab_dataplane.request_id(header, uri.encode("latin-1"))
    assert (found.decode("latin-1") if found is not None else "-1") == python


def test_each_slots_walk_is_the_rings_owner_then_the_next_distinct_replicas():
    ring = make_ring("ring", "blake2b")
    for name in ["Server1", "Server2", "Server3", "S4", "web-a"]:
        ring.add(name)
    assert isinstance(ring, ConsistentHashRing)
    table, names = native.walks(ring)
    rng = random.Random(5)
    for rid in [rng.randrange(10**6) for _ in range(500)]:
        walk = [names[i] for i in table[ring.slot_of(rid)]]
        assert walk[0] == ring.lookup(rid)
        assert walk == list(islice(ring.walk(rid), 3))


@pytest.mark.parametrize("options", [["--algorithm", "maglev"], ["--balance-factor", "1.5"]])
def test_options_the_plane_cannot_honour_are_refused_when_it_is_asked_for(options):
    done = subprocess.run([sys.executable, "-m", "dslab.balancer", "--plane", "native", *options],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "the native plane" in done.stderr


def test_auto_runs_the_python_plane_where_the_native_one_cannot_serve(start_balancer):
    balancer = start_balancer("-n", "1", "--algorithm", "maglev", "--workers", "2")
    assert len(balancer.worker_processes()) == 2  # the Python plane's worker processes


# ---- live: byte for byte as the Python plane ------------------------------------------------
EXCHANGES = [
    b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 123456\r\nConnection: close\r\n\r\n",
    b"GET /home?a=1&rid=77 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: not-a-number-\xe9\r\nConnection: close\r\n\r\n",
    b"GET /nope HTTP/1.1\r\nHost: x\r\nX-Request-ID: 5\r\nConnection: close\r\n\r\n",
    b'GET /a"b\\c?d HTTP/1.1\r\nHost: x\r\nX-Request-ID: 5\r\nConnection: close\r\n\r\n',
    b"GET /home HTTP/1.0\r\nHost: x\r\nX-Request-ID: 9\r\n\r\n",
    b"GET /home HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nX-Request-ID: 9\r\n\r\n"
    b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 10\r\nConnection: close\r\n\r\n",
    # pipelined, with requests the native plane hands over between its own
    b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 1\r\n\r\nGET /rep HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 2\r\nConnection: close\r\n\r\n",
    b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 3\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 4\r\nConnection: keep-alive, close\r\n\r\n",
    b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 4\r\nConnection: close\r\nConnection: close\r\n\r\n",
    b"POST /home HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"GET /metrics?x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    # RFC 9112 §3.2: no Host in HTTP/1.1, or two in any version, is 400; HTTP/1.0 needs none
    b"GET /home HTTP/1.1\r\nX-Request-ID: 5\r\n\r\n",
    b"GET /home HTTP/1.1\r\nHost: x\r\nHost: y\r\nX-Request-ID: 5\r\n\r\n",
    b"GET /home HTTP/1.0\r\nHost: x\r\nhost: x\r\nX-Request-ID: 5\r\n\r\n",
    b"GET /home HTTP/1.0\r\nX-Request-ID: 5\r\n\r\n",
    # bare LF: llhttp's verdict (400) on both planes
    b"GET /home HTTP/1.1\nHost: x\nX-Request-ID: 5\n\n",
    b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 5\n\r\n",
    # a refused request pipelined after proxied ones: their answers first, in order
    b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 1\r\n\r\n"
    b"GET /home HTTP/1.1\r\nX-Request-ID: 2\r\n\r\n",
]


def same_clock(data: bytes) -> bytes:
    """``data`` with every Date field's value blanked: a replica's answer passes its Date on,
    and the two planes' replicas may answer a second apart."""
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", data)


def exchange(port: int, raw: bytes) -> bytes:
    """Everything the balancer sends back until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_every_answer_is_the_python_planes_byte_for_byte(start_balancer):
    native_lb = start_balancer(*ARGS, "--plane", "native", "--workers", "2")
    python_lb = start_balancer(*ARGS, "--plane", "python", "--workers", "1")
    for raw in EXCHANGES:
        ours = same_clock(exchange(native_lb.port, raw))
        theirs = same_clock(exchange(python_lb.port, raw))
        if raw.startswith(b"GET /metrics"):  # the counts differ; the framing must not
            ours, theirs = ours.partition(b"\r\n\r\n")[0], theirs.partition(b"\r\n\r\n")[0]
            ours = b"\r\n".join(h for h in ours.split(b"\r\n") if b"Content-Length" not in h)
            theirs = b"\r\n".join(h for h in theirs.split(b"\r\n") if b"Content-Length" not in h)
        assert ours == theirs, raw
        assert ours.startswith(b"HTTP/1.1 "), raw


def first_answer(port: int, raw: bytes) -> bytes:
    """The first answer to ``raw``, head and body (framed by its Content-Length): whether the
    connection stays open after it is the answer's own Connection header's to say."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length and (chunk := sock.recv(65536)):
            body += chunk
        return head + b"\r\n\r\n" + body[:length]


# ---- live: routing, admin changes, counts ---------------------------------------------------
def burst(balancer: BalancerProcess, rids: list[str]) -> list[str]:
    """One GET /home per id, each on a connection of its own, all open at once (the kernel
    spreads them over the plane's threads): the replicas that answered, in order."""
    socks = [socket.create_connection(("127.0.0.1", balancer.port), timeout=20) for _ in rids]
    try:
        for sock, rid in zip(socks, rids):
            sock.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: %s\r\n"
                         b"Connection: close\r\n\r\n" % rid.encode())
        served = []
        for sock in socks:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            assert head[0] == "HTTP/1.1 200 OK", head
            served.append(next(h.split(": ", 1)[1] for h in head if h.startswith("X-Served-By")))
        return served
    finally:
        for sock in socks:
            sock.close()


def ring_of(names: list[str]) -> ConsistentHashRing:
    ring = make_ring("ring", "blake2b")
    for name in names:
        ring.add(name)
    assert isinstance(ring, ConsistentHashRing)
    return ring


def test_every_add_and_rm_is_on_the_planes_ring_before_it_is_answered(start_balancer):
    balancer = start_balancer("-n", "1", "--hash", "blake2b", "--plane", "native",
                              "--workers", "2")
    names, rng = ["Server1"], random.Random(11)
    with httpx.Client(base_url=balancer.url, timeout=30) as client:
        for step in range(6):
            if step % 3 == 2:
                gone = names[-2]
                answer = client.request("DELETE", "/rm", json={"n": 1, "hostnames": [gone]})
                names.remove(gone)
            else:
                answer = client.post("/add", json={"n": 1, "hostnames": [f"New{step}"]})
                names.append(f"New{step}")
            assert answer.status_code == 200, answer.text
            # digits, ids past 18 digits, and text: each hashed as the Python ring hashes it
            rids = [str(rng.randrange(10**6)) for _ in range(40)] + [
                str(rng.randrange(10**19, 10**20)) for _ in range(10)] + [
                f"req-{rng.randrange(10**6)}" for _ in range(10)]
            ring = ring_of(names)
            assert burst(balancer, rids) == [ring.lookup(request_number(r)) for r in rids]


def metric(balancer: BalancerProcess, name: str) -> float:
    """One sample's value, summed over its labels (0 when absent)."""
    text = httpx.get(f"{balancer.url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name)


def counted(balancer: BalancerProcess) -> tuple[Counter, float, float]:
    text = httpx.get(f"{balancer.url}/metrics", timeout=10).text
    per_replica: Counter = Counter()
    timed = failures = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dslab_requests_total":
                per_replica[sample.labels["replica"]] += int(sample.value)
            elif sample.name == "dslab_request_duration_seconds_count":
                timed += sample.value
            elif sample.name == "dslab_upstream_failures_total":
                failures += sample.value
    return per_replica, timed, failures


def served_by_the_plane(balancer: BalancerProcess, requests: int, scrapes: int) -> None:
    """The plane answered ``requests`` plain GETs itself and handed over nothing but the
    ``scrapes`` /metrics requests (this one's included): a plane that handed everything to
    the Python front end would be counted here, and fail."""
    answers = metric(balancer, "dslab_plane_answers_total")
    handovers = metric(balancer, "dslab_plane_handovers_total")
    assert (answers, handovers) == (requests, scrapes)


def test_metrics_count_what_every_thread_served(start_balancer):
    balancer = start_balancer(*ARGS, "--plane", "native", "--workers", "2")
    rng = random.Random(3)
    saw: Counter = Counter(burst(balancer, [str(rng.randrange(10**6)) for _ in range(120)]))
    with httpx.Client(base_url=balancer.url, timeout=20) as client:  # one kept connection
        for _ in range(80):
            saw[client.get("/home").headers["X-Served-By"]] += 1
    per_replica, timed, failures = counted(balancer)
    assert per_replica == saw and timed == 200 and failures == 0
    served_by_the_plane(balancer, requests=200, scrapes=3)


def test_a_stopped_replica_fails_over_is_counted_and_wakes_the_heartbeats(start_balancer):
    """SIGSTOP one replica: requests it owns time out (the request timeout), are answered by
    the next replica on the ring, and count as its failures; the keeper replaces it."""
    interval, timeout = 60.0, 1.0
    balancer = start_balancer(*ARGS, "--plane", "native", "--workers", "2",
                              "--request-timeout", "1", "--heartbeat-interval", str(interval),
                              "--heartbeat-timeout", str(timeout), "--heartbeat-misses", "1")
    victim_name, victim = next(iter(balancer.replica_processes().items()))
    ring = ring_of(sorted(balancer.replica_processes()))
    owned = [str(r) for r in range(200000, 210000)
             if ring.lookup(request_number(str(r))) == victim_name][:3]
    victim.suspend()
    try:
        started = time.monotonic()
        with httpx.Client(base_url=balancer.url, timeout=30) as client:
            answers = [client.get("/home", headers={"X-Request-ID": r}) for r in owned]
        assert [a.status_code for a in answers] == [200] * 3
        assert victim_name not in {a.headers["X-Served-By"] for a in answers}
        _, _, failures = counted(balancer)
        assert failures >= 1
        # The failure woke the keeper: one round (its heartbeat timing out) evicts the replica,
        # long before the next scheduled round, a minute away.
        deadline = started + 3 * 1 + timeout + 10
        assert deadline < started + interval
        while victim_name in httpx.get(f"{balancer.url}/rep").json()["message"]["replicas"]:
            assert time.monotonic() < deadline, "the keeper was not woken by the failures"
            time.sleep(0.1)
    finally:
        victim.resume()


# ---- live, generated: the two planes answer any GET alike -----------------------------------
visible = st.sampled_from([*range(0x21, 0x7f), *range(0xa0, 0x100)]).map(lambda b: bytes([b]))
field_value = st.lists(st.one_of(visible, st.just(b" "), st.just(b"\t")), max_size=12).map(
    b"".join)
header = st.one_of(
    st.tuples(st.sampled_from([b"X-Request-ID", b"x-request-id", b"Connection", b"Accept",
                               b"Upgrade", b"X-Other"]), field_value),
    st.tuples(st.just(b"Connection"), st.sampled_from([b"keep-alive", b"close", b"Upgrade",
                                                       b"keep-alive, close", b"TE"])),
    # no body follows: a length above 0 would wait out the body timeout
    st.tuples(st.just(b"Content-Length"), st.sampled_from([b"0", b"00", b" 0 ", b"x", b"-1"])))
path = st.one_of(st.sampled_from([b"/home", b"/rep", b"/metrics", b"/nope", b"/", b"/home/x"]),
                 st.lists(visible, min_size=1, max_size=10).map(lambda p: b"/" + b"".join(p)))


@pytest.fixture(scope="module")
def both_planes():
    started = [BalancerProcess(args=[*ARGS, "--plane", plane, "--workers", "1"]).start()
               for plane in ("native", "python")]
    yield started
    for balancer in started:
        assert balancer.stop() == 0


@settings(max_examples=150, deadline=None)
@given(path=path, query=st.sampled_from([b"", b"?rid=12", b"?rid=", b"?a=b&rid=x y"]),
       version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]), headers=st.lists(header, max_size=5),
       hosts=st.sampled_from([[b"x"], [b"x"], [b"x"], [], [b"x", b"y"]]))
def test_any_get_is_answered_by_both_planes_alike(both_planes, path, query, version, headers,
                                                  hosts):
    """Generated GETs (any path, ids of any bytes, whitespace, Connection tokens, a
    Content-Length, an Upgrade, no Host or two): each plane's answer byte for byte the
    other's, /metrics' framing and the replicas' Date aside. The id must not be drawn at
    random, so every request names one."""
    ids = [value for name, value in headers if name.lower() == b"x-request-id"]
    if not ids or not ids[-1].strip():  # the last one counts
        headers = [*headers, (b"X-Request-ID", b"42")]
    headers = [(b"Host", host) for host in hosts] + headers
    head = b"GET " + path + query + b" " + version + b"\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    raw = head + b"Connection: close\r\n\r\n"
    note(repr(raw))
    native_lb, python_lb = both_planes
    ours = same_clock(first_answer(native_lb.port, raw))
    theirs = same_clock(first_answer(python_lb.port, raw))
    if path.startswith(b"/metrics") and ours.startswith(b"HTTP/1.1 200"):
        ours, theirs = ours.partition(b"\r\n")[0], theirs.partition(b"\r\n")[0]
    assert ours == theirs


# ---- live, generated: raw framing, pipelined, answered by both planes alike ------------------
eol = st.sampled_from([b"\r\n"] * 5 + [b"\n"])  # bare LF now and then, anywhere
framing_header = st.sampled_from([
    b"Host: x", b"Host: x", b"Host: y", b"host:x", b"X-Request-ID: 7", b"X-Request-ID: 123456",
    b"Content-Length: 0", b"Content-Length: 2", b"Content-Length: 02", b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: identity", b"Transfer-Encoding: gzip, chunked", b"X-Fold: a\r\n b",
    b"X-Fold: a\r\n\tb", b"Connection: keep-alive", b"Connection: Keep-Alive", b"Connection: TE",
    b"Connection: upgrade", b"Upgrade: h2c", b"X-Other: 1"])
last_connection = st.sampled_from([b"", b"Connection: close", b"Connection: CLOSE",
                                   b"Connection: keep-alive, close", b"Connection: keep-alive"])


@st.composite
def framed_request(draw, last: bool) -> bytes:
    """One request as raw bytes, its framing drawn: version, line endings, Host (none, one,
    two), lengths (twice, with their body), Transfer-Encoding (with a chunked body), folded
    fields, Connection tokens. Only the last one of a pipeline may ask to close."""
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]) if last
                   else st.just(b"HTTP/1.1"))
    # an id in every query (a drawn one differs from plane to plane); the header may win
    path = draw(st.sampled_from([b"/home?rid=5", b"/home?rid=77", b"/nope?rid=1", b"/rep"]))
    fields = draw(st.lists(framing_header, max_size=4))
    if last and (connection := draw(last_connection)):
        fields.append(connection)
    lines = [b"GET " + path + b" " + version] + fields
    head = b"".join(line + draw(eol) for line in lines) + draw(eol)
    text = b"\n".join(fields).lower()
    if b"chunked" in text:
        return head + b"0\r\n\r\n"
    return head + (b"hi" if b"content-length: 2" in text or b"content-length: 02" in text
                   else b"")


def closes(raw: bytes) -> bool:
    """Whether the server closes after this request, as the client asked (a request it
    refuses closes the connection too, and what follows is drained, not answered)."""
    first = raw.split(b"\n", 1)[0]
    connection = b"".join(line for line in raw.lower().split(b"\n")
                          if line.startswith(b"connection:"))
    if first.rstrip(b"\r").endswith(b"HTTP/1.0"):
        return b"keep-alive" not in connection
    return b"close" in connection


def read_all(port: int, raw: bytes, wait: float) -> bytes:
    """Everything sent back until the balancer closes, or ``wait`` passes with nothing new."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(raw)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            data += b"<still open>"
    return data


@settings(max_examples=120, deadline=None)
@given(first=st.lists(framed_request(last=False), max_size=2), last=framed_request(last=True))
def test_raw_framing_is_answered_by_both_planes_byte_for_byte(both_planes, first, last):
    """Pipelines of raw requests (bare LF, folding, Transfer-Encoding, duplicate Host and
    Content-Length, Connection variants, HTTP/1.0): whatever either plane proxies itself or
    hands over, the bytes sent back are the same, to the last one. A request ends the
    pipeline with ``Connection: close`` unless the last one asks to close."""
    raw = b"".join(first) + last
    if not closes(last):
        raw += b"GET /home HTTP/1.1\r\nHost: x\r\nX-Request-ID: 9\r\nConnection: close\r\n\r\n"
    note(repr(raw))
    native_lb, python_lb = both_planes
    ours = same_clock(read_all(native_lb.port, raw, 5))
    theirs = same_clock(read_all(python_lb.port, raw, 5))
    assert ours == theirs
    assert ours.startswith(b"HTTP/1.1 ")
