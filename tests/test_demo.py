"""``idwall demo``: the whole script through the real CLI (gateway, upstream, passkey enrollment and login over
mTLS, signed invite), what it prints, the files it leaves with ``--dir``, and its built-in whoami upstream."""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.serialization import pkcs12

from idwall import pki
from idwall.assertion import KeySet, build_claims
from idwall.demo import DemoOptions, builtin_whoami_app, parse_args
from idwall.upstream import AssertionVerifier, JWKSCache
from tests.helpers.cli import REPO, run_cli


def run_demo(*extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("demo", "--once", *extra, cwd=REPO, timeout=120)


def test_demo_once_prints_the_identity_the_upstream_verified() -> None:
    done = run_demo()
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    port = re.search(r"gateway on https://localhost:(\d+)", out)
    assert port, out
    base = f"https://localhost:{port.group(1)}"
    device = re.search(r"device (dev-[\w-]+): certificate", out)
    assert device, out
    session = re.search(r"session (ses-[\w-]+) for admin", out)
    assert session, out
    # what the upstream saw for each request, after verifying the assertion against the gateway's JWKS
    assert out.count(f"sub=admin groups=['admins'] sid={session.group(1)}") == 2
    assert out.count(f"device={device.group(1)} (demo laptop) amr=['hwk', 'user', 'mfa']") == 2
    assert f"htm=GET htu={base}/hello aud=whoami iss={base}" in out  # no query: htu is scheme, host, path
    assert f"htm=POST htu={base}/api/things aud=whoami iss={base}" in out
    assert re.search(r"root fingerprint \(pin it.*\): [A-Za-z0-9_-]{43}\n", out)
    # the signed invite and the browser instructions
    code = re.search(rf"idwall device enroll --gateway {re.escape(base)} --code (\S+) --ca (\S+)", out)
    assert code and len(code.group(1)) >= 20, out
    assert re.search(r"device\.p12 \(Your certificates > Import\), password: \S{12,}", out)
    temp = re.search(r"Files in (\S+) are removed when the demo stops", out)
    assert temp and not Path(temp.group(1)).exists()
    assert "Traceback" not in done.stderr


def test_demo_dir_keeps_a_usable_device_bundle(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    done = run_demo("--dir", str(target))
    assert done.returncode == 0, done.stderr + done.stdout
    password = re.search(r"password: (\S+)", done.stdout)
    assert password
    device_dir = target / "device"
    key, cert, cas = pkcs12.load_key_and_certificates((device_dir / "device.p12").read_bytes(),
                                                      password.group(1).encode())
    assert cert is not None and key is not None
    assert cert == pki.load_cert(device_dir / "device.pem")
    assert pki.device_id_from_cert(cert) in done.stdout
    assert [c.subject for c in cas] == [pki.load_cert(target / "gateway/certs/device-ca.pem").subject]
    for secret in ("device-key.pem", "device.p12"):
        assert (device_dir / secret).stat().st_mode & 0o077 == 0, secret
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates((device_dir / "device.p12").read_bytes(), b"wrong password")
    assert "are removed when the demo stops" not in done.stdout


def test_demo_refuses_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    done = run_demo("--dir", str(tmp_path))
    assert done.returncode == 2
    assert "not empty" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_parse_args_takes_the_cli_namespace_or_raw_arguments() -> None:
    assert parse_args(argparse.Namespace(port=9443, once=True)) == DemoOptions(9443, True, None)
    assert parse_args(argparse.Namespace()) == DemoOptions(None, False, None)
    assert parse_args(["--port", "8000", "--dir", "/x"]) == DemoOptions(8000, False, Path("/x"))
    assert parse_args([]) == DemoOptions(None, False, None)
    with pytest.raises(SystemExit):
        parse_args(["--port", "not-a-port"])


async def test_builtin_whoami_trusts_only_a_valid_assertion(tmp_path: Path) -> None:
    key_path = tmp_path / "assertion-key.pem"
    pki.write_private_key(key_path, pki.generate_p256_key())
    now = time.time()
    keys = KeySet.load(key_path, now=now, overlap=60)
    verifier = AssertionVerifier(keys=JWKSCache.from_jwks(keys.jwks()), issuer="https://gw.test", audience="whoami")
    async with TestClient(TestServer(builtin_whoami_app(verifier))) as client:
        url = "https://gw.test/hello"
        token = keys.sign(build_claims(
            iss="https://gw.test", aud="whoami", user={"id": "alice", "email": None, "name": "Alice",
                                                        "groups": ["eng"]},
            session={"id": "ses-1", "auth_time": int(now), "amr": ["hwk", "user"]},
            device={"id": "dev-1", "name": "laptop", "credential_id": "AA", "enrolled_at": int(now),
                    "approved_by": None},
            cert_sha256=b"\x01" * 32, method="GET", url=url, now=now, ttl=60, bind_request=True))
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.test"}
        resp = await client.get("/hello", headers={**forwarded, "X-IDWall-Assertion": token})
        assert resp.status == 200, await resp.text()
        seen = await resp.json()
        assert seen["sub"] == "alice" and seen["device"]["id"] == "dev-1" and seen["amr"] == ["hwk", "user"]
        assert seen["claims"]["htu"] == url
        # the same assertion on another request, a forged one, or none at all: refused
        for path, headers in [("/other", {**forwarded, "X-IDWall-Assertion": token}),
                              ("/hello", {**forwarded, "X-IDWall-Assertion": token[:-4] + "AAAA"}),
                              ("/hello", forwarded)]:
            resp = await client.get(path, headers=headers)
            assert resp.status == 401, (path, await resp.text())
            assert resp.content_type == "application/problem+json"
        resp = await client.post("/hello", headers={**forwarded, "X-IDWall-Assertion": token})
        assert resp.status == 401
