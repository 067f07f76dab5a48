"""An admin token for the endpoints that change membership or configuration; off by default,
because the contract is open.

With a token set (``--admin-token`` / ``ADMIN_TOKEN``, or ``--admin-token-file`` /
``ADMIN_TOKEN_FILE`` for a secret mounted as a file), such an endpoint answers only a request
with ``Authorization: Bearer <token>``; any other gets 401 in the contract's error shape. The
comparison takes the same time whatever the guess (``hmac.compare_digest``), and the token is
never logged or echoed. Data endpoints stay open.
"""

from __future__ import annotations

import argparse
import hmac
import os
from pathlib import Path

__all__ = ["add_admin_token_options", "admin_token", "authorized"]


def add_admin_token_options(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    p.add_argument("--admin-token", default=env("ADMIN_TOKEN", ""), metavar="TOKEN",
                   help="require 'Authorization: Bearer TOKEN' on the endpoints that change "
                        "membership or configuration; off when empty (env ADMIN_TOKEN)")
    p.add_argument("--admin-token-file", default=env("ADMIN_TOKEN_FILE", ""), metavar="PATH",
                   help="read the admin token from a file, as a mounted secret (env "
                        "ADMIN_TOKEN_FILE)")


def admin_token(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """The token in force (the file's, if one is named), or None; a file that cannot be read
    or holds no token stops the start with a usage error."""
    if args.admin_token_file:
        try:
            token = Path(args.admin_token_file).read_text().strip()
        except OSError as exc:
            parser.error(f"--admin-token-file: cannot read {args.admin_token_file}: {exc.strerror}")
        if not token:
            parser.error(f"--admin-token-file: {args.admin_token_file} holds no token")
        return token
    return args.admin_token or None


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the token, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                               token.encode())
