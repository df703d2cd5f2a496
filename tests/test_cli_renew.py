"""``idwall device renew`` (idwall/cli/renew.py) end to end: the real command in a subprocess against a real
gateway, the passkey played by the software authenticator over the device's own mTLS connection (the part the
browser page does), and the files it leaves behind."""

from __future__ import annotations

import asyncio
import shutil
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from idwall import pki
from tests.helpers.api import Enrolled, bootstrap, call, login, sign
from tests.helpers.cli import run_cli, start_cli_until_url


def _device_dir(gateway, device: Enrolled, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """The directory ``idwall device enroll`` would have written for ``device``."""
    directory = tmp_path / "device"
    directory.mkdir()
    shutil.copy(device.cert_path, directory / "device.pem")
    shutil.copy(device.key_path, directory / "device-key.pem")
    shutil.copy(gateway.init["ca_pem"], directory / "ca.pem")
    return directory


async def _start(gateway, directory: Path, *extra: str):  # type: ignore[no-untyped-def]
    return await start_cli_until_url("device", "renew", "--gateway", gateway.url, "--dir", str(directory), *extra,
                                     printed=b"in a browser that uses this device's certificate")


async def test_device_renew_writes_a_new_key_and_certificate_that_keep_the_session(gateway, tmp_path: Path) -> None:
    admin = await bootstrap(gateway)
    directory = _device_dir(gateway, admin, tmp_path)
    old_key = (directory / "device-key.pem").read_bytes()
    async with gateway.session(admin) as browser:  # the browser on this device, signed in
        assert (await login(gateway, admin, browser))[0] == 200
        process, url = await _start(gateway, directory)
        renewal_id = url.rsplit("/", 1)[1]
        assert url == f"{gateway.url}/idwall/renew/{renewal_id}"
        _, renewal = await call(browser, "GET", gateway.url + "/idwall/api/renew/" + renewal_id)
        status, answer = await sign(gateway, admin, browser, {"type": "device.renew", "device_id": admin.device_id,
                                                              "csr_pem": renewal["csr_pem"]})
        assert status == 200, answer
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err
    assert f"Certificate of device {admin.device_id} renewed" in out.decode()
    key = pki.load_private_key(directory / "device-key.pem")
    assert (directory / "device-key.pem").read_bytes() != old_key
    assert stat.S_IMODE((directory / "device-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "device.p12").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((directory / "device.pem").read_bytes())
    assert cert.public_key() == key.public_key() and pki.device_id_from_cert(cert) == admin.device_id
    p12_key, p12_cert, _ = pkcs12.load_key_and_certificates((directory / "device.p12").read_bytes(), None)
    assert p12_cert == cert and p12_key is not None and p12_key.public_key() == key.public_key()
    assert not [p for p in directory.iterdir() if p.name.startswith(".renew-")]
    # the new files are the device now, in the same session; the old ones are worthless
    new = Enrolled(admin.device_id, "admin", directory / "device.pem", directory / "device-key.pem", admin.auth,
                   b"", {})
    async with gateway.session(new) as client:
        status, me = await call(client, "GET", gateway.url + "/idwall/api/me")
        assert me["session"] is not None and me["device"]["id"] == admin.device_id, me
    async with gateway.session(admin) as client:
        status, me = await call(client, "GET", gateway.url + "/idwall/api/me")
        assert me["device"] is None, me


async def test_device_renew_gives_up_after_its_timeout_and_keeps_the_old_files(gateway, tmp_path: Path) -> None:
    admin = await bootstrap(gateway)
    directory = _device_dir(gateway, admin, tmp_path)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    process, _ = await _start(gateway, directory, "--timeout", "1")
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1 and "no passkey after 1s; the certificate was not renewed" in err.decode()
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def _run(directory: Path, gateway_url: str, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli("device", "renew", "--gateway", gateway_url, "--dir", str(directory), *extra)


async def test_a_refused_renewal_is_one_line_and_changes_no_file(gateway, tmp_path: Path) -> None:
    admin = await bootstrap(gateway)
    directory = _device_dir(gateway, admin, tmp_path)
    async with gateway.session(admin) as own:
        assert (await login(gateway, admin, own))[0] == 200
        status, _ = await call(own, "POST", gateway.url + "/idwall/api/admin/kill", {
            "scope": "device", "target": admin.device_id, "reason": "stolen", "revoke_devices": True})
        assert status == 200
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    result = await asyncio.to_thread(_run, directory, gateway.url)
    assert result.returncode == 1, result
    assert result.stderr.startswith("idwall: renewal refused: ") and result.stderr.count("\n") == 1, result.stderr
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


async def test_an_expired_certificate_is_refused_before_anything_is_sent(gateway, tmp_path: Path) -> None:
    admin = await bootstrap(gateway)
    directory = _device_dir(gateway, admin, tmp_path)
    node = gateway.running.node
    key = pki.load_private_key(directory / "device-key.pem")
    expired = pki.issue_device_cert(ca_cert=node.device_ca_cert, ca_key=node.device_ca_key,
                                    csr=pki.check_csr(pki.make_csr(key, "laptop")), device_id=admin.device_id,
                                    now=1_700_000_000, ttl=86400)
    pki.write_cert(directory / "device.pem", expired)
    result = await asyncio.to_thread(_run, directory, gateway.url)
    assert result.returncode == 1 and "an expired certificate cannot renew" in result.stderr, result
    assert await gateway.store.read(lambda c: c.execute("SELECT COUNT(*) FROM renewals").fetchone()[0]) == 0


def test_usage_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, words in ((("--gateway", "http://localhost:1", "--dir", str(empty)), "--gateway must be an https://"),
                        (("--gateway", "https://localhost:1", "--dir", str(empty)), "device.pem not found"),
                        (("--gateway", "https://localhost:1", "--dir", str(empty), "--timeout", "0"),
                         "--timeout must be positive")):
        result = run_cli("device", "renew", *args)
        assert result.returncode == 2 and words in result.stderr, result
