"""Consistent hashing as pure logic: hash functions by name and the slot ring."""

from .hashes import HASH_PAIRS, HashPair, get_hash_pair, request_number, server_number
from .ring import (
    PROBING,
    ConsistentHashRing,
    DuplicateServerError,
    EmptyRingError,
    RingError,
    RingFullError,
    UnknownServerError,
)

__all__ = [
    "HASH_PAIRS",
    "PROBING",
    "ConsistentHashRing",
    "DuplicateServerError",
    "EmptyRingError",
    "HashPair",
    "RingError",
    "RingFullError",
    "UnknownServerError",
    "get_hash_pair",
    "request_number",
    "server_number",
]
