# Every target installs what it needs into .venv first (made here, from PyPI).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 5000
N      ?= 3
HASH   ?= seed
SLOTS  ?= 512
VNODES ?= 9
ARGS   ?=

.PHONY: help venv tools compose-check test lint report lab wheelhouse base-image images build-images up down swarm-up swarm-down cluster-up cluster-down cluster-env test-cluster run-lb run-db bench-lb bench-hotpath bench-db bench-failover clean

EXP    ?=
# The base of the images: built here by debootstrap (no registry reachable); on a machine that
# reaches Docker Hub, `make images BASE=python:3.11-slim`.
BASE   ?= dslab-base:bookworm
STACK  ?= dslab
APP    ?= dslab.balancer
# Debian's docker-compose here; `docker compose` (the plugin) on most machines.
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || \
             (command -v docker-compose >/dev/null 2>&1 && echo docker-compose))

help:
	@echo "make report            re-run every experiment, render reports/*.html and reports/figures/*.png"
	@echo "                       (EXP='lb_a1 lb_a3' for some; ARGS=--quick for small sizes)"
	@echo "make lab               JupyterLab on notebooks/ (LAB_PORT=8888; prints the URL to open)"
	@echo "make up / make down    the stack under Compose on PORT (APP=dslab.db for Part 2); down removes everything"
	@echo "make swarm-up / swarm-down  the stack on Docker Swarm (a swarm made if none); down removes everything"
	@echo "make cluster-up / cluster-down  a swarm of three Docker engines in containers on this one;"
	@echo "                       then eval \$$(make -s cluster-env) and make swarm-up deploys onto it"
	@echo "make test-cluster      the tests on that cluster (node lost, node cut off); they make their own"
	@echo "make images            Docker images dslab-{replica,shard,balancer} (BASE=python:3.11-slim to use Docker Hub)"
	@echo "make test              run the test suite (ARGS='tests/test_ring.py -k NAME': only those, with pytest)"
	@echo "make lint              ruff over everything; mypy (strict on services/dslab, default on tests)"
	@echo "make run-lb PORT=5000  Part 1 stack in the foreground (N=3 HASH=seed SLOTS=512 VNODES=9;"
	@echo "                       ARGS='--algorithm maglev --balance-factor 1.25' and any other option)"
	@echo "make run-db PORT=5000  Part 2 stack in the foreground (ARGS=--reset to start empty)"
	@echo "make bench-db          Part 2: single-row writes, 100-row writes, reads; balancer vs the engines (ARGS=--profile)"
	@echo "make bench-failover    kill-to-serving and /add times: process, Docker and Swarm backends"
	@echo "                       (ARGS='--cluster also' or '--cluster only': a node lost on a 3-engine cluster)"
	@echo "make bench-lb          balancer vs HAProxy vs direct, with wrk (ARGS=--profile)"
	@echo "make bench-hotpath     the balancer's own Python per request, no network (ARGS='--instructions --compare PATH')"

# The virtualenv's own Python, whatever PY is given (make wheelhouse PY=python3.13 must not
# install the project into that Python when the virtualenv is remade on the way).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test,bench,lab,docker]'
	touch $@

# The native data plane (Rust, services/native), built where cargo is: without it the Part 1
# balancer proxies in Python (--plane auto). Built, it must build: a failure stops here.
NATIVE_SOURCES := $(wildcard services/native/Cargo.* services/native/pyproject.toml services/native/src/*.rs)
$(VENV)/.native: $(VENV)/.installed $(NATIVE_SOURCES)
	@if command -v cargo >/dev/null; then \
	  echo "building the native data plane (Rust)"; \
	  $(VENV)/bin/python -m pip install -q ./services/native; \
	else \
	  echo "note: no cargo (Rust) here: the native data plane is not built; the balancer proxies in Python"; \
	fi
	touch $@

venv: $(VENV)/.installed $(VENV)/.native

# HAProxy and wrk, the balancer's baselines (A-4, make bench-lb), and Chromium, which the tests
# render every report in: from Debian's packages.
tools:
	@command -v haproxy >/dev/null && command -v wrk >/dev/null && command -v chromium >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy wrk chromium) || \
	  (echo "error: A-4, bench-lb and the tests need HAProxy, wrk and Chromium: apt-get install haproxy wrk chromium (as root)"; exit 1)

# ARGS: pytest's arguments instead of the whole suite (the Rust tests too are left out), e.g.
# make test ARGS='tests/test_ring.py -k NAME'; options alone (ARGS=-x) run pytest's testpaths.
test: venv tools
ifeq ($(strip $(ARGS)),)
	@if command -v cargo >/dev/null; then \
	  cargo test -q --release --manifest-path services/native/Cargo.toml; fi
	$(PY) -m pytest tests
else
	$(PY) -m pytest $(ARGS)
endif

report: venv tools
	$(PY) -m dslab.lab.report $(EXP) $(ARGS)

# As root (a container) Jupyter refuses to start without --allow-root; with no display it
# cannot open a browser, so it only prints the URL (with its token) to open.
LAB_PORT ?= 8888
lab: venv
	cd notebooks && exec ../$(VENV)/bin/jupyter lab --port $(LAB_PORT) \
	  $(if $(filter 0,$(shell id -u)),--allow-root) \
	  $(if $(DISPLAY)$(WAYLAND_DISPLAY),,--no-browser --ServerApp.ip=127.0.0.1)

# The images' Python packages, built for the images' Python (IMAGE_PYTHON: Debian bookworm's
# and python:3.11-slim's), not the host's: dslab itself is pure Python; every dependency is a
# binary wheel for that Python and this architecture, whatever Python runs make.
IMAGE_PYTHON ?= 3.11
WHEELHOUSE   ?= wheelhouse
ARCH         := $(shell uname -m)
WHEEL_PLATFORMS := $(foreach v,2_36 2_35 2_34 2_31 2_28 2_27 2_24 2_17 2_12 2_5,--platform manylinux_$(v)_$(ARCH)) \
                   --platform manylinux2014_$(ARCH) --platform manylinux2010_$(ARCH) --platform manylinux1_$(ARCH)
wheelhouse: venv
	rm -rf $(WHEELHOUSE)
	$(PY) -m pip wheel -q --no-deps -w $(WHEELHOUSE) .
	@if command -v cargo >/dev/null; then \
	  $(PY) -m pip wheel -q --no-deps -w $(WHEELHOUSE) ./services/native; fi
	$(PY) -m pip download -q -d $(WHEELHOUSE) --only-binary=:all: --python-version $(IMAGE_PYTHON) \
	  --implementation cp $(WHEEL_PLATFORMS) '.[docker]'

base-image:
	@if [ "$(BASE)" = "dslab-base:bookworm" ]; then docker/build-base.sh $(BASE); fi

images: wheelhouse base-image build-images

# Every build must pass (set -e: a loop's status is otherwise its last build's). A rebuild
# leaves the previous images untagged: the ones labelled as ours are pruned, nobody else's.
IMAGE_TARGETS ?= replica shard balancer
build-images:
	@set -e; for target in $(IMAGE_TARGETS); do \
	  echo "building dslab-$$target"; \
	  docker build -q --label dslab.image=$$target --build-arg BASE=$(BASE) --target $$target \
	    -t dslab-$$target:latest -f docker/Dockerfile . ; \
	done
	@docker image prune -f --filter label=dslab.image >/dev/null

compose-check:
	@test -n "$(COMPOSE)" || { echo "error: make up and make down need Docker Compose: neither 'docker compose' (the plugin) nor 'docker-compose' was found; install one (https://docs.docker.com/compose/install/)" >&2; exit 1; }

up: compose-check
	@docker image inspect dslab-balancer:latest dslab-replica:latest dslab-shard:latest >/dev/null 2>&1 \
	  || $(MAKE) images
	STACK=$(STACK) APP=$(APP) PORT=$(PORT) N=$(N) HASH=$(HASH) $(COMPOSE) -p $(STACK) up -d

# Compose removes what it made; the balancer's own containers go by their label.
down: compose-check
	-STACK=$(STACK) $(COMPOSE) -p $(STACK) down -v --remove-orphans
	-docker ps -aq --filter label=dslab.stack=$(STACK) | xargs -r docker rm -f -v
	-docker network ls -q --filter label=dslab.stack=$(STACK) | xargs -r docker network rm
	-docker volume ls -q --filter label=dslab.stack=$(STACK) | xargs -r docker volume rm

# Docker Swarm (docker-stack.yml): swarm-up makes a swarm of this engine if it is in none
# (SWARM_ADVERTISE: the address other nodes join at); swarm-down removes everything the stack
# and its balancer made, and leaves the swarm only if swarm-up made it.
SWARM_ADVERTISE ?= 127.0.0.1
swarm-up: venv
	@docker image inspect dslab-balancer:latest dslab-replica:latest dslab-shard:latest >/dev/null 2>&1 \
	  || $(MAKE) images
	APP=$(APP) PORT=$(PORT) N=$(N) HASH=$(HASH) $(PY) -m dslab.swarmctl up --stack $(STACK) \
	  --advertise-addr $(SWARM_ADVERTISE)

swarm-down: venv
	$(PY) -m dslab.swarmctl down --stack $(STACK)

# A test cluster (services/dslab/cluster.py): three nodes, each a container running a Docker
# engine of its own (node0 the manager), on network $(CLUSTER); the host's own swarm is not
# touched. `eval $$(make -s cluster-env)` points docker and make swarm-up at its manager.
CLUSTER ?= dslab-cluster
cluster-up: venv
	@docker image inspect dslab-balancer:latest dslab-replica:latest dslab-shard:latest >/dev/null 2>&1 \
	  || $(MAKE) images
	@$(MAKE) -s base-image
	$(PY) -m dslab.cluster up --name $(CLUSTER) --base $(BASE)

cluster-down: venv
	$(PY) -m dslab.cluster down --name $(CLUSTER)

cluster-env: venv
	@$(PY) -m dslab.cluster env --name $(CLUSTER)

# Slow (each test makes a cluster of its own; about 7 min here): not part of make test;
# .ci/run calls it after.
test-cluster: venv
	@docker image inspect dslab-balancer:latest dslab-replica:latest dslab-shard:latest >/dev/null 2>&1 \
	  || $(MAKE) images
	@$(MAKE) -s base-image
	$(PY) -m pytest -m cluster -n 0 tests/test_cluster.py

# ruff everywhere; mypy strict on the package, default on the tests (mypy.ini).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict services/dslab
	$(VENV)/bin/mypy tests

run-lb: venv
	exec $(PY) -m dslab.balancer --port $(PORT) -n $(N) --hash $(HASH) --slots $(SLOTS) --vnodes $(VNODES) $(ARGS)

run-db: venv
	exec $(PY) -m dslab.db --port $(PORT) $(ARGS)

bench-lb: venv tools
	$(PY) bench/bench_lb.py $(ARGS)

bench-hotpath: venv
	$(PY) bench/bench_hotpath.py $(ARGS)

bench-db: venv
	$(PY) bench/bench_db.py $(ARGS)

bench-failover: venv
	$(PY) bench/bench_failover.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .state
