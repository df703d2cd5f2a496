"""A real gateway for tests (``idwall init`` + ``start_gateway``: real TLS, real SQLite) and a real echo upstream."""

from __future__ import annotations

import asyncio
import json
from ssl import SSLContext
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
from aiohttp import web

from idwall.config import Config, load_config
from idwall.testing.fixtures import DeviceFiles, client_ssl_context, free_port, init_gateway_dir, register_device_directly
from idwall.web.server import RunningGateway, start_gateway

from .upstream_app import serve_app

__all__ = ["ORG_WIDE_PLAYBOOK", "GatewayUnderTest", "Upstream", "echo_upstream", "running_gateway",
           "start_test_gateway"]

#: ``extra_yaml`` of a gateway with one playbook: every session cut (privileged users first), break-glass excluded
ORG_WIDE_PLAYBOOK = """
incident:
  playbooks:
    org-wide:
      trigger: credentials seen for sale
      exclude: {groups: [break-glass]}
      stages:
        - {scope: all, steps: [kill]}
"""


async def _echo(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"hello": request.headers.get("X-IDWall-Assertion") is not None}))
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
        return ws
    body = await request.read()
    return web.json_response({
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_len": len(body),
    })


@dataclass
class Upstream:
    url: str
    runner: web.AppRunner


@asynccontextmanager
async def echo_upstream() -> AsyncIterator[Upstream]:
    """An upstream that echoes what it received (headers included) as JSON, and a WebSocket echo."""
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner, port = await serve_app(app)
    try:
        yield Upstream(f"http://127.0.0.1:{port}", runner)
    finally:
        await runner.cleanup()


@dataclass
class GatewayUnderTest:
    """A running gateway and what a test needs to talk to it."""

    dir: Path
    init: dict[str, Any]
    config: Config
    running: RunningGateway

    @property
    def url(self) -> str:
        return self.config.public_url

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.running.node.store

    def ssl(self, device: DeviceFiles | None = None) -> SSLContext:
        """A client TLS context trusting the gateway CA, presenting ``device``'s certificate when given."""
        if device is None:
            return client_ssl_context(self.init["ca_pem"])
        return client_ssl_context(self.init["ca_pem"], device.cert_path, device.key_path)

    def session(self, device: DeviceFiles | None = None, **kwargs: Any) -> aiohttp.ClientSession:
        """An HTTP client (one keep-alive connection) for ``device``."""
        connector = aiohttp.TCPConnector(ssl=self.ssl(device), limit=1)
        return aiohttp.ClientSession(connector=connector, **kwargs)

    async def device(self, user_id: str, **kwargs: Any) -> DeviceFiles:
        """A device with a live session registered straight in the store (the proxy tests' seam)."""
        gw = self.running.node
        return await register_device_directly(
            gw.store, device_ca_cert=gw.device_ca_cert, device_ca_key=gw.device_ca_key,
            out_dir=self.dir / "devices", user_id=user_id, **kwargs)


async def start_test_gateway(tmp_path: Path, upstream_url: str | None, *, extra_yaml: str = "",
                             edit: Any = None) -> GatewayUnderTest:
    """``idwall init`` in ``tmp_path/gw`` (``extra_yaml`` appended, ``edit`` applied to the config text), started."""
    port = free_port()
    directory = tmp_path / "gw"
    info = await asyncio.to_thread(init_gateway_dir, directory, port=port, upstream=upstream_url,
                                   extra_yaml=extra_yaml)
    if edit is not None:
        path = Path(info["config"])
        path.write_text(edit(path.read_text()))
    config = load_config(info["config"])
    running = await start_gateway(config)
    return GatewayUnderTest(directory, info, config, running)


@asynccontextmanager
async def running_gateway(tmp_path: Path, upstream_url: str | None, **kwargs: Any) -> AsyncIterator[GatewayUnderTest]:
    """:func:`start_test_gateway`, stopped (with a short drain) when the block ends."""
    gut = await start_test_gateway(tmp_path, upstream_url, **kwargs)
    try:
        yield gut
    finally:
        await gut.running.stop(drain=1)
