"""The commands on a gateway directory (:mod:`idwall.cli.local`): init, serve, keys rotate, audit verify/export."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cbor2
import pytest

from idwall import audit, cli, pki
from idwall.assertion import KeySet, key_id
from idwall.cli.local import listen_address
from idwall.config import load_config
from idwall.encoding import b64url_decode, b64url_encode, sha256
from idwall.store import open_store
from idwall.model import LedgerDraft
from idwall.testing.fixtures import free_port
from tests.helpers.cli import REPO, init_gwdir, run_cli, spawn_cli, unset_idwall_env
from tests.helpers.store import closed_port, new_schema


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    unset_idwall_env(monkeypatch)


@pytest.fixture
def gwdir(tmp_path: Path) -> Path:
    return init_gwdir(tmp_path)


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


async def test_init_with_a_postgresql_store_prints_it_without_its_password(
        tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = (await new_schema(postgres_url)).replace("postgres@", "postgres:hunter2@")
    assert cli.main(["init", "--dir", str(tmp_path / "a"), "--store", url]) == 0
    out = capsys.readouterr().out
    assert "store         postgresql://postgres:***@127.0.0.1:5432/" in out and "hunter2" not in out
    assert load_config(tmp_path / "a" / "idwall.yaml").store == url
    # a second gateway on the same database: refused (exit 2, one line), then replaced with --force
    assert cli.main(["init", "--dir", str(tmp_path / "b"), "--store", url, "--json"]) == 2
    err = capsys.readouterr().err
    assert "already holds a gateway; use --force" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
    assert cli.main(["init", "--dir", str(tmp_path / "b"), "--store", url, "--force", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"config", "bootstrap_code", "ca_pem", "device_ca_pem",
                                                        "public_url"}


def test_init_with_an_unreachable_postgresql_store_says_why_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with closed_port() as port:
        code = cli.main(["init", "--dir", str(tmp_path / "gw"), "--store",
                         f"postgresql://postgres:hunter2@127.0.0.1:{port}/idwall"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot initialise the PostgreSQL store" in err and "Connect call failed" in err
    assert "hunter2" not in err and not (tmp_path / "gw").exists()


@pytest.mark.parametrize("args", [["--port", "0"], ["--port", "70000"], ["--admin", ""], ["--port", "abc"],
                                  ["--store", "mysql://u:pw@db/x"], ["--store", "sqlite:///x.db"]])
def test_init_bad_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    assert cli.main(["init", "--dir", str(tmp_path / "gw"), *args]) == 2
    assert not (tmp_path / "gw").exists()


# --------------------------------------------------------------------------- serve


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
    resealed = audit.seal(json.loads(lines[2]), prev=b64url_decode(json.loads(lines[1])["hash"]), key=other)
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


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8443", ("127.0.0.1", 8443)), ("0.0.0.0:0", ("0.0.0.0", 0)), ("[::1]:9443", ("::1", 9443)),
    ("gw.internal:8443", ("gw.internal", 8443)),
])
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert listen_address(text) == expected


@pytest.mark.parametrize(("text", "problem"), [
    ("8443", "is not HOST:PORT"), (":8443", "is not HOST:PORT"), ("::1:8443", "is not HOST:PORT"),
    ("127.0.0.1:http", "port 'http' is not a number"), ("127.0.0.1:70000", "port '70000'"),
    ("bad host:1", "host 'bad host' is not an address or a name"),
])
def test_a_bad_listen_address_is_a_usage_error(text: str, problem: str) -> None:
    with pytest.raises(cli.output.CLIError, match=re.escape(problem)):
        listen_address(text)


async def test_serve_listen_overrides_the_config(tmp_path: Path, gwdir: Path) -> None:
    port = free_port()
    served = await spawn_cli("serve", "--config", str(gwdir / "idwall.yaml"), "--listen", f"127.0.0.1:{port}",
                             output=tmp_path / "serve.txt")
    try:
        await served.wait_for("gateway.started")
        assert f"https://127.0.0.1:{port}" in served.output.read_text()
    finally:
        await served.stop()
    assert served.process.returncode == 0
    assert run_cli("serve", "--config", str(gwdir / "idwall.yaml"), "--listen", "nowhere").returncode == 2
