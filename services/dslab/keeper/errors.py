"""How a call to a replica can fail without an answer: the tree every layer above catches.

    UpstreamError
    ├── UpstreamConnectError   could not connect (refused, unreachable)
    ├── UpstreamClosed         the connection dropped before a full response
    ├── UpstreamTimeout        no full response in time
    └── UpstreamProtocolError  the replica sent something that is not HTTP

Pure: the router (``routing.py``) decides "try the next replica" on these alone.
"""

from __future__ import annotations

__all__ = [
    "UpstreamClosed",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
]


class UpstreamError(Exception):
    """A replica did not give a full HTTP response."""


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamClosed(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamError):
    pass
