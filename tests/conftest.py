"""Shared fixtures: real balancers with real replica processes, and a leak check on each."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import os
import socket
import subprocess
import threading
import time
from collections.abc import Sequence

import httpx
import psutil
import pymongo
import pytest
from hypothesis import settings

from dslab.db.seed import SEED_SCHEMA, SEED_SERVERS, SEED_SHARDS, row, seed_init, shard_of  # noqa: F401
from dslab.engine import LocalEngine
from dslab.stack import BalancerProcess
from dslab.supervisor import ProcessSupervisor, ReplicaSpec

# CI replays the same examples every run (a red CI must be reproducible); locally hypothesis
# explores anew each time and remembers failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_all_gone(procs: list[psutil.Process], timeout: float = 10.0) -> None:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left behind: {alive}"


def assert_error(response: httpx.Response, status: int, message: str | None = None) -> str:
    """A response in the contract's error shape; returns its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"message", "status"} and body["status"] == "failure"
    assert body["message"].startswith("<Error> ")
    if message is not None:
        assert body["message"] == message
    return body["message"]


@contextlib.contextmanager
def seeded_db(state: os.PathLike, rows: list[dict], args: Sequence[str] = ()):
    """A Part 2 stack with the seed's configuration and ``rows``; checked for leaks after."""
    db = BalancerProcess("dslab.db", args=["--state-dir", str(state), *args]).start()
    try:
        with httpx.Client(base_url=db.url, timeout=60) as client:
            assert client.post("/init", json=seed_init()).status_code == 200
            assert client.post("/write", json={"data": rows}).status_code == 200
            yield db, client
    finally:
        seen = db.descendants()
        assert db.stop() == 0
        assert_all_gone(seen)


class Workers:
    """Client threads repeating ``step(client)`` until the ``with`` block ends.

    An exception out of ``step`` (a timeout, a refused connection) is a failed request: it is
    counted in ``exceptions`` and the thread goes on; leaving the block fails the test if any
    was raised or a thread did not stop, so no failure can hide in a dead thread."""

    def __init__(self, url: str, threads: int = 4, timeout: float = 60) -> None:
        self.url = url
        self.timeout = timeout
        self.lock = threading.Lock()
        self.exceptions: list[str] = []
        self._stop = threading.Event()
        self.threads = threads
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def step(self, client: httpx.Client) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout) as client:
            while not self._stop.is_set():
                try:
                    self.step(client)
                except Exception as exc:  # noqa: BLE001 - every exception is a failed request
                    with self.lock:
                        self.exceptions.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 30)
        if exc_type is None:
            assert not [t for t in self._threads if t.is_alive()], "a client thread did not stop"
            assert self.exceptions == [], f"requests raised: {self.exceptions[:5]}"


# What starting a replacement may take on top of finding the dead one: a replica process is up in
# well under a second here, a shard server with its engine in one to two, a container in about
# two. A budget, not a measurement: the benchmarks measure (make bench-failover).
SPAWN_BUDGET = {"replica": 2.0, "shard": 8.0, "container": 8.0}


def balancer_options(module: str, *args: str) -> argparse.Namespace:
    """The options the balancer ``module`` runs with when started with ``args`` (its defaults
    for the rest), read from its own parser."""
    parser = importlib.import_module(f"{module}.main").build_parser()
    return parser.parse_known_args(list(args))[0]


def detection_time(module: str, *args: str) -> float:
    """The longest the balancer ``module`` started with ``args`` takes to find a hung replica,
    from its heartbeat settings: ``misses`` rounds, each waiting out the timeout, one interval
    apart."""
    options = balancer_options(module, *args)
    return options.heartbeat_misses * (options.heartbeat_interval + options.heartbeat_timeout)


def status(client: httpx.Client) -> dict:
    return client.get("/status").json()


def all_rows(client: httpx.Client) -> list[dict]:
    """Every row of a Part 2 stack, through its balancer."""
    return client.post("/read", json={"Stud_id": {"low": 0, "high": (1 << 63) - 1}}).json()["data"]


class HomeLoad(Workers):
    """GET /home in a loop: answers counted, failures (a status or an exception) listed."""

    def __init__(self, url: str) -> None:
        super().__init__(url, threads=4, timeout=20)
        self.ok, self.failed = 0, list[int | str]()

    def step(self, client: httpx.Client) -> None:
        try:
            code: int | str = client.get("/home").status_code
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        with self.lock:
            if code == 200:
                self.ok += 1
            else:
                self.failed.append(code)


class DbWriter(Workers):
    """Writes batches of fresh Stud_ids in a loop. A 503 "nothing written" while a shard is
    down is expected and recorded with the ids it carried (the message promises that none of
    them survives); any other answer, and any exception, is a failure."""

    def __init__(self, url: str, threads: int = 4) -> None:
        super().__init__(url, threads, timeout=120)
        self.acked: list[int] = []
        self.refused: list[int] = []
        self.wrong: list[str] = []
        self._ids = itertools.count(5)

    def step(self, client: httpx.Client) -> None:
        with self.lock:
            batch = [next(self._ids) * 7 % 16384 for _ in range(3)]
        response = client.post("/write", json={"data": [row(i) for i in batch]})
        with self.lock:
            if response.status_code == 200:
                self.acked += batch
            elif response.status_code == 503 and "nothing written" in response.json()["message"]:
                self.refused += batch
            else:
                self.wrong.append(f"{response.status_code} {response.text}")

    def acked_in(self, shard: str) -> int:
        with self.lock:
            return sum(1 for i in self.acked if shard_of(i) == shard)


@pytest.fixture
def start_balancer():
    """start_balancer(*cli_args) -> a running BalancerProcess; stopped (and checked) after."""
    started: list[tuple[BalancerProcess, set[psutil.Process]]] = []

    def start(*args: str, module: str = "dslab.balancer", **kwargs) -> BalancerProcess:
        balancer = BalancerProcess(module, args=args, **kwargs).start()
        started.append((balancer, set()))
        return balancer

    yield start
    for balancer, _ in started:
        seen = balancer.descendants()
        assert balancer.stop() == 0, "the balancer did not exit cleanly on SIGTERM"
        assert_all_gone(seen)


@pytest.fixture
def balancer(start_balancer) -> BalancerProcess:
    return start_balancer("-n", "3", "--hash", "blake2b")


@pytest.fixture
def client(balancer):
    with httpx.Client(base_url=balancer.url, timeout=15) as c:
        yield c


@pytest.fixture(scope="module")
def engine_uri(tmp_path_factory):
    """One engine for a module's tests (each uses a database of its own)."""
    engine = LocalEngine(tmp_path_factory.mktemp("engine"))
    uri = asyncio.run(engine.start())
    yield uri
    engine.stop()


@pytest.fixture
def meta(tmp_path):
    """An engine the test owns, given to the balancer as --meta-uri, to read ShardT directly."""
    engine = LocalEngine(tmp_path / "meta" / "engine")
    uri = asyncio.run(engine.start())
    client = pymongo.MongoClient(uri)
    yield uri, client["dslab_meta"]
    client.close()
    engine.stop()


@pytest.fixture
def start_db(start_balancer, tmp_path):
    """start_db(*cli_args) -> a running Part 2 balancer with its state in tmp_path."""
    def start(*args: str, state: str = "state") -> BalancerProcess:
        return start_balancer("--state-dir", str(tmp_path / state), *args, module="dslab.db")
    return start


def written_then_stopped(args: list[str], rows: list[dict]) -> dict:
    """A Part 2 balancer started with ``args``, given the seed's /init and ``rows``, then
    stopped cleanly: its /status as it was (what a restart with the same args must find)."""
    db = BalancerProcess("dslab.db", args=args).start()
    try:
        with httpx.Client(base_url=db.url, timeout=120) as client:
            assert client.post("/init", json=seed_init()).status_code == 200
            assert client.post("/write", json={"data": rows}).status_code == 200
            return dict(client.get("/status").json())
    finally:
        assert db.stop() == 0


def shard_rows(db: BalancerProcess, server: str, shard: str) -> list[dict]:
    """Every row of ``shard`` as the shard server ``server`` holds it, asked directly."""
    port = db.replica_ports()[server]
    response = httpx.request("GET", f"http://127.0.0.1:{port}/copy", json={"shards": [shard]},
                             timeout=30)
    assert response.status_code == 200, response.text
    return response.json()[shard]


async def served_in(url: str, seconds: float, concurrency: int = 8) -> int:
    """GET /home on ``url`` for ``seconds``, closed loop: how many were served (all must be)."""
    from dslab.lab.load import load

    deadline = time.perf_counter() + seconds
    df = await load(url, "/home", lambda: 1 if time.perf_counter() < deadline else None,
                    concurrency=concurrency, timeout=30)
    assert (df.status == 200).all(), df.status.value_counts()
    return len(df)


DOCKER_IMAGES = ("dslab-replica:latest", "dslab-shard:latest", "dslab-balancer:latest")


@pytest.fixture(scope="module")
def docker():
    """A Docker client with the project's images (built with `make images` if one is missing);
    the test skips only where no engine answers."""
    from dslab.supervisor.docker import DockerUnavailable, docker_client

    try:
        client = docker_client()
    except DockerUnavailable as exc:
        pytest.skip(f"no Docker engine answers here: {exc}")
    if any(not client.images.list(name=image) for image in DOCKER_IMAGES):
        subprocess.run(["make", "images"], cwd=REPO, check=True)
    return client


class ShardServer:
    """One shard server started by the process backend, as the balancer starts it."""

    def __init__(self, data_root, name: str = "Server0") -> None:
        self.name = name
        self.supervisor = ProcessSupervisor(ReplicaSpec(
            module="dslab.shard", env={"SHARD_DATA_ROOT": str(data_root)}))

    def __enter__(self) -> httpx.Client:
        replica = asyncio.run(self.supervisor.spawn(self.name))
        self.proc = psutil.Process(self.supervisor.pid(self.name))
        self.tree = [self.proc, *self.proc.children(recursive=True)]
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{replica.port}", timeout=30)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        if self.proc.is_running():
            self.proc.terminate()
        assert_all_gone(self.tree, timeout=20)
