"""``idwall init``: a new gateway directory with its PKI, keys, config, store and bootstrap code.

The directory it writes::

    D/idwall.yaml                 annotated config (default_config_text)
    D/certs/            (0700)
        ca.pem, ca-key.pem                gateway CA: clients trust ca.pem for the server certificate
        server.pem, server-key.pem        TLS server certificate for localhost and 127.0.0.1
        device-ca.pem, device-ca-key.pem  device CA: issues the client certificates
        assertion-key.pem                 signs the identity assertions
        ledger-key.pem                    signs the audit ledger
    D/idwall.db                   SQLite store, migrated, holding the bootstrap invite

With ``store`` (``idwall init --store postgresql://user@host:port/db``) the config points at that PostgreSQL
database instead and no ``idwall.db`` is written: the database is migrated and given the bootstrap invite,
and every node runs from a copy of ``D``. A database that already holds a gateway is refused unless
``force``, which replaces that gateway (its users, devices and ledger) as it replaces ``D``'s files.

Every private key is P-256 and written 0600 from creation. The bootstrap code is
returned to the caller and never written anywhere: the store keeps only
``b64url(SHA-256(code))`` as the invite id.

Everything is built in a temporary directory next to ``D`` and moved into place
at the end, so a failure half-way leaves ``D`` as it was.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import json
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Awaitable, Callable

from . import pki
from .config import ConfigError, default_config_text, load_config
from .encoding import b64url_encode, sha256
from .errors import Conflict
from .store import is_postgres, open_store, shown_url
from .model import Invite
from .store.base import AlreadyUsed

CONFIG_NAME = "idwall.yaml"
CERTS_DIR = "certs"
DB_NAME = "idwall.db"
# Names init owns inside D; --force removes these and nothing else.
OWNED_NAMES = (CONFIG_NAME, CERTS_DIR)
OWNED_PREFIX = DB_NAME  # idwall.db, idwall.db-wal, idwall.db-shm, idwall.db-journal

CA_DAYS = 3650
# CA/Browser Forum ceiling for TLS server certificates; browsers refuse longer ones.
SERVER_CERT_DAYS = 397
BOOTSTRAP_TTL = timedelta(days=7)
BOOTSTRAP_GROUPS = ("admins",)
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}
_DNS_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


class InitRefused(Conflict):
    """The target directory already holds something and --force was not given."""

    slug, title = "init-refused", "Directory not empty"


@dataclass(frozen=True)
class InitResult:
    """What ``idwall init`` made; every path is absolute."""

    config_path: Path
    bootstrap_code: str
    ca_pem: Path
    device_ca_pem: Path
    public_url: str
    store: str  # where the store is, for people: the SQLite file, or the PostgreSQL URL without its password


def bootstrap_invite_id(code: str) -> str:
    """The invite id under which a code is stored: ``b64url(SHA-256(code))``."""
    return b64url_encode(sha256(code.encode("utf-8")))


def _owned_entries(directory: Path) -> list[Path]:
    """The entries of ``directory`` that belong to idwall init."""
    return sorted(
        child for child in directory.iterdir()
        if child.name in OWNED_NAMES or child.name.startswith(OWNED_PREFIX)
    )


def _valid_listen_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return 0 < len(host) <= 253 and _DNS_NAME.fullmatch(host) is not None


def _server_hosts(host: str) -> list[str]:
    """localhost and 127.0.0.1, plus the listen address when it is a specific one."""
    hosts = ["localhost", "127.0.0.1"]
    if host not in _WILDCARD_HOSTS and host not in hosts:
        try:
            if ipaddress.ip_address(host).is_unspecified:
                return hosts
        except ValueError:
            pass
        hosts.append(host)
    return hosts


def _write_pki(certs: Path, *, now: datetime, hosts: list[str]) -> None:
    certs.mkdir(mode=0o700)
    os.chmod(certs, 0o700)  # the umask may have narrowed it; make it exactly 0700

    ca_key = pki.generate_p256_key()
    ca_cert = pki.make_ca("IDWall gateway CA", ca_key, now=now, days=CA_DAYS)
    pki.write_private_key(certs / "ca-key.pem", ca_key)
    pki.write_cert(certs / "ca.pem", ca_cert)

    server_key = pki.generate_p256_key()
    server_cert = pki.make_server_cert(ca_cert, ca_key, server_key, hosts=hosts, now=now, days=SERVER_CERT_DAYS)
    pki.write_private_key(certs / "server-key.pem", server_key)
    pki.write_cert(certs / "server.pem", server_cert)

    device_ca_key = pki.generate_p256_key()
    device_ca_cert = pki.make_ca("IDWall device CA", device_ca_key, now=now, days=CA_DAYS)
    pki.write_private_key(certs / "device-ca-key.pem", device_ca_key)
    pki.write_cert(certs / "device-ca.pem", device_ca_cert)

    pki.write_private_key(certs / "assertion-key.pem", pki.generate_p256_key())
    pki.write_private_key(certs / "ledger-key.pem", pki.generate_p256_key())


def _set_listen_host(text: str, host: str) -> str:
    """Put ``host`` into the ``listen:`` block of the default config text."""
    marker = "listen:\n  host: 127.0.0.1\n"
    if text.count(marker) != 1:
        raise RuntimeError("the default config no longer has the listen block idwall init edits")
    # JSON strings are valid YAML scalars, so an IPv6 address such as ::1 survives.
    return text.replace(marker, f"listen:\n  host: {json.dumps(host)}\n")


async def _create_store(db_path: Path, invite: Invite) -> None:
    store = await open_store(f"sqlite://{db_path}", ledger_key=None)
    try:
        # The bootstrap invite appends nothing: the admin's enrollment is the ledger's genesis.
        await store.create_invite(invite, None)
    finally:
        await store.close()


async def _claim_database(url: str, invite: Invite, *, force: bool) -> None:
    store = await open_store(url, ledger_key=None, pool_size=1)  # migrates it, under the migration lock
    try:
        await store.create_bootstrap_invite(invite, replace=force)  # type: ignore[union-attr]
    except AlreadyUsed as exc:
        raise InitRefused(exc.detail) from None
    finally:
        await store.close()


async def _call(coro_factory: Callable[[], Awaitable[None]]) -> None:
    await coro_factory()


def _run_async(coro_factory: Callable[[], Awaitable[None]]) -> None:
    """Run a coroutine to completion from sync code, even when called inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_call(coro_factory))
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: asyncio.run(_call(coro_factory))).result()


def _build(tmp: Path, *, admin: str, port: int, host: str, now: datetime, store: str | None,
           force: bool) -> tuple[str, str]:
    """Write everything into ``tmp`` (and the bootstrap invite into ``store``); return (bootstrap code, public URL)."""
    public_url = f"https://localhost:{port}"
    _write_pki(tmp / CERTS_DIR, now=now, hosts=_server_hosts(host))

    text = default_config_text(public_url=public_url, port=port, store_path=store or DB_NAME, admin=admin)
    if host != "127.0.0.1":
        text = _set_listen_host(text, host)
    (tmp / CONFIG_NAME).write_text(text, encoding="utf-8")
    if store is not None and shown_url(store) != store:
        os.chmod(tmp / CONFIG_NAME, 0o600)  # it holds the database password (a passfile or PGPASSWORD keeps it out)
    # Validate what we wrote before anything moves into place: a config that
    # init writes and serve refuses would be a broken first run.
    try:
        load_config(tmp / CONFIG_NAME)
    except ConfigError as exc:
        # Only the caller's values (host, port, admin) can make it invalid; the temp path means nothing.
        raise ValueError(f"{exc.key}: {exc.message}") from None

    code = secrets.token_urlsafe(32)
    created = now.timestamp()
    invite = Invite(
        id=bootstrap_invite_id(code), user_id=admin, name=admin, email="", groups=BOOTSTRAP_GROUPS,
        admin=True, bootstrap=True, created_by="system", created_at=created,
        expires_at=created + BOOTSTRAP_TTL.total_seconds(),
    )
    if store is not None:
        # last: nothing can fail after the database is claimed but the move into place
        _run_async(lambda: _claim_database(store, invite, force=force))
        return code, public_url
    _run_async(lambda: _create_store(tmp / DB_NAME, invite))
    # Sessions, token and invite hashes live here; SQLite creates it 0644 and gives
    # its -wal/-shm files the database file's mode.
    os.chmod(tmp / DB_NAME, 0o600)
    return code, public_url


def _move_into(tmp: Path, directory: Path) -> None:
    """Move the built entries of ``tmp`` into ``directory``; undo the moves on failure."""
    moved: list[Path] = []
    try:
        for child in sorted(tmp.iterdir()):
            target = directory / child.name
            os.rename(child, target)
            moved.append(target)
    except BaseException:
        for target in moved:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        raise


def init_directory(dir: Path, *, admin: str, port: int, force: bool, now: datetime,
                   host: str = "127.0.0.1", store: str | None = None) -> InitResult:
    """Create a gateway directory at ``dir``; see the module docstring for what it holds.

    Raises :class:`InitRefused` when ``dir`` exists and is not empty and ``force``
    is false (nothing is touched). With ``force`` only idwall's own entries
    (``idwall.yaml``, ``certs/``, ``idwall.db*``) are replaced; other files stay.
    ``store`` is a ``postgresql://`` URL to use instead of the SQLite file; :class:`InitRefused` too when
    that database holds a gateway and ``force`` is false, a StoreError when it cannot be reached.
    ``ValueError`` for an unusable ``admin``, ``port``, ``host`` or ``store``.
    """
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535 (the public URL names it), got {port}")
    if not admin or any(ord(c) < 0x20 or c == "\x7f" for c in admin) or len(admin) > 128:
        raise ValueError(f"admin must be a user id of 1-128 printable characters, got {admin!r}")
    if not _valid_listen_host(host):
        raise ValueError(f"listen.host must be an IP address or a DNS name, got {host!r}")
    if store is not None and not is_postgres(store):
        # never echo it: it may hold a password
        raise ValueError("--store must be a postgresql://user@host:port/db URL (without it: SQLite in the directory)")
    directory = Path(os.path.abspath(Path(dir).expanduser()))
    if directory.exists() and not directory.is_dir():
        raise InitRefused(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise InitRefused(f"{directory} is not empty; use --force to replace its idwall files "
                          f"(idwall.yaml, certs/, idwall.db) and keep everything else")
    directory.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.init-"))
    try:
        code, public_url = _build(tmp, admin=admin, port=port, host=host, now=now, store=store, force=force)
        if not directory.exists():
            os.mkdir(directory, 0o700)
        for entry in _owned_entries(directory):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        _move_into(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    certs = directory / CERTS_DIR
    return InitResult(
        config_path=directory / CONFIG_NAME,
        bootstrap_code=code,
        ca_pem=certs / "ca.pem",
        device_ca_pem=certs / "device-ca.pem",
        public_url=public_url,
        store=shown_url(store) if store is not None else str(directory / DB_NAME),
    )
