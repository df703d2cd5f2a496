"""The ``idwall`` argument parser: every verb and its flags, in one place.

Each verb's ``func`` is the command that runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .client import cmd_device_enroll, cmd_kill
from .connect import add_parser as add_connect
from .incident import add_parsers as add_incident_verbs
from .local import cmd_audit_export, cmd_audit_verify, cmd_init, cmd_keys_rotate, cmd_serve
from .relay import add_parser as add_relay
from .renew import add_parser as add_device_renew
from .sign import add_device_approve, add_sign_verbs

DEFAULT_DEVICE_OUT = Path("idwall-device")


def build_parser() -> argparse.ArgumentParser:
    """The whole ``idwall`` argument parser."""
    parser = argparse.ArgumentParser(prog="idwall", description="IDWall: passkey-backed mTLS identity gateway")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("init", help="create a gateway directory: PKI, keys, config, store, bootstrap code")
    p.add_argument("--dir", required=True, help="directory to create (refused when not empty, unless --force)")
    p.add_argument("--admin", default="admin", help="user id of the first administrator (default: admin)")
    p.add_argument("--port", type=int, default=8443, help="HTTPS port (default: 8443)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--store", help="a postgresql://user@host:port/db URL for several nodes (default: idwall.db "
                   "in the directory); refused when that database holds a gateway, unless --force")
    p.add_argument("--force", action="store_true",
                   help="replace idwall.yaml, certs/ and idwall.db in a non-empty directory, keeping other files, "
                   "and the gateway a --store database holds")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.set_defaults(func=cmd_init)

    p = commands.add_parser("serve", help="run the gateway until SIGTERM/SIGINT")
    p.add_argument("--config", help="config file (default: $IDWALL_CONFIG, else ./.idwall/idwall.yaml, "
                                    "created by init on first run)")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="address to accept on, overriding the config's listen (e.g. 10.0.0.21:8443, [::]:8443)")
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
    given = d.add_mutually_exclusive_group(required=True)
    given.add_argument("--code", help="enrollment code from an invite (or the bootstrap code)")
    given.add_argument("--user", help="your user id, to enroll another device of yours without a code (it waits "
                                      "until you approve it on its page with a passkey you hold, or an approver does)")
    d.add_argument("--out", default=str(DEFAULT_DEVICE_OUT), help="output directory (default: ./idwall-device)")
    d.add_argument("--name", help="device name (default: this host's name)")
    d.add_argument("--ca", help="CA file for the gateway's certificate (default: $IDWALL_CA, else the system store)")
    d.add_argument("--timeout", type=float, default=600, help="seconds to wait for the passkey (default: 600)")
    d.set_defaults(func=cmd_device_enroll)
    add_device_approve(device_cmds)
    add_device_renew(device_cmds)

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

    add_connect(commands, DEFAULT_DEVICE_OUT)
    add_relay(commands)
    add_sign_verbs(commands)
    add_incident_verbs(commands)

    # Listed for --help only: main() hands `idwall demo ...` to idwall.demo before parsing,
    # because argparse cannot pass unknown options through a subcommand.
    commands.add_parser("demo", help="run a local demo (gateway, upstream, browser); see idwall demo --help")
    return parser
