"""``idwall demo``: a whole IDWall on this machine, driven end to end through the real HTTP API.

What it does, in order, printing each step:

1. ``idwall init`` into a temporary directory (or ``--dir``), gateway on a free port (or ``--port``);
2. a *whoami* upstream on another free port that trusts nothing but the identity assertion
   (:mod:`idwall.upstream` fetching the gateway's JWKS);
3. the gateway itself;
4. the first administrator's device, enrolled with the bootstrap code by a software passkey
   (:class:`~idwall.testing.SoftAuthenticator`): enroll begin, passkey, enroll finish, the device
   certificate and key written to disk;
5. a passkey login over mTLS with that certificate, then requests through the gateway, showing what the
   upstream verified (user, device, ``amr``, ``htm``/``htu``);
6. a signed ``invite.create`` for ``demo-user`` and a password-protected ``device.p12``, with the steps
   to try it all from a real browser or with ``idwall device enroll``.

Then it keeps running until Ctrl-C or SIGTERM (``--once``: it stops after step 6) and removes the
temporary directory. Nothing here bypasses the gateway: every step is a request a real client would make.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import secrets
import shutil
import signal
import ssl
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import aiohttp
from aiohttp import web
from cryptography import x509

from . import pki
from .config import Config, load_config
from .errors import IDWallError
from .testing import SoftAuthenticator
from .testing.fixtures import client_ssl_context, free_port, init_gateway_dir
from .upstream import AssertionVerifier, JWKSCache, VerifiedIdentity, identity_from_request
from .web.server import RunningGateway, start_gateway

ADMIN = "admin"
INVITED_USER = "demo-user"
DEVICE_NAME = "demo laptop"
EXAMPLE_APP = Path(__file__).resolve().parent.parent / "examples" / "whoami_upstream.py"


class DemoError(IDWallError):
    """A step of the demo got an answer it did not expect from the gateway or the upstream."""


@dataclass(frozen=True)
class DemoOptions:
    """The demo's command line."""

    port: int | None
    once: bool
    dir: Path | None


def parse_args(args: argparse.Namespace | Sequence[str] | None) -> DemoOptions:
    """Options from the CLI's namespace (attributes ``port``, ``once``, ``dir``) or from raw arguments."""
    if isinstance(args, argparse.Namespace):
        directory = getattr(args, "dir", None)
        return DemoOptions(getattr(args, "port", None), bool(getattr(args, "once", False)),
                           Path(directory) if directory else None)
    parser = argparse.ArgumentParser(prog="idwall demo", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, help="gateway port (default: a free one)")
    parser.add_argument("--once", action="store_true", help="stop after the scripted part (for tests)")
    parser.add_argument("--dir", type=Path, help="keep the demo's files here (must be empty or absent) "
                                                 "instead of a temporary directory removed on exit")
    parsed = parser.parse_args(list(args or []))
    return DemoOptions(parsed.port, parsed.once, parsed.dir)


# --------------------------------------------------------------------------- the upstream


def identity_json(identity: VerifiedIdentity) -> dict[str, Any]:
    """What the whoami upstream answers: the verified identity and the request binding it checked."""
    return {"sub": identity.sub, "name": identity.name, "email": identity.email, "groups": list(identity.groups),
            "sid": identity.sid, "amr": list(identity.amr), "auth_time": identity.auth_time,
            "device": identity.device, "cnf_x5t": identity.cnf_x5t, "claims": identity.claims}


_VERIFIER: web.AppKey[AssertionVerifier] = web.AppKey("demo_verifier", AssertionVerifier)


async def _builtin_whoami(request: web.Request) -> web.Response:
    try:
        identity = await identity_from_request(request.app[_VERIFIER], request)
    except IDWallError as error:
        return web.json_response(error.problem(), status=error.status, content_type="application/problem+json")
    return web.json_response(identity_json(identity))


def builtin_whoami_app(verifier: AssertionVerifier) -> web.Application:
    """A minimal whoami (JSON only), used when the repository's ``examples/`` is not installed."""
    app = web.Application()
    app[_VERIFIER] = verifier
    app.router.add_route("*", "/{tail:.*}", _builtin_whoami)
    return app


def _load_example() -> ModuleType | None:
    if not EXAMPLE_APP.is_file():
        return None
    spec = importlib.util.spec_from_file_location("idwall_demo_whoami", EXAMPLE_APP)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def whoami_app(verifier: AssertionVerifier) -> web.Application:
    """``examples/whoami_upstream.py``'s app (HTML for browsers, a WebSocket echo) when present, else the builtin."""
    example = _load_example()
    return example.make_app(verifier) if example is not None else builtin_whoami_app(verifier)


async def start_upstream(app: web.Application, port: int) -> web.AppRunner:
    """Serve ``app`` on 127.0.0.1:``port``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


# --------------------------------------------------------------------------- talking to the gateway


async def call(client: aiohttp.ClientSession, method: str, url: str, body: Any = None,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One JSON request; a non-2xx answer becomes a :class:`DemoError` naming the problem."""
    async with client.request(method, url, json=body, headers=headers) as resp:
        text = await resp.text()
        try:
            data = json.loads(text) if text else {}
        except json.JSONDecodeError:
            data = {"detail": text[:200]}
        if resp.status >= 300:
            detail = data.get("detail") or data.get("title") if isinstance(data, dict) else text[:200]
            raise DemoError(f"{method} {url} answered {resp.status}: {detail}")
        if not isinstance(data, dict):
            raise DemoError(f"{method} {url} answered {type(data).__name__}, expected a JSON object")
        return data


@dataclass(frozen=True)
class EnrolledDevice:
    """The admin device the demo enrolled: where its files are and what the gateway said."""

    device_id: str
    cert_path: Path
    key_path: Path
    ca_path: Path
    root_fingerprint: str | None
    certificate: x509.Certificate
    key: Any


async def enroll_device(base: str, ca_pem: Path, code: str, out: Path,
                        authenticator: SoftAuthenticator) -> EnrolledDevice:
    """Enroll a new device with ``code`` through the API, the way ``idwall device enroll`` does."""
    key = pki.generate_p256_key()
    csr_pem = pki.make_csr(key, "demo-device")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl_context(ca_pem))) as client:
        begun = await call(client, "POST", base + "/idwall/api/enroll/begin",
                           {"code": code, "csr_pem": csr_pem, "device_name": DEVICE_NAME})
        print(f"  enrollment {begun['enrollment_id']}: passkey page {begun.get('enroll_url', '')}")
        registration = authenticator.create(begun["options"])
        finished = await call(client, "POST", base + "/idwall/api/enroll/finish",
                              {"enrollment_id": begun["enrollment_id"], "credential": registration})
    if finished.get("status") != "active" or not finished.get("certificate_pem"):
        raise DemoError(f"enrollment finished as {finished.get('status')!r} without a certificate")
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path, ca_path = out / "device.pem", out / "device-key.pem", out / "ca.pem"
    cert_path.write_text(finished["certificate_pem"])
    pki.write_private_key(key_path, key)
    ca_path.write_text(finished.get("ca_pem") or ca_pem.read_text())
    return EnrolledDevice(finished["device_id"], cert_path, key_path, ca_path, finished.get("root_fingerprint"),
                          x509.load_pem_x509_certificate(finished["certificate_pem"].encode()), key)


async def signed_action(client: aiohttp.ClientSession, base: str, authenticator: SoftAuthenticator,
                        action: dict[str, Any]) -> dict[str, Any]:
    """Begin a signed action, sign its challenge with the passkey, finish it; return its result."""
    begun = await call(client, "POST", base + "/idwall/api/actions/begin", {"action": action})
    assertion = authenticator.get(begun["options"])
    finished = await call(client, "POST", base + "/idwall/api/actions/finish",
                          {"action_id": begun["action_id"], "credential": assertion})
    result = finished.get("result")
    if not isinstance(result, dict):
        raise DemoError("the signed action answered without a result object")
    return result


def _show(label: str, seen: dict[str, Any]) -> None:
    claims = seen.get("claims", {})
    device = seen.get("device") or {}
    print(f"  {label}")
    print(f"    sub={seen.get('sub')} groups={seen.get('groups')} sid={seen.get('sid')}")
    print(f"    device={device.get('id')} ({device.get('name')}) amr={seen.get('amr')}")
    print(f"    htm={claims.get('htm')} htu={claims.get('htu')} aud={claims.get('aud')} iss={claims.get('iss')}")


# --------------------------------------------------------------------------- the script


@dataclass
class Demo:
    """The running pieces, so they can be stopped in reverse order."""

    directory: Path
    remove_directory: bool
    upstream: web.AppRunner | None = None
    gateway: RunningGateway | None = None

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop(drain=1)
        if self.upstream is not None:
            await self.upstream.cleanup()
        if self.remove_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


async def _script(demo: Demo, options: DemoOptions) -> None:
    gateway_port = options.port or free_port()
    upstream_port = free_port()
    gw_dir, device_dir = demo.directory / "gateway", demo.directory / "device"

    print(f"[1/6] idwall init in {gw_dir}")
    info = await asyncio.to_thread(init_gateway_dir, gw_dir, port=gateway_port, admin=ADMIN,
                                   upstream=f"http://127.0.0.1:{upstream_port}")
    config: Config = load_config(info["config"])
    base, ca_pem = config.public_url, Path(info["ca_pem"])
    print(f"  gateway {base}, gateway CA {ca_pem}")

    print(f"[2/6] whoami upstream on http://127.0.0.1:{upstream_port} (verifies assertions with the gateway JWKS)")
    verifier = AssertionVerifier(
        keys=JWKSCache(base + "/.well-known/idwall/jwks.json", ssl_context=ssl.create_default_context(cafile=ca_pem)),
        issuer=base, audience="whoami")
    demo.upstream = await start_upstream(whoami_app(verifier), upstream_port)

    print(f"[3/6] gateway on {base}")
    demo.gateway = await start_gateway(config)

    print("[4/6] enrolling the admin's device with the bootstrap code and a software passkey")
    authenticator = SoftAuthenticator(origin=config.webauthn.origins[0])
    device = await enroll_device(base, ca_pem, info["bootstrap_code"], device_dir, authenticator)
    print(f"  device {device.device_id}: certificate {device.cert_path}, key {device.key_path}")
    if device.root_fingerprint:
        print(f"  root fingerprint (pin it: idwall audit verify --root=...): {device.root_fingerprint}")

    print("[5/6] passkey login over mTLS with the device certificate, then requests through the gateway")
    ctx = client_ssl_context(device.ca_path, device.cert_path, device.key_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1)) as client:
        begun = await call(client, "POST", base + "/idwall/api/login/begin", {})
        login = await call(client, "POST", base + "/idwall/api/login/finish",
                           {"credential": authenticator.get(begun["options"])})
        print(f"  session {login.get('session_id')} for {login.get('user')}")
        accept = {"Accept": "application/json"}
        _show("GET /hello: the upstream saw", await call(client, "GET", base + "/hello?greeting=1", headers=accept))
        _show("POST /api/things: the upstream saw",
              await call(client, "POST", base + "/api/things", {"name": "demo"}, headers=accept))

        print(f"[6/6] signed action invite.create for {INVITED_USER}, and a device bundle for a browser")
        invite = await signed_action(client, base, authenticator, {
            "type": "invite.create", "user": INVITED_USER, "name": "Demo User",
            "email": f"{INVITED_USER}@example.com", "groups": ["eng"], "admin": False})

    password = secrets.token_urlsafe(12)
    p12_path = device_dir / "device.p12"
    bundle = pki.build_p12(device.certificate, device.key, [pki.load_cert(config.device_ca.cert)],
                           "IDWall demo device", password=password.encode())
    # It holds the device key: private from creation, never briefly world-readable.
    with os.fdopen(os.open(p12_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        handle.write(bundle)
    _instructions(base=base, ca=device.ca_path, p12=p12_path, password=password, code=invite.get("code"),
                  temporary=demo.remove_directory, directory=demo.directory)


def _instructions(*, base: str, ca: Path, p12: Path, password: str, code: Any, temporary: bool,
                  directory: Path) -> None:
    print()
    print("Try it from a real browser as the admin:")
    print(f"  1. trust the gateway CA {ca} (Chromium: Settings > Privacy and security > Security >")
    print("     Manage certificates > Authorities > Import)")
    print(f"  2. import the admin device bundle {p12} (Your certificates > Import), password: {password}")
    print(f"  3. open {base}/ and pick the certificate: the demo signed this device in, so the browser is")
    print(f"     signed in as {ADMIN} until the session ends ({base}/idwall/login shows it). Signing in")
    print("     again needs the demo's software passkey; to use a passkey of your own, enroll as below.")
    print(f"Or enroll a device of your own as {INVITED_USER}, with the invite the admin just signed:")
    print(f"     idwall device enroll --gateway {base} --code {code} --ca {ca}")
    print(f"  open the page it prints, create a passkey, import the device.p12 it writes, and open {base}/")
    if temporary:
        print(f"Files in {directory} are removed when the demo stops.")


async def _run(options: DemoOptions) -> int:
    if options.dir is not None:
        options.dir.mkdir(parents=True, exist_ok=True)
        if any(options.dir.iterdir()):
            print(f"idwall demo: {options.dir} is not empty", file=sys.stderr)
            return 2
        demo = Demo(options.dir.resolve(), remove_directory=False)
    else:
        demo = Demo(Path(tempfile.mkdtemp(prefix="idwall-demo-")), remove_directory=True)
    try:
        await _script(demo, options)
        if options.once:
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print("The demo keeps running; press Ctrl-C to stop it.", flush=True)
        await stop.wait()
        return 0
    finally:
        await demo.stop()


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run the demo (see the module docstring); returns the exit code."""
    options = parse_args(args)
    try:
        return asyncio.run(_run(options))
    except DemoError as exc:
        print(f"idwall demo: {exc.detail}", file=sys.stderr)
        return 1


__all__ = ["DemoError", "DemoOptions", "builtin_whoami_app", "identity_json", "main", "parse_args", "whoami_app"]
