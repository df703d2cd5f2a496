"""idwall.cli.connect: ``idwall connect`` as a user runs it: usage errors name the flag, and each local
connection becomes one tunnel (or, when the gateway refuses, one printed line and a closed local socket)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from idwall.testing.fixtures import DeviceFiles, free_port
from tests.helpers.cli import run_cli, spawn_cli
from tests.helpers.gateway import running_gateway
from tests.helpers.tcp import closed_within, tcp_routes, tcp_service


def _device_dir(tmp_path: Path, device: DeviceFiles, ca: str) -> Path:
    directory = tmp_path / "device"
    directory.mkdir()
    shutil.copy(device.cert_path, directory / "device.pem")
    shutil.copy(device.key_path, directory / "device-key.pem")
    shutil.copy(ca, directory / "ca.pem")
    return directory


@pytest.mark.parametrize("args, words", [
    (["db", "--gateway", "http://localhost:8443"], "--gateway must be an https:// URL"),
    (["db/../x", "--gateway", "https://localhost:8443"], "ROUTE must be the name of a TCP route"),
    (["db", "--gateway", "https://localhost:8443", "--listen", "nowhere"], "--listen must be HOST:PORT"),
    (["db", "--gateway", "https://localhost:8443", "--dir", "/nonexistent"], "run idwall device enroll"),
])
def test_usage_errors_name_the_flag(args: list[str], words: str) -> None:
    result = run_cli("connect", *args)
    assert result.returncode == 2 and words in result.stderr, result.stderr


async def test_each_local_connection_is_a_tunnel_and_refusals_are_printed(tmp_path: Path) -> None:
    async with tcp_service() as service:
        edit = tcp_routes(f"{{name: db, upstream: 'tcp://127.0.0.1:{service.port}'}}",
                          f"{{name: dba, upstream: 'tcp://127.0.0.1:{service.port}', allow: {{groups: [dba]}}}}")
        async with running_gateway(tmp_path, None, edit=edit) as gw:
            directory = _device_dir(tmp_path, await gw.device("alice"), gw.init["ca_pem"])
            outputs = []
            for route in ("db", "dba", "nosuch"):
                port = free_port()
                spawned = await spawn_cli("connect", route, "--gateway", gw.url, "--listen", f"127.0.0.1:{port}",
                                          "--dir", str(directory), output=tmp_path / f"{route}.log")
                outputs.append((route, port, spawned))
            try:
                for route, port, spawned in outputs:
                    await spawned.wait_for("listening on")
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    if route == "db":
                        for word in (b"one", b"two"):
                            writer.write(word)
                            assert await asyncio.wait_for(reader.readexactly(len(word)), 10) == word
                        second_reader, second_writer = await asyncio.open_connection("127.0.0.1", port)
                        second_writer.write(b"3")
                        assert await asyncio.wait_for(second_reader.readexactly(1), 10) == b"3"
                        assert len(service.received) == 2  # one tunnel per local connection
                        continue
                    assert await closed_within(reader, 10)
                    expected = "refused (403 Forbidden)" if route == "dba" else "refused (404 Not found)"
                    await spawned.wait_for(expected)
            finally:
                for _, _, spawned in outputs:
                    await spawned.stop()
            assert len(service.received) == 2


async def test_without_a_session_it_prints_the_login_page_and_gives_up_after_the_timeout(tmp_path: Path) -> None:
    async with tcp_service() as service:
        edit = tcp_routes(f"{{name: db, upstream: 'tcp://127.0.0.1:{service.port}'}}")
        async with running_gateway(tmp_path, None, edit=edit) as gw:
            directory = _device_dir(tmp_path, await gw.device("alice", with_session=False), gw.init["ca_pem"])
            port = free_port()
            spawned = await spawn_cli("connect", "db", "--gateway", gw.url, "--listen", f"127.0.0.1:{port}",
                                      "--dir", str(directory), "--timeout", "1.5", output=tmp_path / "connect.log")
            try:
                await spawned.wait_for("listening on")
                reader, _ = await asyncio.open_connection("127.0.0.1", port)
                await spawned.wait_for(f"open {gw.url}/idwall/login?next=/idwall/tunnel/db")
                assert not await closed_within(reader, 0.5)  # the local connection waits for the login
                assert await closed_within(reader, 10)
                await spawned.wait_for("no login within 1.5s")
            finally:
                await spawned.stop()
            assert service.received == []
