"""The Swarm backend on three Docker engines (``make test-cluster``, not part of ``make test``).

Each test makes a cluster of its own (``dslab.cluster``: three nodes, each a container running
an engine of its own, node0 the manager) and removes it, checking that nothing is left: no
container, volume or network of it, no cgroup folder, the host engine's swarm as it was. The
stack is deployed as a user deploys it: ``python -m dslab.swarmctl up`` with ``DOCKER_HOST``
at the manager's engine; the balancer publishes its port on node0's address.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from conftest import row
from dslab.cluster import (
    CGROUP_ROOT,
    IMAGES,
    LABEL_CLUSTER,
    Cluster,
    down,
    kill_node,
    node_client,
    ready_nodes,
    replica_nodes,
    restart_node,
    save_images,
    swarmctl,
    up,
)
from dslab.faults.clustertarget import ClusterTarget
from dslab.faults.history import Outcome
from dslab.faults.nemesis import Nemesis, Step
from dslab.faults.run import run_against
from dslab.stack import wait_until
from dslab.supervisor.docker import DOCKER_ERRORS
from dslab.supervisor.swarm import swarm_state

pytestmark = pytest.mark.cluster

# What the stack may take to come up: the balancer's container, then its replicas, each given
# the Swarm backend's start timeout (60 s) to run and answer.
START_TIMEOUT = 60.0
STACK_BUDGET = 2 * START_TIMEOUT
NEMESIS_SECONDS = 12.0  # the clients' run around a node's loss: 1 s before, the rest after


@pytest.fixture(scope="module")
def images(docker, tmp_path_factory):
    """The project's images saved once for every cluster of the module."""
    archive = tmp_path_factory.mktemp("images") / "images.tar"
    save_images(Cluster(), IMAGES, archive)
    return archive


@pytest.fixture
def cluster(docker, images):
    """A fresh cluster for one test; afterwards nothing of it may be left."""
    swarm_before = swarm_state(docker)
    made = Cluster(name=f"dslab-test-{uuid.uuid4().hex[:6]}", subnet="10.214.0.0/24")
    ready = up(made, say=print, archive=images)
    print(f"cluster ready in {ready:.1f}s")
    try:
        yield made
    finally:
        down(made, say=print)
        label = {"label": f"{LABEL_CLUSTER}={made.name}"}
        assert docker.containers.list(all=True, filters=label) == []
        assert docker.volumes.list(filters=label) == []
        assert docker.networks.list(filters=label) == []
        assert not [p for i in made.nodes for p in CGROUP_ROOT.glob(f"*/{made.node(i)}")]
        assert not Path("/run", made.name).exists()
        assert swarm_state(docker) == swarm_before


class Deployed:
    """A stack on the cluster, reached at the manager's address."""

    def __init__(self, cluster: Cluster, app: str, port: int, **env: str) -> None:
        self.cluster = cluster
        self.stack = f"t{uuid.uuid4().hex[:6]}"
        self.url = f"http://{cluster.address(0)}:{port}"
        swarmctl(cluster, "up", self.stack, APP=app, PORT=str(port), **env)
        self.client = httpx.Client(base_url=self.url, timeout=START_TIMEOUT)

    def answers(self) -> bool:
        try:
            return self.client.get("/metrics", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def placement(self) -> dict[str, str]:
        """Replica -> node, from the balancer's /metrics (``dslab_replica_node``)."""
        return replica_nodes(self.client.get("/metrics").text)

    def close(self) -> None:
        self.client.close()
        swarmctl(self.cluster, "down", self.stack)


def task_nodes(cluster: Cluster, stack: str) -> dict[str, str]:
    """Replica -> node, as the manager's running tasks say (a second source for placement)."""
    manager = node_client(cluster, 0)
    hostnames = {n["ID"]: n["Description"]["Hostname"] for n in manager.api.nodes()}
    services = {s["ID"]: s["Spec"]["Name"] for s in manager.api.services(
        filters={"label": f"dslab.stack={stack}"})}
    return {services[t["ServiceID"]].removeprefix(f"{stack}-"): hostnames[t["NodeID"]]
            for t in manager.api.tasks(filters={"desired-state": "running"})
            if t["ServiceID"] in services and t["Status"]["State"] == "running"
            and services[t["ServiceID"]].startswith(f"{stack}-")}


def test_a_cluster_interrupted_half_way_up_leaves_nothing(docker, images):
    """Ctrl-C once the nodes' engines answer (raised from the progress line that says so):
    everything made so far is removed before the interrupt reaches the caller."""
    interrupted = Cluster(name=f"dslab-test-{uuid.uuid4().hex[:6]}", subnet="10.214.0.0/24")

    def ctrl_c_when_engines_answer(line: str) -> None:
        print(line)
        if "engines answer" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        up(interrupted, say=ctrl_c_when_engines_answer, archive=images)
    label = {"label": f"{LABEL_CLUSTER}={interrupted.name}"}
    assert docker.containers.list(all=True, filters=label) == []
    assert docker.volumes.list(filters=label) == []
    assert docker.networks.list(filters=label) == []
    assert not Path("/run", interrupted.name).exists()


def test_the_cluster_is_three_engines_in_one_swarm_with_the_images(cluster):
    manager = node_client(cluster, 0)
    assert ready_nodes(manager) == {"node0", "node1", "node2"}
    roles = {n["Description"]["Hostname"]: n["Spec"]["Role"] for n in manager.api.nodes()}
    assert roles == {"node0": "manager", "node1": "worker", "node2": "worker"}
    for i in cluster.nodes:
        engine = node_client(cluster, i)
        assert engine.info()["Name"] == f"node{i}"
        assert {tag for image in engine.images.list() for tag in image.tags} >= set(IMAGES)


def test_part1_a_request_is_served_by_a_replica_on_another_node(cluster):
    stack = Deployed(cluster, "dslab.balancer", 5000, N="3")
    try:
        wait_until(lambda: stack.answers() and len(stack.placement()) == 3, STACK_BUDGET,
                   what="the Part 1 stack serving with 3 placed replicas")
        placement = stack.placement()
        assert placement == task_nodes(cluster, stack.stack)
        assert set(placement.values()) - {"node0"}, placement
        served: dict[str, int] = {}
        for i in range(200):
            reply = stack.client.get("/home", headers={"X-Request-ID": str(100_003 * i + 7)})
            assert reply.status_code == 200, reply.text
            name = reply.json()["message"].removeprefix("Hello from Server: ")
            served[name] = served.get(name, 0) + 1
        assert {placement[name] for name in served} - {"node0"}, (served, placement)
    finally:
        stack.close()


def test_part1_a_killed_worker_nodes_replicas_serve_again_on_live_nodes(cluster):
    stack = Deployed(cluster, "dslab.balancer", 5000, N="6", HASH="blake2b")
    try:
        wait_until(lambda: stack.answers() and len(stack.placement()) == 6, STACK_BUDGET,
                   what="the Part 1 stack serving with 6 placed replicas")
        before = stack.placement()
        held = {node: [name for name, on in before.items() if on == node]
                for node in ("node1", "node2")}
        victim = max(held, key=lambda node: len(held[node]))
        kill_node(cluster, int(victim.removeprefix("node")))

        def replaced() -> dict[str, str] | None:
            now = stack.placement()
            return now if (len(now) == 6 and victim not in now.values()
                           and not set(now) & set(held[victim])) else None

        # The manager calls a killed node ready for seconds more: a replacement placed on it
        # waits out the start timeout before it is tried elsewhere. Kept off it, every
        # replacement starts on a live node at once.
        after = wait_until(replaced, START_TIMEOUT, interval=0.5,
                           what=f"{held[victim]} replaced off {victim}")
        newcomers, served = set(after) - set(before), set()
        for i in range(1000):
            reply = stack.client.get("/home", headers={"X-Request-ID": str(100_003 * i + 7)})
            assert reply.status_code == 200, reply.text
            served.add(reply.headers["X-Served-By"])
            if newcomers <= served:
                break
        assert newcomers <= served and len(newcomers) == len(held[victim]), (newcomers, served)
    finally:
        stack.close()


# Part 2: seven servers, each holding both shards. Swarm places each new service on the node
# with the fewest tasks; the balancer and its metadata engine make two on node0, so seven
# servers put at least one on every node: each shard has servers on three nodes.
SERVERS = {f"Server{i}": ["sh1", "sh2"] for i in range(7)}
INIT = {"N": 7, "schema": {"columns": ["Stud_id", "Stud_name", "Stud_marks"],
                           "dtypes": ["Number", "String", "Number"]},
        "shards": [{"Stud_id_low": 0, "Shard_id": "sh1", "Shard_size": 4096},
                   {"Stud_id_low": 4096, "Shard_id": "sh2", "Shard_size": 4096}],
        "servers": SERVERS}


def deployed_part2(cluster: Cluster) -> tuple[Deployed, dict[str, str]]:
    """A Part 2 stack initialised with INIT, every server placed; and where each runs."""
    stack = Deployed(cluster, "dslab.db", 5001)
    wait_until(stack.answers, STACK_BUDGET, what="the Part 2 balancer answering")
    assert stack.client.post("/init", json=INIT, timeout=STACK_BUDGET).status_code == 200
    placement = stack.placement()
    assert set(placement) == set(SERVERS)
    assert set(placement.values()) == {"node0", "node1", "node2"}, placement
    assert placement == task_nodes(cluster, stack.stack)
    return stack, placement


def replaced_off(stack: Deployed, node: str, lost: list[str],
                 within: float = STACK_BUDGET) -> dict[str, str]:
    """Wait until every server ``node`` held is replaced elsewhere: as many servers as before,
    none of the lost ones and none on ``node``. A replacement joins the set only once /copy
    has filled it from the others, so serving means refilled."""
    def replaced() -> dict[str, str] | None:
        now = stack.placement()
        return now if (len(now) == len(SERVERS) and not set(now) & set(lost)
                       and node not in now.values()) else None

    return wait_until(replaced, within, interval=0.5, what=f"{lost} replaced off {node}")


def read_all(stack: Deployed) -> list[dict]:
    read = stack.client.post("/read", json={"Stud_id": {"low": 0, "high": 8191}})
    assert read.status_code == 200, read.text
    return sorted(read.json()["data"], key=lambda r: r["Stud_id"])


def running_on(cluster: Cluster, i: int, stack: str) -> set[str]:
    """The replicas of ``stack`` that node ``i``'s own engine runs (asked on its socket, which
    works while the node is cut off from the others)."""
    engine = node_client(cluster, i)
    return {c.labels["dslab.replica"] for c in engine.containers.list(
        filters={"label": [f"dslab.stack={stack}", "dslab.role=replica"]})}


ROWS = [row(i) for i in range(0, 8192, 37)]
MORE = [row(i) for i in range(1, 8192, 37)]  # new ids: ROWS hold 0, 37, 74, ...


def test_part2_shards_on_three_nodes_survive_a_worker_node_killed(cluster):
    """node1 killed by the nemesis while the A-5 clients write, update and read: the node is
    seen down, its servers replaced on the live nodes, and the history checked: nothing
    acknowledged lost, every register linearizable."""
    stack, placement = deployed_part2(cluster)
    try:
        written = stack.client.post("/write", json={"data": ROWS})
        assert written.status_code == 200, written.text
        lost = [name for name, node in placement.items() if node == "node1"]
        run = run_against(stack.url, ClusterTarget(cluster, stack.url),
                          [Step(1.0, "node_kill", target="node1")], NEMESIS_SECONDS,
                          ids=range(8192), writers=2, updaters=2, readers=3)
        [event] = run.events
        assert event.kind == "node_kill" and event.effect == {"nodes": 1, "killed": 1}
        assert run.report.valid, run.report.explain()
        assert [op for op in run.history if op.outcome is Outcome.OK and op.start > event.start]
        # The manager calls a killed node ready for seconds more: a replacement placed on it
        # would wait out the start timeout before being tried elsewhere. Kept off it, each
        # replacement starts on a live node at once.
        after = replaced_off(stack, "node1", lost, within=START_TIMEOUT)
        assert set(after.values()) <= {"node0", "node2"}
        held = {r["Stud_id"]: r for r in read_all(stack)}
        assert [held.get(r["Stud_id"]) for r in ROWS] == ROWS
        more = [r for r in MORE if r["Stud_id"] not in held]  # the clients wrote some ids
        assert stack.client.post("/write", json={"data": more}).status_code == 200
        held = {r["Stud_id"]: r for r in read_all(stack)}
        assert [held.get(r["Stud_id"]) for r in ROWS + more] == ROWS + more
    finally:
        stack.close()


def test_part2_a_worker_node_cut_off_is_replaced_and_runs_nothing_stale_once_back(cluster):
    """node2 cut off by the nemesis (shown off the network): its servers are replaced, it runs
    them on alone; reconnected when the fault ends, it stops them."""
    stack, placement = deployed_part2(cluster)
    try:
        assert stack.client.post("/write", json={"data": ROWS}).status_code == 200
        away = [name for name, node in placement.items() if node == "node2"]
        with Nemesis(ClusterTarget(cluster, stack.url)) as nemesis:
            cut = nemesis.node_cut("node2")
            assert cut.effect == {"nodes": 1, "disconnected": 1}
            replaced_off(stack, "node2", away)
            # Alone, node2 runs on: the servers it held are still there, unreachable.
            assert running_on(cluster, 2, stack.stack) >= set(away)
            assert read_all(stack) == ROWS
            assert stack.client.post("/write", json={"data": MORE}).status_code == 200
            nemesis.end(cut)  # reconnected
        # Back, it learns from the manager that their services are gone, and stops them:
        # within a few dispatcher heartbeats and the servers' stop grace period.
        wait_until(lambda: "node2" in ready_nodes(node_client(cluster, 0)), STACK_BUDGET,
                   what="node2 ready again")
        wait_until(lambda: not running_on(cluster, 2, stack.stack) & set(away), STACK_BUDGET,
                   interval=0.5, what=f"node2's stale servers {away} stopped")
        assert read_all(stack) == sorted(ROWS + MORE, key=lambda r: r["Stud_id"])
        assert set(stack.placement()) & set(away) == set()
    finally:
        stack.close()


def manager_ready(cluster: Cluster) -> bool:
    """The manager answers with every node ready (right after a restart it may have no
    leader yet, and says so with an error)."""
    try:
        return len(ready_nodes(node_client(cluster, 0, timeout=5))) == cluster.size
    except DOCKER_ERRORS:
        return False


def test_part2_the_managers_loss_stops_the_service_until_it_is_back_and_deployed_again(cluster):
    """The balancer and its metadata engine run on the manager, the swarm's only one: while it
    is down nothing answers, and what the workers run runs on with no one to stop it. Powered
    on again, its engine brings back the swarm, volumes and state; `make swarm-up` starts the
    balancer again, which takes its servers back where their volumes are: every acknowledged
    row is there."""
    stack, placement = deployed_part2(cluster)
    try:
        assert stack.client.post("/write", json={"data": ROWS}).status_code == 200
        status = stack.client.get("/status").json()
        kill_node(cluster, 0)
        assert not stack.answers()
        on_workers = {name for name, node in placement.items() if node != "node0"}
        assert running_on(cluster, 1, stack.stack) | running_on(cluster, 2, stack.stack) \
            == on_workers
        restart_node(cluster, 0)
        wait_until(lambda: manager_ready(cluster), STACK_BUDGET, interval=0.5,
                   what="the manager back with every node ready")
        swarmctl(cluster, "up", stack.stack, APP="dslab.db", PORT="5001")
        wait_until(lambda: stack.answers() and len(stack.placement()) == len(SERVERS),
                   STACK_BUDGET, interval=0.5, what="the balancer back with every server")
        assert stack.client.get("/status").json() == status
        assert set(stack.placement()) == set(SERVERS)
        assert read_all(stack) == ROWS
        assert stack.client.post("/write", json={"data": MORE}).status_code == 200
        assert read_all(stack) == sorted(ROWS + MORE, key=lambda r: r["Stud_id"])
    finally:
        stack.close()
