"""The commands that talk to a gateway over HTTPS: ``device enroll`` and ``kill``.

Both go through one request helper, ``_call``: the gateway's certificate is verified (``--ca``, else
``IDWALL_CA``, else the system store), redirects are not followed, the body must be a JSON object of at most
``MAX_RESPONSE_BYTES``, and every network or TLS failure becomes a one-line ``CLIError``. Text the gateway
sends back is printed only through ``output.clean``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote, urlsplit

from .output import CONTROL, CLIError, clean, usage

if TYPE_CHECKING:
    import aiohttp
    from cryptography import x509

MAX_RESPONSE_BYTES = 1024 * 1024
REQUEST_TIMEOUT = 30.0
POLL_INTERVAL = 1.0
PROGRESS_LINE_EVERY = 10
KILL_ALL_PHRASE = "kill all"
DEVICE_FILES = ("device.pem", "device-key.pem", "device.p12", "ca.pem")
_ENROLLMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


# --------------------------------------------------------------------------- gateway client


def _gateway_url(text: str) -> str:
    """An https origin (optionally with a path prefix) without a trailing slash."""
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname:
        raise usage(f"--gateway must be an https:// URL, got {text!r} "
                     "(codes and tokens never travel over plain HTTP)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise usage(f"--gateway must be a plain https://host[:port] URL, got {text!r}")
    return text.rstrip("/")


def _ssl_context(ca: str | None) -> ssl.SSLContext:
    """Verify the gateway against --ca, else IDWALL_CA, else the system store."""
    path = ca or os.environ.get("IDWALL_CA")
    if not path:
        return ssl.create_default_context()
    try:
        # With cafile, only that file is trusted: the dev CA is pinned, not added.
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        source = "--ca" if ca else "IDWALL_CA"
        raise usage(f"{source} {path}: not a readable PEM certificate file ({exc})") from None


@dataclass(frozen=True)
class Answer:
    """One gateway answer: HTTP status and the JSON body (a problem for errors)."""

    status: int
    body: dict[str, Any]


class GatewayUnreachable(CLIError):
    """No answer at all (connection refused, reset, timed out)."""


def problem_line(answer: Answer) -> str:
    """An RFC 9457 problem as one line: ``title: detail (HTTP status)``."""
    title = clean(answer.body.get("title") or "error")
    detail = clean(answer.body.get("detail") or "")
    text = f"{title}: {detail}" if detail and detail != title else title
    return f"{text} (HTTP {answer.status})"


async def _call(session: aiohttp.ClientSession, method: str, url: str, *,
                payload: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Answer:
    """One request; the JSON body comes back, whatever the status. Network failures raise CLIError."""
    import aiohttp

    try:
        async with session.request(method, url, json=payload, headers=headers, allow_redirects=False) as resp:
            raw = await resp.content.read(MAX_RESPONSE_BYTES + 1)
            status = resp.status
    except aiohttp.ClientConnectorCertificateError as exc:
        raise CLIError(f"the gateway's TLS certificate is not trusted ({clean(exc.certificate_error)}); "
                       "pass --ca with the gateway CA (ca.pem from idwall init) or set IDWALL_CA") from None
    except aiohttp.ClientSSLError as exc:
        raise CLIError(f"TLS with the gateway failed: {clean(exc)}") from None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        reason = clean(exc) or type(exc).__name__
        raise GatewayUnreachable(f"cannot reach the gateway at {url}: {reason}") from None
    if len(raw) > MAX_RESPONSE_BYTES:
        raise CLIError(f"the gateway answered HTTP {status} with more than {MAX_RESPONSE_BYTES} bytes")
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise CLIError(f"the gateway answered HTTP {status} without a JSON object body ({url})")
    return Answer(status, body)


def _client(ctx: ssl.SSLContext) -> aiohttp.ClientSession:
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    )


# --------------------------------------------------------------------------- device enroll


class _Progress:
    """The waiting line on stderr: rewritten in place on a TTY, one line every 10 s otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last_line = -PROGRESS_LINE_EVERY
        self._dirty = False

    def show(self, text: str, elapsed: float) -> None:
        seconds = int(elapsed)
        if self._tty:
            self._stream.write(f"\r\x1b[K{text}… {seconds}s")
            self._dirty = True
        elif seconds - self._last_line >= PROGRESS_LINE_EVERY:
            self._stream.write(f"{text}… {seconds}s\n")
            self._last_line = seconds
        self._stream.flush()

    def done(self) -> None:
        if self._dirty:
            self._stream.write("\n")
            self._stream.flush()
            self._dirty = False


def _check_outputs(out: Path) -> None:
    existing = [name for name in DEVICE_FILES if (out / name).exists()]
    if existing:
        raise usage(f"{out} already holds {', '.join(existing)}; choose another --out "
                     "(an enrolled device's key is never overwritten)")


def _install(tmp: Path, out: Path) -> list[Path]:
    """Move the finished files into ``out`` (the whole directory when it is new)."""
    if not out.exists():
        os.rename(tmp, out)
    else:
        _check_outputs(out)
        for name in DEVICE_FILES:
            os.rename(tmp / name, out / name)
    return [out / name for name in DEVICE_FILES]


async def _enroll(args: argparse.Namespace, gateway: str, ctx: ssl.SSLContext, tmp: Path) -> None:
    from .. import pki

    name = args.name or clean(socket.gethostname(), 64) or "device"
    key = pki.generate_p256_key()
    # On disk (0600) from the start, in a private temp dir removed on any failure.
    pki.write_private_key(tmp / "device-key.pem", key)
    csr_pem = pki.make_csr(key, name)

    async with _client(ctx) as session:
        begun = await _call(session, "POST", f"{gateway}/idwall/api/enroll/begin",
                            payload={**({"code": args.code} if args.code is not None else {"user": args.user}),
                                     "csr_pem": csr_pem, "device_name": name})
        if not 200 <= begun.status < 300:
            raise CLIError(f"enrollment refused: {problem_line(begun)}")
        enrollment_id = begun.body.get("enrollment_id")
        if not isinstance(enrollment_id, str) or not _ENROLLMENT_ID.match(enrollment_id):
            raise CLIError("the gateway's answer has no valid enrollment_id")
        enroll_url = begun.body.get("enroll_url")
        if not isinstance(enroll_url, str) or not enroll_url.startswith("https://"):
            enroll_url = f"{gateway}/idwall/enroll/{enrollment_id}"
        print(f"Open {clean(enroll_url, 2000)} in a browser on this device to create your passkey", flush=True)

        answer = await _wait_for_certificate(session, f"{gateway}/idwall/api/enroll/{quote(enrollment_id)}",
                                             timeout=args.timeout, self_service=args.code is None)

    cert, cas = certificates_of(answer, done="the device active")
    if cert.public_key() != key.public_key():
        raise CLIError("the gateway issued a certificate for a different key than this device's; nothing was saved")
    chain = [ca for ca in cas if ca.subject == cert.issuer]
    pki.write_cert(tmp / "device.pem", cert)
    (tmp / "ca.pem").write_text("".join(pki.cert_pem(ca) for ca in cas), encoding="utf-8")
    p12 = pki.build_p12(cert, key, chain, name)
    fd = os.open(tmp / "device.p12", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(p12)


def certificates_of(answer: dict[str, Any], *, done: str) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The device certificate and the CA certificates in a gateway answer that reported ``done``."""
    from cryptography import x509

    cert_text, ca_text = answer.get("certificate_pem"), answer.get("ca_pem")
    if not isinstance(cert_text, str) or not isinstance(ca_text, str):
        raise CLIError(f"the gateway reported {done} but sent no certificate_pem and ca_pem")
    try:
        return x509.load_pem_x509_certificate(cert_text.encode()), x509.load_pem_x509_certificates(ca_text.encode())
    except ValueError as exc:
        raise CLIError(f"the gateway sent a certificate that is not valid PEM: {exc}") from None


async def _wait_for_certificate(session: aiohttp.ClientSession, url: str, *, timeout: float,
                                self_service: bool = False) -> dict[str, Any]:
    progress = _Progress(sys.stderr)
    start = time.monotonic()
    said_pending = False
    note = ""
    try:
        while True:
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                raise CLIError(f"no passkey after {int(timeout)}s; the enrollment was not completed "
                               "(start again with a new code if this one has expired)")
            try:
                answer = await _call(session, "GET", url)
            except GatewayUnreachable as exc:
                # A gateway restart must not lose a ceremony the user is in the middle of.
                note = f" (gateway unreachable, retrying: {exc})"
                answer = None
            if answer is not None:
                note = ""
                if answer.status in (404, 410):
                    raise CLIError(f"enrollment ended: {problem_line(answer)}")
                if answer.status >= 500:
                    note = f" (gateway error {answer.status}, retrying)"
                elif not 200 <= answer.status < 300:
                    raise CLIError(f"enrollment failed: {problem_line(answer)}")
                else:
                    status = answer.body.get("status")
                    if status == "active":
                        return answer.body
                    if status in ("expired", "rejected", "revoked"):
                        detail = clean(answer.body.get("detail") or f"the enrollment was {status}")
                        raise CLIError(f"enrollment {status}: {detail}")
                    if status == "pending_approval" and not said_pending:
                        progress.done()
                        by = ("you on that page, with a passkey you still hold, or by an administrator"
                              if self_service else "an administrator or your manager")
                        print(f"The passkey is registered; the device now waits for approval by {by}.",
                              file=sys.stderr, flush=True)
                        said_pending = True
            waiting = "waiting for approval" if said_pending else "waiting for the passkey"
            progress.show(waiting + note, elapsed)
            await asyncio.sleep(POLL_INTERVAL)
    finally:
        progress.done()


def cmd_device_enroll(args: argparse.Namespace) -> int:
    """``idwall device enroll``: key + CSR, passkey in the browser, then the certificate files."""
    gateway = _gateway_url(args.gateway)
    if args.code is not None and not args.code.strip():
        raise usage("--code is empty")
    from ..enrollment import USER_ID_RE

    if args.user is not None and not USER_ID_RE.fullmatch(args.user):
        raise usage("--user must be a user id: 1-64 characters of a-z, 0-9, '.', '_', '-'")
    if args.name is not None and (not 1 <= len(args.name) <= 64 or CONTROL.search(args.name)):
        raise usage("--name must be 1-64 printable characters")
    if args.timeout <= 0:
        raise usage(f"--timeout must be positive, got {args.timeout}")
    ctx = _ssl_context(args.ca)
    out = Path(os.path.abspath(Path(args.out).expanduser()))
    _check_outputs(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.enroll-"))
    try:
        asyncio.run(_enroll(args, gateway, ctx, tmp))
        paths = _install(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("Device enrolled. Files:")
    for path in paths:
        print(f"  {path}")
    return 0


# --------------------------------------------------------------------------- kill


def _kill_scope(args: argparse.Namespace) -> tuple[str, str | None]:
    for scope in ("user", "device", "session", "group"):
        value = getattr(args, scope)
        if value is not None:
            if not value.strip():
                raise usage(f"--{scope} is empty")
            return scope, value
    return "all", None


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise usage(f"cannot read --token-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not token:
        raise usage(f"--token-file {path} is empty")
    if any(ch.isspace() or ord(ch) < 0x21 or ord(ch) == 0x7f for ch in token):
        raise usage(f"--token-file {path} must hold one token without spaces or control characters")
    return token


def _confirm_kill_all(args: argparse.Namespace) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise usage("--all cuts every session of every user; pass --yes to confirm when not at a terminal")
    print(f"This cuts EVERY session of every user. Type {KILL_ALL_PHRASE!r} to go on: ",
          end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip() != KILL_ALL_PHRASE:
        raise usage("not confirmed; nothing was killed")


async def _kill(gateway: str, ctx: ssl.SSLContext, token: str, body: dict[str, Any]) -> Answer:
    async with _client(ctx) as session:
        return await _call(session, "POST", f"{gateway}/idwall/api/admin/kill", payload=body,
                           headers={"Authorization": f"Bearer {token}"})


def cmd_kill(args: argparse.Namespace) -> int:
    """``idwall kill``: the kill switch through the gateway's API."""
    gateway = _gateway_url(args.gateway)
    scope, target = _kill_scope(args)
    reason = args.reason.strip()
    if not reason:
        raise usage("--reason is empty; the audit ledger records why access was cut")
    token = _read_token(args.token_file)
    ctx = _ssl_context(args.ca)
    if scope == "all":
        _confirm_kill_all(args)
    body = {"scope": scope, "target": target, "reason": reason, "revoke_devices": args.revoke_devices}
    answer = asyncio.run(_kill(gateway, ctx, token, body))
    if not 200 <= answer.status < 300:
        raise CLIError(f"kill refused: {problem_line(answer)}")
    if args.json:
        print(json.dumps(answer.body, sort_keys=True))
        return 0
    counts: dict[str, int] = {}
    for field in ("connections_closed", "sessions_revoked", "devices_revoked", "audit_seq"):
        value = answer.body.get(field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise CLIError(f"the gateway's kill answer has no integer {field}; raw answer: "
                           f"{clean(json.dumps(answer.body), 300)}")
        counts[field] = value
    print(f"cut {counts['connections_closed']} connections: {counts['sessions_revoked']} sessions revoked, "
          f"{counts['devices_revoked']} devices revoked (audit seq {counts['audit_seq']})")
    return 0
