"""The engine's wire-test bed: a real gateway (real TLS, real SQLite) in front of the app upstream of
:mod:`tests.helpers.upstream_app`, on routes that exercise timeouts, limits, WebSockets and a closed port.

The fixtures that build it (``app_upstream``, ``proxy``, ``fresh_upstream``) are in ``tests/conftest.py``;
the engine's test files (``test_engine_io``, ``test_engine_edges``, ``test_engine_upstream``...) share them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from idwall.testing.fixtures import DeviceFiles

from .gateway import GatewayUnderTest, start_test_gateway
from .http_wire import exchange, field_key, tls_context
from .upstream_app import AppUpstream, serve_app, upstream_app

__all__ = ["ROUTES", "Proxy", "closed_port", "json_ok", "proxy_config", "reset", "running_app_upstream",
           "running_proxy", "values"]

ROUTES = """routes:
  - name: app
    match: {{path: /}}
    upstream: {up}/base
    websockets: true
    max_body: 64m
  - name: quick
    match: {{path: /quick}}
    upstream: {up}/base
    timeout: 1s
  - name: nows
    match: {{path: /nows}}
    upstream: {up}/base
  - name: small
    match: {{path: /small}}
    upstream: {up}/base
  - name: closed
    match: {{path: /closed}}
    upstream: http://127.0.0.1:{closed}
    websockets: true
"""


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proxy:
    """A gateway in front of the app upstream, and a device with a live session on it."""

    gateway: GatewayUnderTest
    upstream: AppUpstream
    device: DeviceFiles

    @property
    def url(self) -> str:
        return self.gateway.url

    def client(self, **kwargs: Any) -> aiohttp.ClientSession:
        return self.gateway.session(self.device, **kwargs)

    def context(self) -> ssl.SSLContext:
        return tls_context(self.gateway.init["ca_pem"], self.device.cert_path, self.device.key_path)

    async def raw(self, request: bytes, **kwargs: Any) -> Any:
        return await exchange(self.gateway.port, self.context(), request, **kwargs)


def proxy_config(up: str, *, limits: dict[str, str] | None = None) -> Callable[[str], str]:
    """A config edit: :data:`ROUTES` in front of ``up``, and ``limits.<key>: <value>`` for each of ``limits``."""
    def edit(text: str) -> str:
        for key, value in (limits or {}).items():
            text = "\n".join(f"  {key}: {value}" if line.startswith(f"  {key}:") else line for line in text.split("\n"))
        return text[: text.index("\nroutes:") + 1] + ROUTES.format(up=up, closed=closed_port())
    return edit


@contextlib.asynccontextmanager
async def running_app_upstream() -> AsyncIterator[AppUpstream]:
    """The app upstream, served on a free port of 127.0.0.1 while the block runs."""
    up = AppUpstream()
    runner, port = await serve_app(upstream_app(up))
    up.url = f"http://127.0.0.1:{port}"
    try:
        yield up
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_proxy(tmp: Path, up: AppUpstream) -> AsyncIterator[Proxy]:
    """A gateway on :data:`ROUTES` (``limits.body_timeout: 2s``) and alice's device, while the block runs."""
    gateway = await start_test_gateway(tmp, None, edit=proxy_config(up.url, limits={"body_timeout": "2s"}))
    try:
        yield Proxy(gateway, up, await gateway.device("alice"))
    finally:
        await gateway.running.stop(drain=1)


def reset(up: AppUpstream) -> None:
    """Forget what the upstream saw and re-arm its events (between tests sharing it)."""
    up.seen.clear()
    up.release_stream.clear()
    up.first_upload_chunk.clear()
    up.stream_cancelled.clear()
    up.ws_closed_with = None


def values(headers: list[Any], name: str) -> list[str]:
    """The values of the field ``name`` (any spelling) in ``[(name, value), ...]``."""
    return [v for k, v in headers if field_key(k) == field_key(name)]


def json_ok(answer: Any) -> dict[str, Any]:
    """The JSON body of a 200 :class:`~tests.helpers.http_wire.Answer` (anything else fails, described)."""
    assert answer.status == 200, answer.describe()
    return json.loads(answer.body)
