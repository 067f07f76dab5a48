"""Consistent hashing as pure logic: hash functions by name, and five algorithms behind one
interface (``HashRing``), chosen by name in ``make_ring``, the one place that knows them all."""

from .base import (
    DuplicateServerError,
    EmptyRingError,
    HashRing,
    RingError,
    RingFullError,
    UnknownServerError,
)
from .hashes import HASH_PAIRS, HashPair, get_hash_pair, request_number, salted, server_number
from .jump import JumpRing, jump_hash
from .maglev import MaglevRing
from .multiprobe import MultiProbeRing
from .rendezvous import RendezvousRing
from .ring import PROBING, ConsistentHashRing

ALGORITHMS = ("ring", "maglev", "rendezvous", "multiprobe", "jump")


def make_ring(algorithm: str = "ring", hashes: str | HashPair = "blake2b", *, slots: int = 512,
              vnodes: int = 9, probing: str = "linear", table_size: int = 65537,
              probes: int = 21) -> HashRing:
    """A ring of the named algorithm; the options that are not its own are ignored."""
    if algorithm == "ring":
        return ConsistentHashRing(slots, vnodes, hashes, probing)
    if algorithm == "maglev":
        return MaglevRing(hashes, table_size)
    if algorithm == "rendezvous":
        return RendezvousRing(hashes)
    if algorithm == "multiprobe":
        return MultiProbeRing(hashes, probes)
    if algorithm == "jump":
        return JumpRing(hashes)
    raise RingError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")


__all__ = [
    "ALGORITHMS",
    "HASH_PAIRS",
    "PROBING",
    "ConsistentHashRing",
    "DuplicateServerError",
    "EmptyRingError",
    "HashPair",
    "HashRing",
    "JumpRing",
    "MaglevRing",
    "MultiProbeRing",
    "RendezvousRing",
    "RingError",
    "RingFullError",
    "UnknownServerError",
    "get_hash_pair",
    "jump_hash",
    "make_ring",
    "request_number",
    "salted",
    "server_number",
]
