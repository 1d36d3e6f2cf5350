"""Shared fixtures: the sample stores, an app built from them, and a real gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from verdict.app import App, build_app, start, stop
from verdict.client import AsyncVerdictClient
from verdict.config import Settings
from verdict.transport.server import VerdictServer

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"


@pytest.fixture
def lending_app() -> App:
    """The sample policies on the embedded in-memory store."""
    return build_app(Settings(stores=POLICIES, default_store="lending"))


@pytest.fixture
async def lending_server(lending_app: App) -> AsyncIterator[VerdictServer]:
    """A real gRPC server on a free loopback port."""
    app = replace(
        lending_app, settings=lending_app.settings.model_copy(update={"listen": "127.0.0.1:0"})
    )
    server = await start(app)
    yield server
    await stop(app, 0)


@pytest.fixture
async def client(lending_server: VerdictServer) -> AsyncIterator[AsyncVerdictClient]:
    """An async client connected to ``lending_server``."""
    async with AsyncVerdictClient(f"127.0.0.1:{lending_server.port}") as c:
        yield c
