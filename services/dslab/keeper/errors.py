"""How a call to a replica can fail without an answer: the tree every layer above catches.

    UpstreamError
    ├── UpstreamConnectError   could not connect (refused, unreachable)
    ├── UpstreamClosed         the connection dropped before a full response
    ├── UpstreamTimeout        no full response in time
    └── UpstreamProtocolError  the replica sent something that is not HTTP

Pure: the router (``routing.py``) decides "try the next replica" on these alone.

``OutOfDescriptors`` is outside the tree on purpose: a connect that found no descriptor
(EMFILE, ENFILE) is this process's condition, not the replica's. Nothing that catches
``UpstreamError`` takes it for a replica's failure: no replica is suspected or tried next
(the proxy answers 503), and a heartbeat that meets it counts no miss.
"""

from __future__ import annotations

__all__ = [
    "OutOfDescriptors",
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


class OutOfDescriptors(Exception):
    """No descriptor for a connection to a replica (EMFILE, ENFILE)."""
