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
from idwall.store import StoreError
from idwall.store.postgres.core import migrations
from idwall.store.sqlite import SQLiteStore
from tests.helpers.store import closed_port, draft, dump, enroll, opened

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


# --------------------------------------------------------------------------- --store postgresql://


async def _pg_rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    async with opened(url, ledger_key=None) as store:
        return await dump(store)


async def test_a_postgresql_store_is_migrated_and_holds_only_the_bootstrap_invite(tmp_path: Path, pg_url: str) -> None:
    with_password = pg_url.replace("postgres@", "postgres:hunter2@")
    result = _init(tmp_path / "gw", store=with_password)
    assert load_config(result.config_path).store == with_password  # the config keeps what the nodes need
    assert sorted(p.name for p in (tmp_path / "gw").iterdir()) == ["certs", "idwall.yaml"]  # no idwall.db
    assert result.store == pg_url.replace("postgres@", "postgres:***@")  # what is printed hides the password
    assert stat.S_IMODE(result.config_path.stat().st_mode) == 0o600  # the file that holds it is the owner's
    rows = await _pg_rows(pg_url)
    assert [r[0] for r in rows["invites"]] == [bootstrap_invite_id(result.bootstrap_code)]
    assert rows["ledger"] == rows["users"] == [] and rows["schema_version"] == [(v,) for v, _ in migrations()]
    async with opened(pg_url, ledger_key=None) as store:
        invite = await store.get_invite(bootstrap_invite_id(result.bootstrap_code))
    assert invite is not None and invite.bootstrap and invite.admin and invite.user_id == "root-admin"


async def test_a_database_that_holds_a_gateway_is_refused_and_untouched(tmp_path: Path, pg_url: str) -> None:
    _init(tmp_path / "first", store=pg_url)
    before = await _pg_rows(pg_url)
    with pytest.raises(InitRefused, match="already holds a gateway; use --force"):
        _init(tmp_path / "second", store=pg_url)
    assert await _pg_rows(pg_url) == before
    assert not (tmp_path / "second").exists()


async def test_force_replaces_the_gateway_a_database_holds(tmp_path: Path, pg_url: str) -> None:
    first = _init(tmp_path / "first", store=pg_url)
    async with opened(pg_url) as store:  # the old gateway got going: an admin, a ledger, a kill event
        new = await enroll(store, "root-admin", admin=True)
        await store.kill(scope="user", target="root-admin", revoke_devices=False, now=NOW.timestamp(),
                         draft=draft("kill", "root-admin"))
    second = _init(tmp_path / "second", store=pg_url, force=True)
    rows = await _pg_rows(pg_url)
    assert [r[0] for r in rows["invites"]] == [bootstrap_invite_id(second.bootstrap_code)]
    assert bootstrap_invite_id(first.bootstrap_code) != bootstrap_invite_id(second.bootstrap_code)
    assert rows["users"] == rows["devices"] == rows["ledger"] == rows["events"] == []
    async with opened(pg_url) as store:
        assert await store.get_device(new.device.id) is None
        await store.append_ledger(draft())
        assert [e["seq"] for e in await store.ledger_entries()] == [1]  # the new gateway's chain starts afresh


async def test_two_inits_on_one_database_at_once_make_one_gateway(tmp_path: Path, pg_url: str) -> None:
    def init(name: str) -> object:
        try:
            return _init(tmp_path / name, store=pg_url)
        except InitRefused as exc:
            return exc

    outcomes = await asyncio.gather(*(asyncio.to_thread(init, f"gw-{i}") for i in range(3)))
    made = [o for o in outcomes if not isinstance(o, InitRefused)]
    assert len(made) == 1
    rows = await _pg_rows(pg_url)
    assert [r[0] for r in rows["invites"]] == [bootstrap_invite_id(made[0].bootstrap_code)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("store", ["mysql://u:hunter2@db/idwall", "sqlite:///tmp/x.db", "postgres://u:hunter2@db/x",
                                   "postgresql://"])
def test_a_store_that_is_not_postgresql_is_refused_without_echoing_it(tmp_path: Path, store: str) -> None:
    with pytest.raises(ValueError) as info:
        _init(tmp_path / "gw", store=store)
    assert "postgresql://user@host:port/db" in str(info.value) and "hunter2" not in str(info.value)
    assert not (tmp_path / "gw").exists()


def test_an_unreachable_database_leaves_nothing(tmp_path: Path) -> None:
    with closed_port() as port:
        with pytest.raises(StoreError) as info:
            _init(tmp_path / "gw", store=f"postgresql://postgres:hunter2@127.0.0.1:{port}/idwall")
    assert "hunter2" not in f"{info.value} {info.value.log_detail}"
    assert list(tmp_path.iterdir()) == []
