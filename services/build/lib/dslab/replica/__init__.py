"""The Part 1 web server replica (Tornado)."""

from .server import make_app, server_id_from_env

__all__ = ["make_app", "server_id_from_env"]
