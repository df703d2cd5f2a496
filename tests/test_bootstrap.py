"""`idwall init` (idwall.bootstrap): the directory, its PKI, the store and the bootstrap invite."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from idwall import pki
from idwall.bootstrap import (
    BOOTSTRAP_TTL,
    SERVER_CERT_DAYS,
    InitRefused,
    bootstrap_invite_id,
    init_directory,
)
from idwall.config import load_config
from idwall.store.sqlite import SQLiteStore

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
KEY_FILES = ("ca-key.pem", "server-key.pem", "device-ca-key.pem", "assertion-key.pem", "ledger-key.pem")
CERT_FILES = ("ca.pem", "server.pem", "device-ca.pem")


def _init(directory: Path, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"admin": "root-admin", "port": 9443, "force": False, "now": NOW}
    args.update(kw)
    return init_directory(directory, **args)  # type: ignore[arg-type]


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in sorted(directory.rglob("*"))
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("gw") / "idwall"
    return directory, _init(directory)


def test_files_exist_with_private_modes(made) -> None:  # type: ignore[no-untyped-def]
    directory, _ = made
    certs = directory / "certs"
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in KEY_FILES:
        assert stat.S_IMODE((certs / name).stat().st_mode) == 0o600, name
        key = pki.load_private_key(certs / name)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    for name in CERT_FILES:
        pki.load_cert(certs / name)
    assert stat.S_IMODE((directory / "idwall.db").stat().st_mode) == 0o600
    # Nothing else: no temp dirs left next to D, no stray files inside it.
    assert sorted(p.name for p in directory.iterdir()) == ["certs", "idwall.db", "idwall.yaml"]
    assert [p.name for p in directory.parent.iterdir()] == ["idwall"]


def test_result_paths_are_absolute_and_point_at_the_files(made) -> None:  # type: ignore[no-untyped-def]
    directory, result = made
    assert result.config_path == directory / "idwall.yaml"
    assert result.ca_pem == directory / "certs" / "ca.pem"
    assert result.device_ca_pem == directory / "certs" / "device-ca.pem"
    for path in (result.config_path, result.ca_pem, result.device_ca_pem):
        assert path.is_absolute() and path.is_file()
    assert result.public_url == "https://localhost:9443"


def test_config_loads_and_names_the_files(made) -> None:  # type: ignore[no-untyped-def]
    directory, result = made
    config = load_config(result.config_path)
    certs = directory / "certs"
    assert config.public_url == "https://localhost:9443"
    assert config.listen.port == 9443 and config.listen.host == "127.0.0.1"
    assert config.tls.cert == certs / "server.pem" and config.tls.key == certs / "server-key.pem"
    assert config.device_ca.cert == certs / "device-ca.pem"
    assert config.assertion.key == certs / "assertion-key.pem"
    assert config.ledger.key == certs / "ledger-key.pem"
    assert config.sqlite_path == directory / "idwall.db"
    assert config.webauthn.rp_id == "localhost"
    assert config.webauthn.origins == ("https://localhost:9443",)


def test_server_cert_chains_to_the_gateway_ca_not_the_device_ca(made) -> None:  # type: ignore[no-untyped-def]
    directory, _ = made
    certs = directory / "certs"
    ca, device_ca = pki.load_cert(certs / "ca.pem"), pki.load_cert(certs / "device-ca.pem")
    server = pki.load_cert(certs / "server.pem")
    from cryptography.x509.verification import PolicyBuilder, Store

    verifier = (PolicyBuilder().store(Store([ca])).time(NOW + timedelta(minutes=1))
                .build_server_verifier(x509.DNSName("localhost")))
    chain = verifier.verify(server, [])
    assert chain[-1] == ca
    ip_verifier = (PolicyBuilder().store(Store([ca])).time(NOW + timedelta(minutes=1))
                   .build_server_verifier(x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))))
    ip_verifier.verify(server, [])
    # The device CA must not vouch for the server: the two CAs never mix.
    wrong = (PolicyBuilder().store(Store([device_ca])).time(NOW + timedelta(minutes=1))
             .build_server_verifier(x509.DNSName("localhost")))
    with pytest.raises(x509.verification.VerificationError):
        wrong.verify(server, [])
    assert ca.subject != device_ca.subject and ca.public_key() != device_ca.public_key()
    assert server.not_valid_after_utc - NOW <= timedelta(days=SERVER_CERT_DAYS)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    # Every key file belongs to its certificate.
    for cert_name, key_name in (("ca.pem", "ca-key.pem"), ("server.pem", "server-key.pem"),
                                ("device-ca.pem", "device-ca-key.pem")):
        assert pki.load_cert(certs / cert_name).public_key() == pki.load_private_key(certs / key_name).public_key()


def test_bootstrap_invite_is_stored_by_hash_only(made) -> None:  # type: ignore[no-untyped-def]
    directory, result = made
    code = result.bootstrap_code
    assert len(code) >= 43  # token_urlsafe(32): 256 bits
    invite_id = bootstrap_invite_id(code)

    async def read():  # type: ignore[no-untyped-def]
        store = SQLiteStore(directory / "idwall.db", ledger_key=None)
        await store.open()
        try:
            return await store.get_invite(invite_id), await store.ledger_entries()
        finally:
            await store.close()

    invite, ledger = asyncio.run(read())
    assert invite is not None
    assert (invite.user_id, invite.name, invite.email) == ("root-admin", "root-admin", "")
    assert invite.admin and invite.bootstrap and invite.groups == ("admins",)
    assert invite.created_by == "system"
    assert invite.created_at == NOW.timestamp()
    assert invite.expires_at == (NOW + BOOTSTRAP_TTL).timestamp()
    assert invite.used_at is None
    # The bootstrap appends nothing: the admin's enrollment is the genesis entry.
    assert ledger == []
    rows = sqlite3.connect(directory / "idwall.db").execute("SELECT id FROM invites").fetchall()
    assert rows == [(invite_id,)]


def test_bootstrap_code_appears_in_no_file(made) -> None:  # type: ignore[no-untyped-def]
    directory, result = made
    needle = result.bootstrap_code.encode()
    for path in directory.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path


def test_two_inits_make_different_keys_and_codes(tmp_path: Path, made) -> None:  # type: ignore[no-untyped-def]
    first_dir, first = made
    second = _init(tmp_path / "other")
    assert second.bootstrap_code != first.bootstrap_code
    for name in KEY_FILES:
        assert (tmp_path / "other" / "certs" / name).read_bytes() != (first_dir / "certs" / name).read_bytes()


def test_non_empty_directory_is_refused_and_untouched(tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    before = _snapshot(directory)
    with pytest.raises(InitRefused, match="--force"):
        _init(directory)
    assert _snapshot(directory) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw"]


def test_existing_gateway_is_refused_and_untouched(made, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path / "gw"
    _init(directory)
    before = _snapshot(directory)
    with pytest.raises(InitRefused):
        _init(directory)
    assert _snapshot(directory) == before


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "gw"
    target.write_text("not a directory")
    with pytest.raises(InitRefused, match="not a directory"):
        _init(target, force=True)
    assert target.read_text() == "not a directory"


def test_empty_existing_directory_is_used(tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    directory.mkdir()
    result = _init(directory)
    assert result.config_path.is_file()


def test_force_replaces_idwall_files_and_keeps_the_rest(tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    old = _init(directory)
    old_ca = (directory / "certs" / "ca.pem").read_bytes()
    (directory / "notes.txt").write_text("keep me")
    (directory / "backups").mkdir()
    (directory / "backups" / "old.db").write_text("keep me too")
    (directory / "certs" / "extra.pem").write_text("inside certs/: idwall's, replaced")
    (directory / "idwall.db-wal").write_bytes(b"stale wal")
    new = _init(directory, force=True)
    assert (directory / "notes.txt").read_text() == "keep me"
    assert (directory / "backups" / "old.db").read_text() == "keep me too"
    assert not (directory / "certs" / "extra.pem").exists()
    assert not (directory / "idwall.db-wal").exists()
    assert (directory / "certs" / "ca.pem").read_bytes() != old_ca
    assert new.bootstrap_code != old.bootstrap_code
    load_config(new.config_path)
    # The old code's invite went with the old store.
    db = sqlite3.connect(directory / "idwall.db")
    ids = [row[0] for row in db.execute("SELECT id FROM invites")]
    assert ids == [bootstrap_invite_id(new.bootstrap_code)]


def test_failure_half_way_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "gw"
    directory.mkdir()
    (directory / "keep.txt").write_text("x")
    before = _snapshot(directory)
    import idwall.bootstrap as bootstrap

    def broken_store(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    # The failure is injected at the store step, after the PKI and the config were written.
    monkeypatch.setattr(bootstrap, "_run_async", broken_store)
    with pytest.raises(OSError, match="disk full"):
        init_directory(directory, admin="admin", port=8443, force=True, now=NOW)
    assert _snapshot(directory) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw"]


@pytest.mark.parametrize("admin", ["", "a\nb", "x\x1b[2J", "a" * 129])
def test_bad_admin_is_refused_before_anything_is_written(tmp_path: Path, admin: str) -> None:
    with pytest.raises(ValueError, match="admin"):
        _init(tmp_path / "gw", admin=admin)
    assert not (tmp_path / "gw").exists()


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_bad_port_is_refused(tmp_path: Path, port: int) -> None:
    with pytest.raises(ValueError, match="port"):
        _init(tmp_path / "gw", port=port)
    assert not (tmp_path / "gw").exists()


@pytest.mark.parametrize("host", ["not a host!", "", "a\nb", "-lead.example", "x" * 254, "[::1]"])
def test_unusable_listen_host_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="listen.host"):
        _init(tmp_path / "gw", host=host)
    assert not (tmp_path / "gw").exists()
    assert list(tmp_path.iterdir()) == []


def test_listen_host_goes_into_config_and_server_cert(tmp_path: Path) -> None:
    result = _init(tmp_path / "gw", host="::1")
    config = load_config(result.config_path)
    assert config.listen.host == "::1"
    server = pki.load_cert(tmp_path / "gw" / "certs" / "server.pem")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


def test_wildcard_listen_host_is_not_a_certificate_name(tmp_path: Path) -> None:
    result = _init(tmp_path / "gw", host="0.0.0.0")
    assert load_config(result.config_path).listen.host == "0.0.0.0"
    server = pki.load_cert(tmp_path / "gw" / "certs" / "server.pem")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}


async def test_init_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    # Test fixtures of integrators call init from async code.
    result = _init(tmp_path / "gw")
    assert result.config_path.is_file()
    assert os.path.getsize(tmp_path / "gw" / "idwall.db") > 0
