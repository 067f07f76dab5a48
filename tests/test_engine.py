"""The local engine launcher: an engine is ready when *it* listens, not when its port answers."""

from __future__ import annotations

import asyncio

import pytest

from conftest import free_port
from dslab.engine import EngineError, LocalEngine


def test_an_engine_that_lost_its_port_is_not_taken_for_the_one_that_won(tmp_path):
    """Two engines that draw the same port: the loser must fail, not hand its caller the
    winner's URI (a shard server would then keep its rows in another server's engine)."""
    port = free_port()
    winner = LocalEngine(tmp_path / "a", port=port, start_timeout=10)
    loser = LocalEngine(tmp_path / "b", port=port, start_timeout=10)
    asyncio.run(winner.start())
    try:
        with pytest.raises(EngineError):
            asyncio.run(loser.start())
        assert loser.proc is not None and loser.proc.poll() is not None
    finally:
        loser.stop()
        winner.stop()
