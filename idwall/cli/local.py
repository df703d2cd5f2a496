"""The commands that act on a gateway directory and its config: ``init``, ``serve``, ``keys rotate``,
``audit verify``, ``audit export``; and ``demo``, which runs one of its own.

A config is ``--config``, else ``IDWALL_CONFIG``, else ``./.idwall/idwall.yaml``; a config error is a usage
error (exit 2, one line). Commands that read the store refuse a SQLite file that does not exist rather than
create an empty one.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import json
import os
import re
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import IDWallError
from .output import CLIError, error_text, usage

if TYPE_CHECKING:
    from ..bootstrap import InitResult
    from ..config import Config

DEFAULT_DIR = Path(".idwall")
LEDGER_PAGE = 1000


# --------------------------------------------------------------------------- config


def _config_path(given: str | None) -> Path:
    if given:
        return Path(given)
    env = os.environ.get("IDWALL_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_DIR / "idwall.yaml"


def _load(path: Path) -> Config:
    """load_config, with ConfigError turned into a usage error (exit 2, one line)."""
    from ..config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise usage(str(exc)) from None


def _existing_sqlite(config: Config) -> None:
    """Refuse to read a store that does not exist (opening would create an empty one)."""
    path = config.sqlite_path
    if path is not None and not path.is_file():
        raise CLIError(f"no store at {path}; run idwall init or fix `store` in {config.source}")


# --------------------------------------------------------------------------- init


def _init_summary(result: InitResult, directory: Path, admin: str, out: TextIO) -> None:
    certs = result.ca_pem.parent
    q = shlex.quote
    # --code=: a code may start with "-", which argparse would take for an option.
    enroll = (f"idwall device enroll --gateway {result.public_url} --code={result.bootstrap_code} "
              f"--ca {q(str(result.ca_pem))}")
    lines = [
        f"Initialised IDWall in {directory}",
        f"  config        {result.config_path}",
        f"  gateway CA    {result.ca_pem}  (clients trust this for the server certificate)",
        f"  server cert   {certs / 'server.pem'}  (localhost, 127.0.0.1)",
        f"  device CA     {result.device_ca_pem}",
        f"  signing keys  {certs / 'assertion-key.pem'}, {certs / 'ledger-key.pem'}",
        f"  store         {result.store}",
        "",
        f"Bootstrap code for the first administrator {admin!r}, valid 7 days.",
        "It is shown ONCE and not stored anywhere (only its hash is): copy it now.",
        "",
        f"    {result.bootstrap_code}",
        "",
        "Run the gateway:",
        f"    idwall serve --config {q(str(result.config_path))}",
        "Then enroll the administrator's device:",
        f"    {enroll}",
    ]
    print("\n".join(lines), file=out, flush=True)


def _do_init(directory: Path, *, admin: str, port: int, host: str, force: bool,
             store: str | None = None) -> InitResult:
    from ..bootstrap import InitRefused, init_directory
    from ..store import StoreError

    try:
        return init_directory(directory, admin=admin, port=port, force=force, host=host,
                              now=datetime.now(timezone.utc), store=store)
    except InitRefused as exc:
        raise usage(exc.detail) from None
    except ValueError as exc:
        raise usage(str(exc)) from None
    except StoreError as exc:  # the driver's words (the password blotted out) say why: refused, unknown database
        raise CLIError(f"cannot initialise the PostgreSQL store: {exc.log_detail or exc.detail}") from None


def cmd_init(args: argparse.Namespace) -> int:
    """``idwall init``: write a gateway directory and show the bootstrap code once."""
    directory = Path(os.path.abspath(Path(args.dir).expanduser()))
    result = _do_init(directory, admin=args.admin, port=args.port, host=args.host, force=args.force,
                      store=args.store)
    if args.json:
        print(json.dumps({
            "config": str(result.config_path),
            "bootstrap_code": result.bootstrap_code,
            "ca_pem": str(result.ca_pem),
            "device_ca_pem": str(result.device_ca_pem),
            "public_url": result.public_url,
        }), flush=True)
    else:
        _init_summary(result, directory, args.admin, sys.stdout)
    return 0


# --------------------------------------------------------------------------- serve


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as ``--listen`` takes it; a usage error names what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    valid = "write HOST:PORT, e.g. 127.0.0.1:8443, 0.0.0.0:8443 or [::]:8443"
    if not sep or not host or ":" in host and not text.startswith("["):
        raise usage(f"--listen {text!r} is not HOST:PORT; {valid}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
            raise usage(f"--listen host {host!r} is not an address or a name; {valid}") from None
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise usage(f"--listen port {port!r} is not a number from 0 to 65535; {valid}")
    return host, int(port)


def cmd_serve(args: argparse.Namespace) -> int:
    """``idwall serve``: run the gateway until SIGTERM/SIGINT."""
    if args.workers < 1:
        raise usage(f"--workers must be at least 1, got {args.workers}")
    path = _config_path(args.config)
    if not args.config and not os.environ.get("IDWALL_CONFIG") and not path.exists():
        # The one-command first run: dev certificates and a bootstrap code in ./.idwall.
        directory = Path(os.path.abspath(DEFAULT_DIR))
        result = _do_init(directory, admin="admin", port=8443, host="127.0.0.1", force=False)
        _init_summary(result, directory, "admin", sys.stdout)
        print("", flush=True)
        path = result.config_path
    config = _load(path)
    if args.listen is not None:
        host, port = listen_address(args.listen)
        config = dataclasses.replace(config, listen=dataclasses.replace(config.listen, host=host, port=port))

    from ..logs import setup_logging
    from ..supervisor import run_server

    setup_logging()
    return run_server(config, workers=args.workers)


# --------------------------------------------------------------------------- keys


async def _append_key_rotation(config: Config, *, kid: str, previous_kid: str) -> int:
    from ..pki import load_private_key
    from ..store import open_store
    from ..model import LedgerDraft

    store = await open_store(config.store, ledger_key=load_private_key(config.ledger.key))
    try:
        return await store.append_ledger(LedgerDraft(
            type="key.rotate", actor="system", subject=kid,
            data={"kind": "assertion", "kid": kid, "previous_kid": previous_kid},
        ))
    finally:
        await store.close()


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """``idwall keys rotate``: new assertion key, old one kept for the overlap, ledger entry."""
    from ..assertion import key_id, rotate_keys
    from ..pki import load_private_key

    config = _load(_config_path(args.config))
    _existing_sqlite(config)
    key_path = config.assertion.key
    if not key_path.exists():
        raise CLIError(f"no assertion key at {key_path} (assertion.key in {config.source}); nothing to rotate")
    previous = key_id(load_private_key(key_path))
    kid = rotate_keys(key_path, now=time.time())
    try:
        seq = asyncio.run(_append_key_rotation(config, kid=kid, previous_kid=previous))
    except IDWallError as exc:
        raise CLIError(f"the key was rotated (new kid {kid}) but the ledger entry failed: {error_text(exc)}")
    print(kid)
    print(f"key.rotate recorded at ledger seq {seq}; running gateways pick the new key up by themselves",
          file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- audit


async def _store_entries(config: Config, *, after: int) -> list[dict[str, Any]]:
    from ..store import open_store

    store = await open_store(config.store, ledger_key=None)
    try:
        entries: list[dict[str, Any]] = []
        while True:
            page = await store.ledger_entries(after=after, limit=LEDGER_PAGE)
            entries.extend(page)
            if len(page) < LEDGER_PAGE:
                return entries
            after = int(page[-1]["seq"])
    finally:
        await store.close()


def _read_export(path: Path) -> list[dict[str, Any]]:
    from ..audit import entries_from_jsonl

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise usage(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return entries_from_jsonl(text)
    except IDWallError as exc:
        raise CLIError(f"ledger FAILED: {path}: {exc.detail}") from None


def _ledger_public_key(args: argparse.Namespace, config: Config | None) -> Any:
    """The pinned ledger key: --ledger-key, else the config's; None trusts the genesis entry's JWK."""
    from cryptography.hazmat.primitives import serialization

    from ..pki import load_private_key

    if args.ledger_key:
        path = Path(args.ledger_key)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise usage(f"cannot read --ledger-key {path}: {exc.strerror or exc}") from None
        try:
            return serialization.load_pem_public_key(data)
        except ValueError:
            try:
                return load_private_key(path).public_key()
            except ValueError as exc:
                raise usage(f"--ledger-key: {exc}") from None
    if config is not None:
        return load_private_key(config.ledger.key).public_key()
    return None


def _expected_head(text: str | None) -> tuple[int | None, str | None]:
    if text is None:
        return None, None
    seq_text, _, digest = text.partition(":")
    if not seq_text.isdigit() or int(seq_text) < 1:
        raise usage(f"--head must be SEQ or SEQ:HASH as `audit verify` printed it, got {text!r}")
    return int(seq_text), digest or None


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """``idwall audit verify``: exit 0 when the whole ledger verifies, else 1 naming the first bad seq."""
    from .. import audit

    config: Config | None = None
    if args.export:
        entries = _read_export(Path(args.export))
    else:
        config = _load(_config_path(args.config))
        _existing_sqlite(config)
        entries = asyncio.run(_store_entries(config, after=0))
    last, last_hash = _expected_head(args.head)
    try:
        result = audit.verify_ledger(entries, root=args.root, ledger_public_key=_ledger_public_key(args, config),
                                     expected_last=last, expected_last_hash=last_hash)
    except ValueError as exc:
        raise usage(str(exc)) from None
    # The verifier's reasons read "seq N: why"; the line below names the seq itself.
    reason = re.sub(r"^seq \d+: ", "", result.reason)
    head = f"{result.seq}:{result.head}" if result.ok and result.head else None
    if args.json:
        print(json.dumps({"ok": result.ok, "entries": result.entries, "seq": result.seq, "reason": reason,
                          "root": result.root, "head": head}))
    elif result.ok:
        print(f"ledger OK: {result.entries} entries, root {result.root}, head {head}")
    else:
        print(f"ledger FAILED at seq {result.seq}: {reason}")
    return 0 if result.ok else 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    """``idwall audit export``: the ledger as JSON lines, one entry each, as stored."""
    from ..audit import entry_to_jsonl

    if args.after < 0:
        raise usage(f"--after must be 0 or more, got {args.after}")
    config = _load(_config_path(args.config))
    _existing_sqlite(config)
    for entry in asyncio.run(_store_entries(config, after=args.after)):
        sys.stdout.write(entry_to_jsonl(entry) + "\n")
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------- demo


def cmd_demo(argv: list[str]) -> int:
    """``idwall demo ARGS``: :mod:`idwall.demo` parses the rest of the command line itself."""
    from .. import demo

    return int(demo.main(argv) or 0)
