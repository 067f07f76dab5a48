"""GET /<path>: the replica the ring picks answers; the next one on the ring if it fails.

Transport-free: ``Proxy.answer`` takes the URI and the request id and returns what to send
back, so the front end (``front.py``) only parses and writes bytes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable
from dataclasses import dataclass

from ..common.errors import error_body
from ..keeper.routing import NoReplicaAvailable, route
from ..keeper.upstream import UpstreamResponse, format_get
from ..ring import request_number
from .membership import ReplicaSet

__all__ = ["Proxy", "ProxyAnswer", "request_id_from"]

log = logging.getLogger(__name__)

_JSON = b"application/json"


@dataclass(slots=True)
class ProxyAnswer:
    status: int
    body: bytes
    content_type: bytes | None = _JSON
    served_by: str = ""


def request_id_from(header: bytes | None, uri: str, rng: random.Random) -> str:
    """The client's ``X-Request-ID``, else its ``?rid=``, else a random 6-digit id."""
    if header:
        return header.decode("latin-1")
    if "rid=" in uri:
        for pair in uri.partition("?")[2].split("&"):
            key, _, value = pair.partition("=")
            if key == "rid" and value:
                return value
    return str(rng.randint(100000, 999999))


class Proxy:
    def __init__(self, replicas: ReplicaSet, rng: random.Random | None = None) -> None:
        self.replicas = replicas
        self.rng = rng or random.Random()

    async def answer(self, uri: str, request_id: str) -> ProxyAnswer:
        replicas = self.replicas

        def fetch(name: str) -> Awaitable[UpstreamResponse]:
            return replicas.fetch(name, format_get(uri, name, request_id))

        try:
            name, response = await route(request_number(request_id), replicas.ring, fetch,
                                         replicas.suspect)
        except NoReplicaAvailable as exc:
            log.warning("no replica could serve %s: %s", uri, exc)
            return ProxyAnswer(503, error_body("<Error> No replica is available"))
        if response.status == 404:
            path = uri.partition("?")[0]
            return ProxyAnswer(
                400, error_body(f"<Error> '{path}' endpoint does not exist in server replicas"),
                served_by=name)
        return ProxyAnswer(response.status, response.body, response.content_type, name)
