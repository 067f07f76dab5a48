"""What both balancers stand on to keep a pool of replicas and talk to it.

    errors.py     how a call to a replica fails without an answer (pure)
    upstream.py   pooled keep-alive HTTP/1.1 connections to one replica (httptools)
    routing.py    the ring's owner first, then the next replica clockwise (pure, I/O injected)
    heartbeat.py  which replicas are dead, every interval; the owner's hook decides what follows

``balancer/`` (Part 1) and ``db/`` (Part 2) stand side by side on this layer, on ``ring/`` and
on ``supervisor/``; neither imports the other.
"""
