"""The Part 1 web server replica: GET /home and GET /heartbeat.

Its ID comes from the environment (``SERVER_ID``, else ``HOSTNAME``), as a container's would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import tornado.httpserver
import tornado.web

from ..common.runtime import bind_socket, die_with_parent, install_uvloop, serve_forever

__all__ = ["main", "make_app", "server_id_from_env"]


def server_id_from_env() -> str:
    return os.environ.get("SERVER_ID") or os.environ.get("HOSTNAME") or "unknown"


class HomeHandler(tornado.web.RequestHandler):
    def initialize(self, body: bytes) -> None:
        self._body = body

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(self._body)


class HeartbeatHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_status(200)
        self.finish()


class NotFoundHandler(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.finish({"message": f"<Error> '{self.request.path}' not found", "status": "failure"})


def make_app(server_id: str) -> tornado.web.Application:
    body = json.dumps({"message": f"Hello from Server: {server_id}", "status": "successful"}).encode()
    return tornado.web.Application(
        [
            (r"/home", HomeHandler, {"body": body}),
            (r"/heartbeat", HeartbeatHandler),
        ],
        default_handler_class=NotFoundHandler,
        log_function=lambda handler: None,  # one log line per request would dominate the CPU
    )


async def _run(host: str, port: int, ready_fd: int | None) -> None:
    server = tornado.httpserver.HTTPServer(make_app(server_id_from_env()))
    sock = bind_socket(host, port)
    server.add_sockets([sock])

    async def start() -> int:
        return int(sock.getsockname()[1])

    async def stop() -> None:
        server.stop()
        await server.close_all_connections()

    await serve_forever(start, stop, ready_fd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    die_with_parent()
    install_uvloop()
    asyncio.run(_run(args.host, args.port, args.ready_fd))
