"""Hash functions for the ring, registered by name so configuration can pick them.

Two families, as in the seed:

* a *request hash* ``H(rid)`` maps a request id (a non-negative integer) to an integer;
  the ring takes it modulo the slot count;
* a *virtual-server hash* ``Phi(i, j)`` maps server ``i``'s ``j``-th virtual node to an integer.

``seed`` is the assignment's quadratic pair. It is deliberately kept as given: squares modulo a
power of two reach only a small fraction of the residues, so the seed's H puts every request on
about 90 of the 512 slots and Phi clusters the virtual nodes. Experiment A-4 measures exactly
that against the well-mixed hashes below.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "HASH_PAIRS",
    "HashPair",
    "get_hash_pair",
    "request_number",
    "salted",
    "server_number",
]

RequestHash = Callable[[int], int]
VirtualHash = Callable[[int, int], int]


def seed_request_hash(i: int) -> int:
    """The seed's H(i) = i^2 + 2i + 17."""
    return i * i + 2 * i + 17


def seed_virtual_hash(i: int, j: int) -> int:
    """The seed's Phi(i, j) = i^2 + j^2 + 2j + 25."""
    return i * i + j * j + 2 * j + 25


def _blake2b_int(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def blake2b_request_hash(i: int) -> int:
    return _blake2b_int(b"r:%d" % i)


def blake2b_virtual_hash(i: int, j: int) -> int:
    return _blake2b_int(b"v:%d:%d" % (i, j))


_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def _fnv1a(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


def fnv1a_request_hash(i: int) -> int:
    return _fnv1a(b"r:%d" % i)


def fnv1a_virtual_hash(i: int, j: int) -> int:
    return _fnv1a(b"v:%d:%d" % (i, j))


def linear_request_hash(i: int) -> int:
    """A deliberately naive hash (identity) for experiments: sequential ids walk the ring."""
    return i


def linear_virtual_hash(i: int, j: int) -> int:
    return i * 37 + j * 53


@dataclass(frozen=True)
class HashPair:
    name: str
    request: RequestHash
    virtual: VirtualHash
    description: str


HASH_PAIRS: dict[str, HashPair] = {
    pair.name: pair
    for pair in (
        HashPair("seed", seed_request_hash, seed_virtual_hash,
                 "H(i)=i^2+2i+17, Phi(i,j)=i^2+j^2+2j+25 (the assignment's)"),
        HashPair("blake2b", blake2b_request_hash, blake2b_virtual_hash,
                 "64-bit BLAKE2b of the ids (well mixed)"),
        HashPair("fnv1a", fnv1a_request_hash, fnv1a_virtual_hash,
                 "64-bit FNV-1a of the ids (cheap, fairly mixed)"),
        HashPair("linear", linear_request_hash, linear_virtual_hash,
                 "identity / affine (a poor hash, for contrast)"),
    )
}


def salted(pair: HashPair, salt: str) -> HashPair:
    """``pair`` with every server number shifted by a number drawn from ``salt``: rings of the
    same servers with different salts lay them out differently (Part 2 salts each shard's
    ring with its id, so shards held by the same servers do not all put the same server
    first). Requests hash as before. An empty salt is ``pair`` itself."""
    if not salt:
        return pair
    shift = int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=4).digest(), "big")
    virtual = pair.virtual
    return HashPair(f"{pair.name}+{salt}", pair.request,
                    lambda i, j: virtual(i + shift, j), f"{pair.description}, salted {salt!r}")


def get_hash_pair(name: str) -> HashPair:
    try:
        return HASH_PAIRS[name]
    except KeyError:
        known = ", ".join(sorted(HASH_PAIRS))
        raise ValueError(f"unknown hash function {name!r}; known: {known}") from None


def server_number(hostname: str) -> int:
    """The integer ``i`` of Phi(i, j) for a hostname.

    A name ending in digits uses them ("Server3" -> 3, "S10" -> 10, "Server58127" -> 58127),
    so the seed's examples place servers as the assignment's figures do. Any other name uses
    a stable 32-bit BLAKE2b of the lower-cased name (DNS names are case-insensitive), so the
    placement survives restarts and does not depend on Python's randomised ``hash()``.
    """
    digits = len(hostname) - len(hostname.rstrip("0123456789"))
    if digits:
        return int(hostname[-digits:])
    return int.from_bytes(hashlib.blake2b(hostname.lower().encode(), digest_size=4).digest(), "big")


_MAX_ID_DIGITS = 18  # every such id fits a signed 64-bit integer


def request_number(request_id: str) -> int:
    """The integer a request id hashes as: its value when it is at most 18 ASCII digits (the
    contract's 6-digit ids), else a stable hash of the text, so an id of any length routes."""
    if len(request_id) <= _MAX_ID_DIGITS and request_id.isdigit() and request_id.isascii():
        return int(request_id)
    return int.from_bytes(hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "big")
