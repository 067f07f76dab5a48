"""The limits of every service's edge: what a client may send and how long it may take.

Defaults follow the proxies a client on the internet meets (``../shared/REFERENCES.md``):
nginx's 8 KiB request line, its 60 s header, body and send timeouts and 75 s keep-alive, Envoy's
60 KiB and 100 header fields. ``front.py`` enforces them before anything is routed or
forwarded, so a client's bad request is answered at the edge and never counts against a
replica. Each is an option of both balancers (``add_edge_options``), with an environment
variable; the shard servers, reached only by their balancer, keep the defaults.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

__all__ = ["EdgeLimits", "add_edge_options", "edge_limits"]


@dataclass(frozen=True)
class EdgeLimits:
    """What a client may send, and how long it may take, per connection of one process."""

    max_request_line: int = 8192  # bytes of the request target: nginx's 8k buffer; else 414
    max_header_bytes: int = 60 * 1024  # Envoy's max_request_headers_kb 60; else 431
    max_headers: int = 100  # Envoy's max_headers_count; else 431
    header_timeout: float = 60.0  # from a request's first byte to its last header: nginx; 408
    body_timeout: float = 60.0  # from its headers to its body's last byte: nginx; 408
    idle_timeout: float = 75.0  # a connection with no request begun: nginx's keep-alive; closed
    send_timeout: float = 60.0  # for an answer to leave to a client that does not read: nginx's
    max_connections: int = 10_000  # open at once; a new one past it is answered 503 and closed


# field -> (flag, environment variable, type, help)
_OPTIONS: dict[str, tuple[str, str, type, str]] = {
    "max_request_line": ("--max-request-line", "MAX_REQUEST_LINE", int,
                         "bytes of a request target; past it 414"),
    "max_header_bytes": ("--max-header-bytes", "MAX_HEADER_BYTES", int,
                         "bytes of a request's header fields; past it 431"),
    "max_headers": ("--max-headers", "MAX_HEADERS", int,
                    "header fields of a request; past it 431"),
    "header_timeout": ("--header-timeout", "HEADER_TIMEOUT", float,
                       "seconds from a request's first byte to its last header; then 408"),
    "body_timeout": ("--body-timeout", "BODY_TIMEOUT", float,
                     "seconds from a request's headers to its body's last byte; then 408"),
    "idle_timeout": ("--idle-timeout", "IDLE_TIMEOUT", float,
                     "seconds a connection may sit with no request begun; then closed"),
    "send_timeout": ("--send-timeout", "SEND_TIMEOUT", float,
                     "seconds an answer may wait on a client that does not read it (nginx's "
                     "send_timeout, HAProxy's timeout client); then the connection is dropped"),
    "max_connections": ("--max-connections", "MAX_CONNECTIONS", int,
                        "connections open at once in one process (each worker of a balancer "
                        "with --workers, as nginx's worker_connections); past it a new one "
                        "gets 503"),
}


def add_edge_options(p: argparse.ArgumentParser) -> None:
    defaults = EdgeLimits()
    for field in fields(EdgeLimits):
        flag, env, kind, what = _OPTIONS[field.name]
        p.add_argument(flag, type=_positive(kind), metavar="N",
                       default=kind(os.environ.get(env, getattr(defaults, field.name))),
                       help=f"{what} (env {env})")


def edge_limits(args: argparse.Namespace) -> EdgeLimits:
    return EdgeLimits(**{field.name: getattr(args, field.name) for field in fields(EdgeLimits)})


def _positive(kind: type) -> type:
    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value  # type: ignore[no-any-return]
    return parse  # type: ignore[return-value]
