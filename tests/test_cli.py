"""The ``idwall`` command line: init, serve errors, keys rotate, audit verify/export, device enroll, kill.

``device enroll`` and ``kill`` talk to a gateway. Here they talk to a small
aiohttp HTTPS server (real TLS, certificates from idwall.pki) that answers the
gateway's HTTP contract (DESIGN.md "HTTP surface") as a test double; the
end-to-end test against the real gateway lives with the gateway's tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import ssl
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import cbor2
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.serialization import pkcs12

from idwall import audit, cli, pki
from idwall.assertion import KeySet, key_id
from idwall.config import load_config
from idwall.encoding import b64url_encode, sha256
from idwall.store import open_store
from idwall.store.base import LedgerDraft

REPO = Path(__file__).resolve().parents[1]
NOW = datetime.now(timezone.utc)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m idwall ARGS`` in a subprocess, as a user would run it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IDWALL_")}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "idwall", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IDWALL_CONFIG", "IDWALL_CA", "IDWALL_DEBUG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def gwdir(tmp_path: Path) -> Path:
    directory = tmp_path / "gw"
    assert cli.main(["init", "--dir", str(directory), "--json", "--port", "9555"]) == 0
    return directory


# --------------------------------------------------------------------------- init


def test_init_json_is_one_object_with_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["init", "--dir", "rel/gw", "--json", "--admin", "alice", "--port", "9443"]) == 0
    out = capsys.readouterr().out
    answer = json.loads(out)  # exactly one JSON document, nothing else on stdout
    assert set(answer) == {"config", "bootstrap_code", "ca_pem", "device_ca_pem", "public_url"}
    directory = tmp_path / "rel" / "gw"
    assert answer["config"] == str(directory / "idwall.yaml")
    assert answer["ca_pem"] == str(directory / "certs" / "ca.pem")
    assert answer["device_ca_pem"] == str(directory / "certs" / "device-ca.pem")
    assert all(os.path.isabs(answer[k]) for k in ("config", "ca_pem", "device_ca_pem"))
    assert answer["public_url"] == "https://localhost:9443"
    assert len(answer["bootstrap_code"]) >= 43
    config = load_config(answer["config"])
    assert config.listen.port == 9443


def test_init_summary_shows_code_enroll_and_serve_commands(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "gw"
    assert cli.main(["init", "--dir", str(directory), "--port", "9444"]) == 0
    out = capsys.readouterr().out
    code_lines = [line for line in out.splitlines() if line.strip() and " " not in line.strip()]
    assert len(code_lines) == 1
    code = code_lines[0].strip()
    assert "ONCE" in out
    enroll = next(line for line in out.splitlines() if "idwall device enroll" in line)
    assert enroll.strip() == (f"idwall device enroll --gateway https://localhost:9444 --code={code} "
                              f"--ca {directory / 'certs' / 'ca.pem'}")
    # The printed command parses as printed, whatever the code looks like (it may start with "-").
    parsed = cli.build_parser().parse_args(shlex.split(enroll)[1:])
    assert parsed.code == code
    dash = cli.build_parser().parse_args(["device", "enroll", "--gateway", "https://x", "--code=-abc"])
    assert dash.code == "-abc"
    assert f"idwall serve --config {directory / 'idwall.yaml'}" in out
    for name in ("idwall.yaml", "ca.pem", "server.pem", "device-ca.pem", "assertion-key.pem", "ledger-key.pem",
                 "idwall.db"):
        assert name in out


def test_init_refuses_a_non_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "gw"
    directory.mkdir()
    (directory / "x").write_text("mine")
    assert cli.main(["init", "--dir", str(directory)]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in directory.iterdir()] == ["x"]
    assert cli.main(["init", "--dir", str(directory), "--force", "--json"]) == 0
    assert (directory / "x").read_text() == "mine"


@pytest.mark.parametrize("args", [["--port", "0"], ["--port", "70000"], ["--admin", ""], ["--port", "abc"]])
def test_init_bad_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    assert cli.main(["init", "--dir", str(tmp_path / "gw"), *args]) == 2
    assert not (tmp_path / "gw").exists()


# --------------------------------------------------------------------------- serve and errors


def test_serve_with_a_broken_config_prints_one_line_and_exits_2(tmp_path: Path, gwdir: Path) -> None:
    config = gwdir / "idwall.yaml"
    config.write_text(config.read_text().replace("idle_timeout: 1h", "idle_timeout: soon"))
    line = config.read_text().splitlines().index("  idle_timeout: soon") + 1
    proc = run_cli("serve", "--config", str(config))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"idwall.yaml:{line}:" in lines[0] and "session.idle_timeout" in lines[0]
    assert proc.stdout == ""


def test_serve_reads_idwall_config_from_the_environment(tmp_path: Path) -> None:
    proc = run_cli("serve", cwd=tmp_path, env={"IDWALL_CONFIG": str(tmp_path / "missing.yaml")})
    assert proc.returncode == 2
    assert "missing.yaml" in proc.stderr and "Traceback" not in proc.stderr
    # An explicit config never triggers the first-run init.
    assert not (tmp_path / ".idwall").exists()


def test_serve_without_config_initialises_dot_idwall_and_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8443))
        except OSError:
            pytest.fail("port 8443 (the first-run default of the README command) must be free for this test")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IDWALL_")}
    full_env["PYTHONPATH"] = str(REPO)
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", "idwall", "serve"], cwd=tmp_path, env=full_env,
                                stdout=subprocess.PIPE, stderr=err_file, text=True)
    try:
        seen = []
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("    idwall device enroll"):
                break
        out = "".join(seen)
        assert "Bootstrap code" in out and "ONCE" in out
        assert (tmp_path / ".idwall" / "idwall.yaml").is_file()
        assert stat.S_IMODE((tmp_path / ".idwall" / "certs" / "ledger-key.pem").stat().st_mode) == 0o600
        load_config(tmp_path / ".idwall" / "idwall.yaml")
        deadline = time.monotonic() + 20
        while "gateway.started" not in err_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "Traceback" not in err_path.read_text()
    # A second run uses the existing .idwall/idwall.yaml (here made invalid) instead of initialising again.
    config = tmp_path / ".idwall" / "idwall.yaml"
    config.write_text(config.read_text().replace("max_age: 12h", "max_age: forever"))
    second = run_cli("serve", cwd=tmp_path)
    assert second.returncode == 2 and "session.max_age" in second.stderr
    assert "Bootstrap code" not in second.stdout
    assert run_cli("serve", "--workers", "0", cwd=tmp_path).returncode == 2


def test_unexpected_error_is_one_line_unless_debug(gwdir: Path) -> None:
    (gwdir / "certs" / "assertion-key.pem").write_text("not a key")
    proc = run_cli("keys", "rotate", "--config", str(gwdir / "idwall.yaml"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("idwall: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    debug = run_cli("keys", "rotate", "--config", str(gwdir / "idwall.yaml"), env={"IDWALL_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_demo_gets_the_rest_of_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list[list[str]] = []
    stand_in = types.ModuleType("idwall.demo")
    stand_in.main = lambda argv: seen.append(argv) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "idwall.demo", stand_in)
    monkeypatch.delattr("idwall.demo", raising=False)
    assert cli.main(["demo", "--port", "5", "--help", "x"]) == 3
    assert seen == [["--port", "5", "--help", "x"]]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["kill", "--user", "a", "--all", "--reason", "r", "--gateway", "https://x",
                     "--token-file", "t"]) == 2
    assert cli.main(["--help"]) == 0


# --------------------------------------------------------------------------- keys and audit


def _cose_p256() -> bytes:
    public = pki.generate_p256_key().public_key().public_numbers()
    return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: public.x.to_bytes(32, "big"), -3: public.y.to_bytes(32, "big")})


def _append_genesis(config_path: Path) -> str:
    """Append a bootstrap entry, as the admin's enrollment would; returns the root fingerprint."""
    config = load_config(config_path)
    ledger_key = pki.load_private_key(config.ledger.key)
    cose = _cose_p256()

    async def go() -> None:
        store = await open_store(config.store, ledger_key=ledger_key)  # type: ignore[arg-type]
        try:
            await store.append_ledger(LedgerDraft(type="bootstrap", actor="admin", subject="admin", data={
                "user": "admin", "name": "admin", "email": "", "groups": ["admins"], "admin": True,
                "device_id": "dev-1", "device_name": "laptop", "credential_id": b64url_encode(b"cred-1"),
                "public_key": b64url_encode(cose), "alg": -7, "cert_sha256": b64url_encode(sha256(b"cert")),
                "rp_id": "localhost", "origins": [config.public_url], "user_verification": "required",
                "ledger_key": audit.ledger_public_jwk(ledger_key),  # type: ignore[arg-type]
            }))
        finally:
            await store.close()

    asyncio.run(go())
    return audit.root_fingerprint(cose)


def _ledger(config_path: Path) -> list[dict[str, Any]]:
    config = load_config(config_path)

    async def go() -> list[dict[str, Any]]:
        store = await open_store(config.store, ledger_key=None)
        try:
            return await store.ledger_entries()
        finally:
            await store.close()

    return asyncio.run(go())


def test_keys_rotate_changes_the_kid_and_records_it(gwdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = gwdir / "idwall.yaml"
    config = load_config(config_path)
    before = key_id(pki.load_private_key(config.assertion.key))  # type: ignore[arg-type]
    _append_genesis(config_path)
    capsys.readouterr()
    assert cli.main(["keys", "rotate", "--config", str(config_path)]) == 0
    kid = capsys.readouterr().out.strip()
    assert kid != before
    assert key_id(pki.load_private_key(config.assertion.key)) == kid  # type: ignore[arg-type]
    # The running gateway's key set: the new key signs, the old one is still published.
    keys = KeySet.load(config.assertion.key, now=time.time(), overlap=config.assertion.overlap)
    assert keys.current_kid == kid and set(keys.kids) == {kid, before}
    entry = _ledger(config_path)[-1]
    assert (entry["seq"], entry["type"], entry["actor"], entry["subject"]) == (2, "key.rotate", "system", kid)
    assert entry["data"] == {"kind": "assertion", "kid": kid, "previous_kid": before}
    assert audit.verify_ledger(_ledger(config_path)).ok


def test_keys_rotate_without_a_store_fails_before_rotating(gwdir: Path) -> None:
    config = load_config(gwdir / "idwall.yaml")
    key_before = config.assertion.key.read_bytes()
    (gwdir / "idwall.db").unlink()
    assert cli.main(["keys", "rotate", "--config", str(gwdir / "idwall.yaml")]) == 1
    assert config.assertion.key.read_bytes() == key_before
    assert not (gwdir / "idwall.db").exists()  # not silently re-created empty


def test_audit_on_an_empty_ledger(gwdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(gwdir / "idwall.yaml")
    capsys.readouterr()
    assert cli.main(["audit", "export", "--config", config]) == 0
    assert capsys.readouterr().out == ""
    # Without a genesis entry there is nothing that anchors trust: not OK.
    assert cli.main(["audit", "verify", "--config", config]) == 1
    out = capsys.readouterr().out
    assert out.startswith("ledger FAILED at seq 1: ") and "empty" in out


def test_audit_verify_export_and_tampering(gwdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(gwdir / "idwall.yaml")
    root = _append_genesis(gwdir / "idwall.yaml")
    for _ in range(2):
        assert cli.main(["keys", "rotate", "--config", config]) == 0
    capsys.readouterr()

    assert cli.main(["audit", "verify", "--config", config]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"ledger OK: 3 entries, root {root}, head 3:")
    head = out.rsplit("head ", 1)[1]

    assert cli.main(["audit", "verify", "--config", config, "--json", f"--root={root}"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["entries"] == 3 and result["root"] == root

    assert cli.main(["audit", "export", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    assert [json.loads(line) for line in lines] == _ledger(gwdir / "idwall.yaml")
    assert cli.main(["audit", "export", "--config", config, "--after", "2"]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [3]

    export = tmp_path / "ledger.jsonl"
    export.write_text("\n".join(lines) + "\n")
    assert cli.main(["audit", "verify", "--export", str(export), f"--root={root}", f"--head={head}"]) == 0
    capsys.readouterr()

    # A wrong root pin: the whole ledger could have been replaced.
    assert cli.main(["audit", "verify", "--export", str(export), f"--root={b64url_encode(sha256(b'x'))}"]) == 1
    assert capsys.readouterr().out.startswith("ledger FAILED at seq 1: ")
    # One in 64 fingerprints starts with '-': written with '=' it is still a value, not an option.
    assert cli.main(["audit", "verify", "--export", str(export), "--root=-" + "A" * 42]) == 1
    assert capsys.readouterr().out.startswith("ledger FAILED at seq 1: ")

    # Truncation at the end is caught by the head pin.
    export.write_text("\n".join(lines[:2]) + "\n")
    assert cli.main(["audit", "verify", "--export", str(export), f"--head={head}"]) == 1
    assert capsys.readouterr().out.startswith("ledger FAILED at seq 3: ")

    # An edited entry.
    tampered = json.loads(lines[1])
    tampered["data"]["previous_kid"] = "someone-else"
    export.write_text("\n".join([lines[0], json.dumps(tampered), lines[2]]) + "\n")
    assert cli.main(["audit", "verify", "--export", str(export)]) == 1
    assert capsys.readouterr().out.startswith("ledger FAILED at seq 2: ")

    # A re-sealed entry under another ledger key, against the config's pinned key.
    other = pki.generate_p256_key()
    resealed = audit.seal(json.loads(lines[2]), prev=audit.b64url_decode(json.loads(lines[1])["hash"]), key=other)
    key_file = tmp_path / "ledger-pub.pem"
    pki.write_private_key(key_file, pki.load_private_key(gwdir / "certs" / "ledger-key.pem"))
    export.write_text("\n".join([lines[0], lines[1], json.dumps(resealed)]) + "\n")
    assert cli.main(["audit", "verify", "--export", str(export), "--ledger-key", str(key_file)]) == 1
    assert capsys.readouterr().out.startswith("ledger FAILED at seq 3: ")

    # Not JSON at all.
    export.write_text(lines[0] + "\n{not json\n")
    assert cli.main(["audit", "verify", "--export", str(export)]) == 1
    assert "line 2" in capsys.readouterr().err


def test_audit_verify_tampered_store(gwdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    _append_genesis(gwdir / "idwall.yaml")
    assert cli.main(["keys", "rotate", "--config", str(gwdir / "idwall.yaml")]) == 0
    db = sqlite3.connect(gwdir / "idwall.db")
    entry = json.loads(db.execute("SELECT entry FROM ledger WHERE seq = 2").fetchone()[0])
    entry["actor"] = "mallory"
    db.execute("UPDATE ledger SET entry = ? WHERE seq = 2", (json.dumps(entry),))
    db.commit()
    db.close()
    capsys.readouterr()
    assert cli.main(["audit", "verify", "--config", str(gwdir / "idwall.yaml")]) == 1
    assert capsys.readouterr().out.startswith("ledger FAILED at seq 2: ")


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
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        gateway.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
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
