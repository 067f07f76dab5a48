"""Replica names: they become container names and DNS names later, so they are DNS labels."""

from __future__ import annotations

import random
import re
from collections.abc import Collection

__all__ = ["DNS_LABEL", "is_dns_label", "random_hostname"]

# RFC 1123 label: letters, digits and '-', 1 to 63 characters, no '-' at either end.
DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def is_dns_label(name: str) -> bool:
    return bool(DNS_LABEL.match(name))



def random_hostname(taken: Collection[str], prefix: str = "Server",
                    rng: random.Random | None = None) -> str:
    """``prefix`` followed by a random 5-digit id that no name in ``taken`` uses."""
    rng = rng or random.Random()
    lowered = {name.lower() for name in taken}
    while True:
        name = f"{prefix}{rng.randint(10000, 99999)}"
        if name.lower() not in lowered:
            return name
