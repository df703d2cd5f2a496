"""The commands that talk to a gateway (:mod:`idwall.cli.client`): device enroll and kill.

They talk to a small aiohttp HTTPS server (real TLS, certificates from idwall.pki) that answers the gateway's
HTTP contract (DESIGN.md "HTTP surface") as a test double; the end-to-end test against the real gateway lives
with the gateway's tests.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import stat
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.serialization import pkcs12

from idwall import cli, pki
from tests.helpers.cli import unset_idwall_env
from tests.helpers.upstream_app import serve_app


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    unset_idwall_env(monkeypatch)


# --------------------------------------------------------------------------- a gateway double over real TLS


def _problem(status: int, title: str, detail: str) -> web.Response:
    return web.json_response({"type": "https://idwall.dev/problems/x", "title": title, "status": status,
                              "detail": detail}, status=status, content_type="application/problem+json")


@dataclass
class FakeGateway:
    """The gateway's enrollment and kill endpoints, over HTTPS with a certificate from our own CA."""

    certs: Path
    scenario: str = "active"
    polls_before_done: int = 2
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    issued: list[Any] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.certs / "ca.pem")

    async def begin(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(("POST", request.path, body))
        if set(body) != {"code", "csr_pem", "device_name"}:
            return _problem(400, "Bad request", f"unexpected fields {sorted(body)}")
        if body["code"] != "good-code":
            return _problem(410, "Expired or already used", "this code \x1b[31mexpired\x1b[0m\nor was used")
        self.csr = pki.check_csr(body["csr_pem"])
        self.polls = 0
        return web.json_response({"enrollment_id": "enr_123", "options": {"challenge": "x"},
                                  "enroll_url": f"{self.url}/idwall/enroll/enr_123"})

    async def poll(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(("GET", request.path, None))
        if request.match_info["id"] != "enr_123":
            return _problem(404, "Not found", "no such enrollment")
        self.polls += 1
        if self.polls <= self.polls_before_done:
            return web.json_response({"status": "begun"})
        scenario = self.scenario
        if scenario == "pending_then_active":
            if self.polls <= self.polls_before_done + 2:
                return web.json_response({"status": "pending_approval"})
            scenario = "active"
        if scenario == "rejected":
            return web.json_response({"status": "rejected", "detail": "an administrator rejected this device"})
        if scenario == "revoked":  # a kill with revoke_devices while the device waited
            return web.json_response({"status": "revoked"})
        if scenario == "gone":
            return _problem(410, "Expired or already used", "the enrollment expired")
        ca_cert = pki.load_cert(self.certs / "device-ca.pem")
        ca_key = pki.load_private_key(self.certs / "device-ca-key.pem")
        csr = self.csr
        if scenario == "wrong_key":
            other = pki.generate_p256_key()
            csr = pki.check_csr(pki.make_csr(other, "other"))
        cert = pki.issue_device_cert(ca_cert=ca_cert, ca_key=ca_key, csr=csr, device_id="dev_1",
                                     now=datetime.now(timezone.utc), ttl=3600)
        self.issued.append(cert)
        return web.json_response({"status": "active", "device_id": "dev_1", "certificate_pem": pki.cert_pem(cert),
                                  "ca_pem": (self.certs / "ca.pem").read_text()})

    async def kill(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(("POST", request.path, {"body": body, "auth": request.headers.get("Authorization")}))
        if request.headers.get("Authorization") != "Bearer kill-token-1":
            return _problem(401, "Login required", "the token is not valid")
        if body["scope"] == "group" and body["target"] == "nobody":
            return web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html")
        return web.json_response({"sessions_revoked": 2, "devices_revoked": 1 if body["revoke_devices"] else 0,
                                  "connections_closed": 3, "audit_seq": 42})


@pytest.fixture(scope="module")
def gateway_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fake-gw")
    assert cli.main(["init", "--dir", str(directory / "gw"), "--json"]) == 0
    return directory / "gw" / "certs"


@pytest.fixture
def fake(gateway_certs: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGateway]:
    monkeypatch.setattr("idwall.cli.client.POLL_INTERVAL", 0.02)
    gateway = FakeGateway(gateway_certs)
    app = web.Application()
    app.router.add_post("/idwall/api/enroll/begin", gateway.begin)
    app.router.add_get("/idwall/api/enroll/{id}", gateway.poll)
    app.router.add_post("/idwall/api/admin/kill", gateway.kill)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(gateway_certs / "server.pem", gateway_certs / "server-key.pem")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> web.AppRunner:
        runner, gateway.port = await serve_app(app, ctx)
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield gateway
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _enroll(fake: FakeGateway, out: Path, *extra: str, code: str = "good-code") -> int:
    return cli.main(["device", "enroll", "--gateway", fake.url, "--code", code, "--out", str(out),
                     "--ca", fake.ca, "--name", "laptop", *extra])


def test_device_enroll_happy_path(fake: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "device"
    assert _enroll(fake, out) == 0
    captured = capsys.readouterr()
    assert f"Open {fake.url}/idwall/enroll/enr_123 in a browser on this device to create your passkey" \
        in captured.out
    assert "waiting for the passkey… 0s" in captured.err  # not a TTY: plain lines
    for name in ("device.pem", "device-key.pem", "device.p12", "ca.pem"):
        assert str(out / name) in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "device-key.pem", "device.p12", "device.pem"]
    assert [p.name for p in tmp_path.iterdir()] == ["device"]  # no temp dir left
    assert stat.S_IMODE((out / "device-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "device.p12").stat().st_mode) == 0o600

    key = pki.load_private_key(out / "device-key.pem")
    cert = pki.load_cert(out / "device.pem")
    assert cert.public_key() == key.public_key() == fake.csr.public_key
    assert (out / "ca.pem").read_text() == (fake.certs / "ca.pem").read_text()
    p12_key, p12_cert, p12_cas = pkcs12.load_key_and_certificates((out / "device.p12").read_bytes(), None)
    assert p12_cert == cert and p12_key is not None and p12_key.public_key() == key.public_key()
    begin = fake.requests[0]
    assert begin[2]["device_name"] == "laptop" and begin[2]["code"] == "good-code"
    # The device's TLS key works with the gateway CA file for a real mTLS client context.
    ssl.create_default_context(cafile=str(out / "ca.pem")).load_cert_chain(out / "device.pem", out / "device-key.pem")


def test_device_enroll_waits_through_pending_approval(fake: FakeGateway, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    fake.scenario = "pending_then_active"
    assert _enroll(fake, tmp_path / "device") == 0
    err = capsys.readouterr().err
    assert "waits for approval" in err
    assert (tmp_path / "device" / "device.pem").is_file()


@pytest.mark.parametrize("scenario, message", [
    ("rejected", "enrollment rejected: an administrator rejected this device"),
    ("revoked", "enrollment revoked: the enrollment was revoked"),
    ("gone", "Expired or already used: the enrollment expired (HTTP 410)"),
    ("wrong_key", "different key"),
])
def test_device_enroll_failures_leave_no_key(fake: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             scenario: str, message: str) -> None:
    fake.scenario = scenario
    assert _enroll(fake, tmp_path / "device") == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temp dir with the key


def test_device_enroll_problem_is_one_clean_line(fake: FakeGateway, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert _enroll(fake, tmp_path / "device", code="stale") == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "\x1b" not in err
    assert lines[0].startswith("idwall: enrollment refused: Expired or already used: this code")
    assert "(HTTP 410)" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_device_enroll_times_out(fake: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake.polls_before_done = 10**6
    assert _enroll(fake, tmp_path / "device", "--timeout", "0.2") == 1
    assert "no passkey after" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_device_enroll_verifies_the_gateway_certificate(fake: FakeGateway, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["device", "enroll", "--gateway", fake.url, "--code", "good-code", "--out", str(tmp_path / "d")]
    # No --ca, no IDWALL_CA: the system store does not know our dev CA.
    assert cli.main(args) == 1
    assert "--ca" in capsys.readouterr().err
    # The device CA is not the gateway CA: trusting it must not work either.
    assert cli.main([*args, "--ca", str(fake.certs / "device-ca.pem")]) == 1
    assert "not trusted" in capsys.readouterr().err
    assert fake.requests == []  # the code never left the machine
    monkeypatch.setenv("IDWALL_CA", fake.ca)
    assert cli.main(args) == 0


@pytest.mark.parametrize("args, message", [
    (["--gateway", "http://localhost:1", "--code", "c"], "https://"),
    (["--gateway", "localhost:8443", "--code", "c"], "https://"),
    (["--gateway", "https://user:pw@localhost", "--code", "c"], "plain"),
    (["--gateway", "https://localhost", "--code", " "], "--code"),
    (["--gateway", "https://localhost", "--user", "Bob Smith"], "--user must be a user id"),
    (["--gateway", "https://localhost", "--code", "c", "--name", "x" * 65], "--name"),
    (["--gateway", "https://localhost", "--code", "c", "--timeout", "0"], "--timeout"),
    (["--gateway", "https://localhost", "--code", "c", "--ca", "/nonexistent/ca.pem"], "--ca"),
])
def test_device_enroll_argument_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           args: list[str], message: str) -> None:
    assert cli.main(["device", "enroll", "--out", str(tmp_path / "d"), *args]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_device_enroll_never_overwrites_an_enrolled_device(fake: FakeGateway, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "device"
    out.mkdir()
    (out / "device-key.pem").write_text("precious")
    assert _enroll(fake, out) == 2
    assert "already holds device-key.pem" in capsys.readouterr().err
    assert (out / "device-key.pem").read_text() == "precious"
    assert fake.requests == []  # checked before the code is spent


def test_device_enroll_gateway_unreachable(gateway_certs: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert cli.main(["device", "enroll", "--gateway", f"https://127.0.0.1:{port}", "--code", "c",
                     "--out", str(tmp_path / "d"), "--ca", str(gateway_certs / "ca.pem")]) == 1
    assert "cannot reach the gateway" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- kill


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("kill-token-1\n")
    return path


def _kill(fake: FakeGateway, token_file: Path, *args: str) -> int:
    return cli.main(["kill", *args, "--gateway", fake.url, "--token-file", str(token_file), "--ca", fake.ca])


def test_kill_user(fake: FakeGateway, token_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _kill(fake, token_file, "--user", "alice", "--reason", "phished", "--revoke-devices") == 0
    assert capsys.readouterr().out.strip() == \
        "cut 3 connections: 2 sessions revoked, 1 devices revoked (audit seq 42)"
    method, path, seen = fake.requests[-1]
    assert (method, path) == ("POST", "/idwall/api/admin/kill")
    assert seen["auth"] == "Bearer kill-token-1"  # stripped of the file's newline
    assert seen["body"] == {"scope": "user", "target": "alice", "reason": "phished", "revoke_devices": True}


@pytest.mark.parametrize("flag, scope", [("--device", "device"), ("--session", "session"), ("--group", "group")])
def test_kill_scopes(fake: FakeGateway, token_file: Path, capsys: pytest.CaptureFixture[str],
                     flag: str, scope: str) -> None:
    assert _kill(fake, token_file, flag, "t-1", "--reason", "r", "--json") == 0
    assert json.loads(capsys.readouterr().out)["audit_seq"] == 42
    assert fake.requests[-1][2]["body"] == {"scope": scope, "target": "t-1", "reason": "r", "revoke_devices": False}


def test_kill_all_needs_confirmation(fake: FakeGateway, token_file: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("kill all\n"))  # not a TTY, even with the right words
    assert _kill(fake, token_file, "--all", "--reason", "breach") == 2
    assert "--yes" in capsys.readouterr().err
    assert fake.requests == []

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("kill al\n"))
    assert _kill(fake, token_file, "--all", "--reason", "breach") == 2
    assert "not confirmed" in capsys.readouterr().err
    assert fake.requests == []

    monkeypatch.setattr(sys, "stdin", Terminal("kill all\n"))
    assert _kill(fake, token_file, "--all", "--reason", "breach") == 0
    assert fake.requests[-1][2]["body"] == {"scope": "all", "target": None, "reason": "breach",
                                            "revoke_devices": False}
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert _kill(fake, token_file, "--all", "--reason", "breach", "--yes") == 0
    assert len(fake.requests) == 2


def test_kill_bad_token_shows_the_problem(fake: FakeGateway, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    assert _kill(fake, wrong, "--user", "alice", "--reason", "r") == 1
    err = capsys.readouterr().err.strip()
    assert err == "idwall: kill refused: Login required: the token is not valid (HTTP 401)"


def test_kill_non_json_answer(fake: FakeGateway, token_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _kill(fake, token_file, "--group", "nobody", "--reason", "r") == 1
    err = capsys.readouterr().err
    assert "HTTP 502" in err and "JSON" in err and "<html>" not in err


@pytest.mark.parametrize("content, message", [("", "empty"), ("two words", "without spaces"),
                                              ("tok\x00en", "control")])
def test_kill_token_file_validation(fake: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    content: str, message: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    assert _kill(fake, path, "--user", "alice", "--reason", "r") == 2
    err = capsys.readouterr().err
    assert "--token-file" in err and message in err
    assert fake.requests == []


@pytest.mark.parametrize("args, message", [
    (["--user", "alice", "--reason", "  "], "--reason"),
    (["--user", "", "--reason", "r"], "--user"),
    (["--user", "alice", "--reason", "r", "--gateway", "http://localhost"], "https://"),
])
def test_kill_argument_validation(token_file: Path, capsys: pytest.CaptureFixture[str],
                                  args: list[str], message: str) -> None:
    base = ["kill", "--token-file", str(token_file)]
    if "--gateway" not in args:
        base += ["--gateway", "https://localhost:1"]
    assert cli.main([*base, *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_token_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["kill", "--user", "a", "--reason", "r", "--gateway", "https://localhost:1",
                     "--token-file", str(tmp_path / "none")]) == 2
    assert "cannot read --token-file" in capsys.readouterr().err
