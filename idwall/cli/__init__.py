"""The ``idwall`` command line (DESIGN.md "Command line").

    idwall init --dir D [--admin USER] [--json] [--force] [--port 8443] [--host 127.0.0.1]
    idwall serve [--config FILE] [--workers N]
    idwall keys rotate [--config FILE]
    idwall audit verify [--config FILE | --export FILE] [--root=FINGERPRINT] [--json]
    idwall audit export [--config FILE] [--after SEQ]
    idwall device enroll --gateway URL --code CODE [--out DIR] [--name NAME] [--ca FILE] [--timeout 600]
    idwall kill (--user U | --device D | --session S | --group G | --all) --reason TEXT [--revoke-devices]
                --gateway URL --token-file F [--ca FILE] [--json] [--yes]
    idwall demo ...

Exit codes: 0 success, 1 the operation failed (gateway refused, ledger did not
verify, unexpected error), 2 the command line or the configuration is wrong.
No command ever prints a traceback unless ``IDWALL_DEBUG=1``.

Text that comes from a gateway (problem details, URLs) is printed with control
characters removed, so a hostile or broken server cannot drive the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
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
from .client import cmd_device_enroll, cmd_kill
from .output import CLIError, error_text, guarded, usage

if TYPE_CHECKING:
    from ..bootstrap import InitResult
    from ..config import Config

DEFAULT_DIR = Path(".idwall")
DEFAULT_DEVICE_OUT = Path("idwall-device")
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
        f"  store         {directory / 'idwall.db'}",
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


def _do_init(directory: Path, *, admin: str, port: int, host: str, force: bool) -> InitResult:
    from ..bootstrap import InitRefused, init_directory

    try:
        return init_directory(directory, admin=admin, port=port, force=force, host=host,
                              now=datetime.now(timezone.utc))
    except InitRefused as exc:
        raise usage(exc.detail) from None
    except ValueError as exc:
        raise usage(str(exc)) from None


def cmd_init(args: argparse.Namespace) -> int:
    """``idwall init``: write a gateway directory and show the bootstrap code once."""
    directory = Path(os.path.abspath(Path(args.dir).expanduser()))
    result = _do_init(directory, admin=args.admin, port=args.port, host=args.host, force=args.force)
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

    from ..logs import setup_logging
    from ..supervisor import run_server

    setup_logging()
    return run_server(config, workers=args.workers)


# --------------------------------------------------------------------------- keys


async def _append_key_rotation(config: Config, *, kid: str, previous_kid: str) -> int:
    from ..pki import load_private_key
    from ..store import open_store
    from ..store.base import LedgerDraft

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


# --------------------------------------------------------------------------- parser and main


def build_parser() -> argparse.ArgumentParser:
    """The whole ``idwall`` argument parser."""
    parser = argparse.ArgumentParser(prog="idwall", description="IDWall: passkey-backed mTLS identity gateway")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("init", help="create a gateway directory: PKI, keys, config, store, bootstrap code")
    p.add_argument("--dir", required=True, help="directory to create (refused when not empty, unless --force)")
    p.add_argument("--admin", default="admin", help="user id of the first administrator (default: admin)")
    p.add_argument("--port", type=int, default=8443, help="HTTPS port (default: 8443)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--force", action="store_true",
                   help="replace idwall.yaml, certs/ and idwall.db in a non-empty directory; keep other files")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.set_defaults(func=cmd_init)

    p = commands.add_parser("serve", help="run the gateway until SIGTERM/SIGINT")
    p.add_argument("--config", help="config file (default: $IDWALL_CONFIG, else ./.idwall/idwall.yaml, "
                                    "created by init on first run)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("keys", help="signing keys")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k = keys.add_parser("rotate", help="make a new assertion key; the old one stays in the JWKS for the overlap")
    k.add_argument("--config", help="config file (default: $IDWALL_CONFIG, else ./.idwall/idwall.yaml)")
    k.set_defaults(func=cmd_keys_rotate)

    p = commands.add_parser("audit", help="the audit ledger")
    audit_cmds = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    a = audit_cmds.add_parser("verify", help="check the whole ledger; exit 1 naming the first bad entry")
    source = a.add_mutually_exclusive_group()
    source.add_argument("--config", help="read the ledger from this gateway's store")
    source.add_argument("--export", help="check a JSON-lines export offline")
    a.add_argument("--root", help="pinned root fingerprint (b64url SHA-256 of the genesis admin's COSE key); "
                   "write --root=FP: a fingerprint may start with '-'")
    a.add_argument("--ledger-key", help="PEM public (or private) ledger key; default: the config's ledger key, "
                                        "or for --export the key the genesis entry records")
    a.add_argument("--head", help="SEQ[:HASH] the ledger must reach (as an earlier verify printed it): "
                                  "catches truncation at the end")
    a.add_argument("--json", action="store_true", help="print the result as one JSON object")
    a.set_defaults(func=cmd_audit_verify)
    a = audit_cmds.add_parser("export", help="print the ledger as JSON lines")
    a.add_argument("--config", help="config file (default: $IDWALL_CONFIG, else ./.idwall/idwall.yaml)")
    a.add_argument("--after", type=int, default=0, help="only entries with seq greater than this")
    a.set_defaults(func=cmd_audit_export)

    p = commands.add_parser("device", help="this device's enrollment")
    device_cmds = p.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    d = device_cmds.add_parser("enroll", help="make a key, create the passkey in a browser, get the certificate")
    d.add_argument("--gateway", required=True, help="gateway URL, https://host:port")
    d.add_argument("--code", required=True, help="enrollment code from an invite (or the bootstrap code)")
    d.add_argument("--out", default=str(DEFAULT_DEVICE_OUT), help="output directory (default: ./idwall-device)")
    d.add_argument("--name", help="device name (default: this host's name)")
    d.add_argument("--ca", help="CA file for the gateway's certificate (default: $IDWALL_CA, else the system store)")
    d.add_argument("--timeout", type=float, default=600, help="seconds to wait for the passkey (default: 600)")
    d.set_defaults(func=cmd_device_enroll)

    p = commands.add_parser("kill", help="cut a user, device, session, group or everyone off now")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--user")
    target.add_argument("--device")
    target.add_argument("--session")
    target.add_argument("--group")
    target.add_argument("--all", action="store_true", help="every session (asks for confirmation)")
    p.add_argument("--reason", required=True, help="why; recorded in the audit ledger")
    p.add_argument("--revoke-devices", action="store_true", help="also revoke the devices (forces re-enrollment)")
    p.add_argument("--gateway", required=True, help="gateway URL, https://host:port")
    p.add_argument("--token-file", required=True, help="file holding a kill token (or an admin token)")
    p.add_argument("--ca", help="CA file for the gateway's certificate (default: $IDWALL_CA, else the system store)")
    p.add_argument("--yes", action="store_true", help="confirm --all without a prompt")
    p.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")
    p.set_defaults(func=cmd_kill)

    # Listed for --help only: main() hands `idwall demo ...` to idwall.demo before parsing,
    # because argparse cannot pass unknown options through a subcommand.
    commands.add_parser("demo", help="run a local demo (gateway, upstream, browser); see idwall demo --help")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``idwall`` command; returns the exit code (0 ok, 1 failed, 2 usage or config)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        return guarded(lambda: cmd_demo(argv[1:]))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    return guarded(lambda: args.func(args))
