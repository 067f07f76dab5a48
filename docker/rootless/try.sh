#!/bin/sh
# Run the Part 1 balancer's replicas on a rootless Docker engine (Debian's docker.io,
# rootlesskit, uidmap, slirp4netns), as tried on this project's machine (docs/threat-model.md).
# As root: makes a user, starts its engine, loads the replica image, runs a balancer on it,
# kills a replica and waits for its replacement, then stops and removes everything it made.
set -eu
user=${DSLAB_ROOTLESS_USER:-dslabrl}
run=/tmp/$user-run
apt-get install -y -q rootlesskit uidmap slirp4netns >/dev/null
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/sh "$user"   # subuid/subgid ranges come with it
mkdir -p "$run" && chown "$user" "$run"
cleanup() {
    pkill -u "$user" || true; sleep 2; userdel -r "$user" 2>/dev/null || true; rm -rf "$run"
}
trap cleanup EXIT INT TERM
su - "$user" -c "XDG_RUNTIME_DIR=$run PATH=/usr/share/docker.io/contrib:/usr/sbin:/sbin:\$PATH \
    nohup dockerd-rootless.sh --data-root $run/data > $run/dockerd.log 2>&1 &"
export DOCKER_HOST=unix://$run/docker.sock
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
DOCKER_HOST= docker save dslab-replica:latest | docker load
.venv/bin/python - <<'PY'
import docker, httpx
from dslab.stack import BalancerProcess, wait_until
engine = docker.from_env()
b = BalancerProcess(args=["-n", "3", "--backend", "docker", "--docker-address", "loopback",
                          "--stack", "rootless"]).start()
try:
    print("replicas:", httpx.get(f"{b.url}/rep").json()["message"]["replicas"])
    victim = engine.containers.list(filters={"label": "dslab.stack=rootless"})[0]
    name = victim.labels["dslab.replica"]
    pid = victim.attrs["State"]["Pid"]
    print("a replica's process runs on the host as uid", open(f"/proc/{pid}/status").read()
          .split("Uid:")[1].split()[0])
    victim.kill()
    def replaced():
        now = httpx.get(f"{b.url}/rep").json()["message"]["replicas"]
        return name not in now and len(now) == 3
    wait_until(replaced, 60)
    print("killed", name, "-> replaced:", httpx.get(f"{b.url}/rep").json()["message"]["replicas"])
finally:
    print("balancer stopped, exit code", b.stop())
PY
