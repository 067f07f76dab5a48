"""What both balancers stand on to keep a pool of replicas and talk to it.

    errors.py     how a call to a replica fails without an answer (pure)
    upstream.py   pooled keep-alive HTTP/1.1 connections to one replica (httptools)
    routing.py    the ring's owner first, then the next replica clockwise (pure, I/O injected)
    heartbeat.py  which replicas are dead, every interval; the keeper's round acts on it
    keeper.py     ReplicaKeeper: start all or none, evict, replace (backing off), retire
    bounded.py    bounded loads: requests in flight per replica, the walk under the bound (pure)
    metrics.py    the keeper's counts for Prometheus, read at scrape time
    cli.py        what both balancers' command lines share (backend, heartbeats, entry point)

``balancer/`` (Part 1) and ``db/`` (Part 2) stand side by side on this layer, on ``ring/`` and
on ``supervisor/``; neither imports the other.
"""
