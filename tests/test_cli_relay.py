"""idwall.cli.relay: ``idwall relay`` flags: usage errors name the flag, defaults follow the JWKS URL and
the listen address, and the running relay says where it listens."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

import pytest

from idwall.cli.parser import build_parser
from idwall.cli.relay import settings_from_args
from idwall.relay import LOOPBACK
from idwall.testing.fixtures import free_port
from tests.helpers.cli import run_cli, spawn_cli

BASE = ["relay", "--listen", "127.0.0.1:6432", "--upstream", "tcp://127.0.0.1:5432", "--jwks",
        "https://gw.example:8443/.well-known/idwall/jwks.json", "--audience", "db"]


def _args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(BASE + list(extra))


def test_defaults_come_from_the_jwks_url_and_the_listen_address() -> None:
    settings, verifier = settings_from_args(_args())
    assert (verifier.issuer, verifier.audience) == ("https://gw.example:8443", "db")
    assert (settings.htu, settings.allow_from) == ("tcp://127.0.0.1:6432", LOOPBACK)
    assert (settings.upstream_host, settings.upstream_port) == ("127.0.0.1", 5432)


def test_flags_override_the_defaults() -> None:
    settings, verifier = settings_from_args(_args("--allow-from", "10.0.0.10", "--allow-from", "10.1.0.0/16",
                                                  "--htu", "tcp://db-relay.internal:6432",
                                                  "--issuer", "https://idwall.example"))
    assert settings.allow_from == (ipaddress.ip_network("10.0.0.10/32"), ipaddress.ip_network("10.1.0.0/16"))
    assert (settings.htu, verifier.issuer) == ("tcp://db-relay.internal:6432", "https://idwall.example")


@pytest.mark.parametrize("replace, words", [
    (("--listen", "6432"), "--listen must be HOST:PORT"),
    (("--upstream", "127.0.0.1:5432"), "--upstream must be tcp://host:port"),
    (("--jwks", "http://gw/.well-known/idwall/jwks.json"), "--jwks must be the gateway's https://"),
    (("--allow-from", "everyone"), "--allow-from must be an address or CIDR"),
    (("--htu", "db:6432"), "--htu must be tcp://host:port"),
])
def test_usage_errors_name_the_flag(replace: tuple[str, str], words: str) -> None:
    args = list(BASE)
    if replace[0] in args:
        args[args.index(replace[0]) + 1] = replace[1]
    else:
        args += list(replace)
    result = run_cli(*args)
    assert result.returncode == 2 and words in result.stderr, result.stderr


async def test_the_running_relay_logs_where_it_listens(tmp_path: Path) -> None:
    port = free_port()
    args = list(BASE)
    args[args.index("--listen") + 1] = f"127.0.0.1:{port}"
    relay = await spawn_cli(*args, output=tmp_path / "relay.log")
    try:
        await relay.wait_for('"relay.listening"')
        (line,) = relay.json_lines("relay.listening")
        assert (line["listen"], line["audience"], line["htu"]) == (f"127.0.0.1:{port}", "db", f"tcp://127.0.0.1:{port}")
    finally:
        await relay.stop()
    assert relay.process.returncode == 0
