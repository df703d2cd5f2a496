"""``idwall device renew``: a new key and certificate for an enrolled device, before its certificate expires.

The device makes a new P-256 key and a CSR for it, and asks the gateway over its current mTLS connection
(``POST /idwall/api/renew/begin``, with ``DIR/device.pem`` and ``DIR/device-key.pem``). The gateway answers the
page where the user signs ``device.renew`` with a passkey bound to this device, in a browser that presents
this device's certificate; this command prints it, polls the renewal (plain TLS: a certificate is no secret)
and, once renewed, writes the new ``device.pem``, ``device-key.pem`` (0600) and ``device.p12``.

The new files are written complete into a private directory inside ``DIR`` first and then each moved over
the old one with an atomic rename, the key first: a file is never half written, and if moving fails the
complete new set stays in that directory (the error names it). The old certificate stops working at the
gateway the moment the renewal is signed; the session carries over to the new one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import ssl
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .client import (
    GatewayUnreachable,
    _call,
    _client,
    _gateway_url,
    _Progress,
    _ssl_context,
    certificates_of,
    problem_line,
)
from .output import CLIError, clean, usage

DEFAULT_DEVICE_DIR = Path("idwall-device")
RENEWED_FILES = ("device-key.pem", "device.pem", "device.p12")  # in the order they are moved in
POLL_INTERVAL = 1.0
_RENEWAL_ID = re.compile(r"^ren-[A-Za-z0-9_-]{1,124}$")


def add_parser(device_cmds: Any) -> None:
    """Register ``idwall device renew`` under the ``device`` verbs."""
    d = device_cmds.add_parser("renew", help="a new key and certificate for this device, signed with your passkey")
    d.add_argument("--gateway", required=True, help="gateway URL, https://host:port")
    d.add_argument("--dir", default=str(DEFAULT_DEVICE_DIR),
                   help="the enrolled device's directory (device.pem, device-key.pem; default: ./idwall-device)")
    d.add_argument("--ca", help="CA file for the gateway's certificate (default: $IDWALL_CA, else DIR/ca.pem, "
                                "else the system store)")
    d.add_argument("--timeout", type=float, default=600, help="seconds to wait for the passkey (default: 600)")
    d.set_defaults(func=cmd_device_renew)


def _server_context(ca: str | None, directory: Path) -> ssl.SSLContext:
    """--ca, else IDWALL_CA, else the ca.pem ``device enroll`` saved beside the device files."""
    saved = directory / "ca.pem"
    if ca is None and not os.environ.get("IDWALL_CA") and saved.is_file():
        ca = str(saved)
    return _ssl_context(ca)


def _current(directory: Path) -> tuple[Any, str]:
    """The device's current certificate and its device id; refuses missing files and an expired certificate."""
    from cryptography import x509

    from .. import pki

    cert_path, key_path = directory / "device.pem", directory / "device-key.pem"
    for path in (cert_path, key_path):
        if not path.is_file():
            raise usage(f"{path} not found; --dir must be the directory idwall device enroll wrote")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as exc:
        raise usage(f"{cert_path}: not a PEM certificate ({exc})") from None
    device_id = pki.device_id_from_cert(cert)
    if device_id is None:
        raise usage(f"{cert_path} is not an IDWall device certificate (it names no urn:idwall:device)")
    if cert.not_valid_after_utc <= datetime.now(timezone.utc):
        raise CLIError(f"the certificate of device {device_id} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} "
                       "UTC; an expired certificate cannot renew: enroll the device again with a new invite")
    return cert, device_id


def _device_context(server: ssl.SSLContext, directory: Path) -> ssl.SSLContext:
    try:
        server.load_cert_chain(str(directory / "device.pem"), str(directory / "device-key.pem"))
    except (OSError, ssl.SSLError) as exc:
        raise usage(f"{directory}: device.pem and device-key.pem are not a usable pair ({exc})") from None
    return server


async def _poll(session: Any, url: str) -> dict[str, Any] | str:
    """One look at the renewal: its answer once renewed, else a note for the waiting line."""
    try:
        answer = await _call(session, "GET", url)
    except GatewayUnreachable as exc:
        return f" (gateway unreachable, retrying: {exc})"  # a gateway restart must not lose the renewal
    if answer.status >= 500:
        return f" (gateway error {answer.status}, retrying)"
    if not 200 <= answer.status < 300:
        raise CLIError(f"renewal ended: {problem_line(answer)}")
    if answer.body.get("status") == "expired":
        raise CLIError("the renewal request expired before a passkey signed it; run idwall device renew again")
    return answer.body if answer.body.get("status") == "renewed" else ""


async def _wait_for_renewal(session: Any, url: str, *, timeout: float) -> dict[str, Any]:
    progress = _Progress(sys.stderr)
    start = time.monotonic()
    try:
        while (elapsed := time.monotonic() - start) <= timeout:
            seen = await _poll(session, url)
            if isinstance(seen, dict):
                return seen
            progress.show("waiting for the passkey" + seen, elapsed)
            await asyncio.sleep(POLL_INTERVAL)
    finally:
        progress.done()
    raise CLIError(f"no passkey after {int(timeout)}s; the certificate was not renewed (run idwall device renew "
                   "again)")


def _renewal_page(begun: Any, gateway: str) -> tuple[str, str]:
    """The renewal id and the page to open, from the gateway's answer to begin (only ever a page of its own)."""
    renewal_id = begun.body.get("renewal_id") if 200 <= begun.status < 300 else None
    if renewal_id is None:
        raise CLIError(f"renewal refused: {problem_line(begun)}")
    if not isinstance(renewal_id, str) or not _RENEWAL_ID.match(renewal_id):
        raise CLIError("the gateway's answer has no valid renewal_id")
    url = begun.body.get("renew_url")
    own = isinstance(url, str) and url.startswith(gateway + "/idwall/renew/")
    return renewal_id, url if own else f"{gateway}/idwall/renew/{renewal_id}"


async def _renew(gateway: str, server: ssl.SSLContext, device: ssl.SSLContext, csr_pem: str, *,
                 timeout: float) -> dict[str, Any]:
    async with _client(device) as session:
        begun = await _call(session, "POST", f"{gateway}/idwall/api/renew/begin", payload={"csr_pem": csr_pem})
    renewal_id, url = _renewal_page(begun, gateway)
    print(f"Open {clean(url, 2000)} in a browser that uses this device's certificate, and sign with a passkey "
          "of this device", flush=True)
    async with _client(server) as session:
        return await _wait_for_renewal(session, f"{gateway}/idwall/api/renew/{quote(renewal_id)}", timeout=timeout)


def _write_new(tmp: Path, key: Any, answer: dict[str, Any], device_id: str) -> str:
    """The renewed files, complete, in ``tmp``; returns the certificate's expiry for the summary."""
    from .. import pki

    cert, cas = certificates_of(answer, done="the renewal done")
    if cert.public_key() != key.public_key() or pki.device_id_from_cert(cert) != device_id:
        raise CLIError("the gateway issued a certificate for another key or device than this one; nothing was saved")
    chain = [ca for ca in cas if ca.subject == cert.issuer]
    pki.write_cert(tmp / "device.pem", cert)
    fd = os.open(tmp / "device.p12", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pki.build_p12(cert, key, chain, device_id))
    return f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"


def _install(tmp: Path, directory: Path) -> list[Path]:
    """Move each renewed file over the old one (atomic renames, the key first)."""
    try:
        for name in RENEWED_FILES:
            os.replace(tmp / name, directory / name)
    except OSError as exc:
        raise CLIError(f"could not move the renewed files into {directory} ({exc}); the complete new set is in "
                       f"{tmp}: move device-key.pem, device.pem and device.p12 from there by hand") from None
    return [directory / name for name in RENEWED_FILES]


def cmd_device_renew(args: argparse.Namespace) -> int:
    """``idwall device renew``: new key + CSR over the current mTLS, passkey in the browser, new files."""
    from .. import pki

    gateway = _gateway_url(args.gateway)
    if args.timeout <= 0:
        raise usage(f"--timeout must be positive, got {args.timeout}")
    directory = Path(os.path.abspath(Path(args.dir).expanduser()))
    _, device_id = _current(directory)
    server = _server_context(args.ca, directory)
    device = _device_context(_server_context(args.ca, directory), directory)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".renew-"))
    keep = False
    try:
        key = pki.generate_p256_key()
        # On disk (0600) from the start, in a private directory removed unless it holds the only new set.
        pki.write_private_key(tmp / "device-key.pem", key)
        answer = asyncio.run(_renew(gateway, server, device, pki.make_csr(key, device_id), timeout=args.timeout))
        # From here the gateway knows only the new key: whatever fails, the new key is not thrown away.
        keep = True
        expires = _write_new(tmp, key, answer, device_id)
        paths = _install(tmp, directory)
        keep = False
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"Certificate of device {device_id} renewed, valid until {expires}. Files:")
    for path in paths:
        print(f"  {path}")
    print("Import the new device.p12 into your browser; the old certificate no longer works.")
    return 0
