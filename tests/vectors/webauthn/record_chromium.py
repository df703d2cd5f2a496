"""Record the ``chromium-*`` WebAuthn vectors of this directory from Debian's Chromium.

Run ``python tests/vectors/webauthn/record_chromium.py`` on a machine with ``/usr/bin/chromium`` and Playwright
for Python (its driver only: the browser is Debian's, never one ``playwright install`` downloads). It

1. makes a throw-away CA and a ``localhost`` server certificate with :mod:`idwall.pki`, and serves a blank page
   over https on two ports of 127.0.0.1 (origins ``https://localhost:<port>``, RP ID ``localhost``);
2. launches Chromium with the browser tests' arguments and a context that trusts that CA the way the browser
   tests' contexts do (Playwright's TLS proxy, which checks servers against ``NODE_EXTRA_CA_CERTS``; never
   ``ignore_https_errors``), and adds the CDP virtual authenticator of the browser tests (ctap2, internal,
   resident keys, user verification);
3. calls ``navigator.credentials.create()`` / ``.get()`` with options made by
   :func:`idwall.passkeys.registration_options` / :func:`~idwall.passkeys.authentication_options`, parsed by
   the browser's own ``PublicKeyCredential.parse*OptionsFromJSON``, and keeps what ``credential.toJSON()``
   returns, byte for byte;
4. writes ``valid/chromium-*.json`` (credentials as recorded) and ``invalid/chromium-*.json`` (recorded
   credentials checked against the wrong expectation, or mutated after recording: each description says
   which), replacing the previous recording, then runs ``tests/test_passkeys.py -k vector`` over them.

Chromium's virtual authenticator makes ES256, EdDSA and RS256 credentials alike, so all three are recorded. Its
counter is per credential: 1 at registration, one more at every assertion. Chromium adds a random
``"other_keys_can_be_added_here"`` member to about one clientDataJSON in four (so that relying parties do not
compare it to a template); the recorder asks again until it has one of each ceremony with it.

A recorded credential that :mod:`idwall.passkeys` refuses fails the test run at the end: that is a product bug
to report (the failing vector names the field), not a vector to edit.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import os
import ssl
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
# Run as a script: this worktree's idwall and tests.helpers, not whatever copy of idwall is installed.
sys.path.insert(0, str(ROOT))

import cbor2  # noqa: E402
import playwright.async_api as playwright_api  # noqa: E402
from aiohttp import web  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from idwall import passkeys, pki  # noqa: E402
from idwall.encoding import b64url_decode, b64url_encode, sha256  # noqa: E402
from idwall.testing import EDDSA, ES256, RS256  # noqa: E402
from idwall.testing.fixtures import free_port  # noqa: E402
from tests.helpers.browser import (  # noqa: E402
    AUTHENTICATOR, credentials_of, launch, virtual_authenticator, write_device,
)

HERE = Path(__file__).parent
RP_ID = "localhost"
OTHER_RP_ID = "gateway.example"
REG_CHALLENGE = sha256(b"idwall chromium vectors: registration")
AUTH_CHALLENGE = sha256(b"idwall chromium vectors: authentication")
SECOND_CHALLENGE = sha256(b"idwall chromium vectors: second authentication")
OTHER_CHALLENGE = sha256(b"idwall chromium vectors: another ceremony")
ALGORITHMS = {ES256: ("es256", "ES256"), EDDSA: ("eddsa", "EdDSA"), RS256: ("rs256", "RS256")}  # file name, label
EXTRA_KEY = b'"other_keys_can_be_added_here"'
MAX_TRIES = 60  # at one clientDataJSON in four, 60 tries all without the extra member would be a change in Chromium
FLAG_UP, FLAG_UV, FLAG_BS = 0x01, 0x04, 0x10  # authenticator data flags, WebAuthn §6.1
PAGE = "<!doctype html><meta charset=utf-8><title>IDWall WebAuthn vector recorder</title>"
# The browser's own JSON <-> WebAuthn conversions (WebAuthn Level 3 §5.1.8, §5.1.9, §5.1.10).
CEREMONY_JS = """async ([kind, options]) => {
  const publicKey = kind === "create" ? PublicKeyCredential.parseCreationOptionsFromJSON(options)
                                      : PublicKeyCredential.parseRequestOptionsFromJSON(options);
  const credential = await navigator.credentials[kind]({publicKey});
  return credential.toJSON();
}"""


@dataclass
class Registered:
    """A credential Chromium made, with what an RP stores after verifying it."""

    credential: dict[str, Any]  # RegistrationResponseJSON as recorded
    credential_id: bytes
    public_key: bytes  # the COSE key, as the attested credential data holds it
    alg: int
    sign_count: int
    user_verified: bool
    backed_up: bool
    aaguid: str
    last_count: int = field(init=False)  # the counter of the newest assertion recorded with this credential
    user_handle: bytes = b""  # the user.id it was created for

    def __post_init__(self) -> None:
        self.last_count = self.sign_count


def _attested(credential: dict[str, Any]) -> Registered:
    """Read a registration response's authenticator data (WebAuthn §6.1, §6.5.1) without idwall or py_webauthn."""
    attestation = cbor2.loads(b64url_decode(credential["response"]["attestationObject"]))
    auth_data: bytes = attestation["authData"]
    flags = auth_data[32]
    id_length = int.from_bytes(auth_data[53:55], "big")
    key_at = 55 + id_length
    stream = io.BytesIO(auth_data[key_at:])
    cose = cbor2.CBORDecoder(stream).decode()
    return Registered(
        credential=credential, credential_id=auth_data[55:key_at], public_key=auth_data[key_at:key_at + stream.tell()],
        alg=cose[3], sign_count=int.from_bytes(auth_data[33:37], "big"), user_verified=bool(flags & FLAG_UV),
        backed_up=bool(flags & FLAG_BS), aaguid=str(uuid.UUID(bytes=auth_data[37:53])),
    )


def _asserted(credential: dict[str, Any]) -> tuple[int, int]:
    """(flags, counter) of an authentication response's authenticator data."""
    auth_data = b64url_decode(credential["response"]["authenticatorData"])
    return auth_data[32], int.from_bytes(auth_data[33:37], "big")


def _client_data(credential: dict[str, Any]) -> bytes:
    return b64url_decode(credential["response"]["clientDataJSON"])


class Chromium:
    """One page of Chromium with a virtual authenticator, on the recorder's two origins."""

    def __init__(self, browser: Any, page: Any, cdp: Any, authenticator_id: str, origins: tuple[str, str]) -> None:
        self.browser, self.page, self.cdp, self.authenticator_id = browser, page, cdp, authenticator_id
        self.origins = origins
        self.at: str | None = None
        self.source = f"chromium {browser.version}"

    async def _on(self, origin: str) -> None:
        if self.at != origin:
            await self.page.goto(origin + "/")
            self.at = origin

    async def create(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        await self._on(origin or self.origins[0])
        credential: dict[str, Any] = await self.page.evaluate(CEREMONY_JS, ["create", options])
        return credential

    async def get(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        await self._on(origin or self.origins[0])
        credential: dict[str, Any] = await self.page.evaluate(CEREMONY_JS, ["get", options])
        return credential

    async def without_user_verification(self) -> None:
        """Replace the authenticator by one that cannot verify the user (its credentials go with it)."""
        await self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.authenticator_id})
        options = AUTHENTICATOR | {"hasUserVerification": False, "isUserVerified": False}
        added = await self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})
        self.authenticator_id = added["authenticatorId"]

    async def private_key(self, credential_id: bytes) -> Any:
        """The credential's private key, exported by the virtual authenticator (CDP ``WebAuthn.getCredentials``)."""
        for held in await credentials_of(self.cdp, self.authenticator_id):
            if base64.b64decode(held["credentialId"]) == credential_id:
                return serialization.load_der_private_key(base64.b64decode(held["privateKey"]), password=None)
        raise LookupError(f"the virtual authenticator holds no credential {b64url_encode(credential_id)}")


def _user_handle(user: str) -> bytes:
    return f"user-{user}".encode()


def _reg_options(alg: int, user: str, *, user_verification: str = "required") -> dict[str, Any]:
    """Our registration options, with ``pubKeyCredParams`` narrowed to ``alg`` so Chromium must use it."""
    options = passkeys.registration_options(
        rp_id=RP_ID, rp_name="IDWall", user_id=_user_handle(user), user_name=user, display_name=user.title(),
        challenge=REG_CHALLENGE, timeout_ms=300_000, user_verification=user_verification, exclude=[],
    )
    options["pubKeyCredParams"] = [param for param in options["pubKeyCredParams"] if param["alg"] == alg]
    return options


def _auth_options(allow: bytes, challenge: bytes = AUTH_CHALLENGE, *,
                  user_verification: str = "required") -> dict[str, Any]:
    return passkeys.authentication_options(
        rp_id=RP_ID, challenge=challenge, allow=[allow], timeout_ms=300_000, user_verification=user_verification
    )


class Recording:
    """The vectors of one recording session, written all at once at the end."""

    def __init__(self, chromium: Chromium) -> None:
        self.chromium = chromium
        self.origin, self.other_origin = chromium.origins
        self.vectors: dict[tuple[str, str], dict[str, Any]] = {}

    def _add(self, folder: str, name: str, vector: dict[str, Any]) -> None:
        key = (folder, f"chromium-{name}")
        assert key not in self.vectors, key
        self.vectors[key] = {"description": vector.pop("description"), "source": self.chromium.source} | vector

    def _expected(self, challenge: bytes, reg: Registered | None = None, **extra: Any) -> dict[str, Any]:
        expected = {"challenge": b64url_encode(challenge), "rp_id": RP_ID, "origins": [self.origin],
                    "require_uv": True}
        if reg is not None:
            expected |= {"credential_id": b64url_encode(reg.credential_id), "public_key": b64url_encode(reg.public_key),
                         "stored_sign_count": reg.last_count, "user_handle": b64url_encode(reg.user_handle)}
        return expected | extra

    async def register(self, alg: int, user: str, *, user_verification: str = "required",
                       origin: str | None = None) -> Registered:
        registered = _attested(await self.chromium.create(_reg_options(alg, user, user_verification=user_verification),
                                                          origin=origin))
        registered.user_handle = _user_handle(user)
        return registered

    async def assertion(self, reg: Registered, challenge: bytes = AUTH_CHALLENGE, *,
                        user_verification: str = "required", origin: str | None = None) -> tuple[dict[str, Any], int]:
        """A fresh assertion with ``reg`` and the count the RP had stored before it (its previous counter)."""
        options = _auth_options(reg.credential_id, challenge, user_verification=user_verification)
        credential = await self.chromium.get(options, origin=origin)
        stored, (_, reg.last_count) = reg.last_count, _asserted(credential)
        return credential, stored

    def valid_registration(self, name: str, description: str, reg: Registered) -> None:
        self._add("valid", name, {
            "description": description, "ceremony": "registration", "expected": self._expected(REG_CHALLENGE),
            "credential": reg.credential,
            "result": {"credential_id": b64url_encode(reg.credential_id), "alg": reg.alg, "sign_count": reg.sign_count,
                       "user_verified": reg.user_verified, "aaguid": reg.aaguid, "credential_type": "public-key",
                       "backed_up": reg.backed_up},
        })

    def valid_authentication(self, name: str, description: str, reg: Registered, credential: dict[str, Any],
                             stored: int, **expected: Any) -> None:
        flags, count = _asserted(credential)
        user_verified = bool(flags & FLAG_UV)
        self._add("valid", name, {
            "description": description, "ceremony": "authentication",
            "expected": self._expected(AUTH_CHALLENGE, reg, stored_sign_count=stored) | expected,
            "credential": credential,
            "result": {"credential_id": credential["rawId"], "new_sign_count": count, "user_verified": user_verified,
                       "user_present": bool(flags & FLAG_UP),
                       "amr": ["hwk", "user", "mfa"] if user_verified else ["hwk"]},
        })

    def invalid(self, name: str, description: str, credential: Any, expected: dict[str, Any], error: str,
                message: str) -> None:
        ceremony = "registration" if name.startswith("reg-") else "authentication"
        self._add("invalid", name, {"description": description, "ceremony": ceremony, "expected": expected,
                                    "credential": credential, "error": error, "message": message})

    def write(self) -> None:
        """Replace the previous Chromium recording (a case no longer recorded must not linger)."""
        for folder in ("valid", "invalid"):
            for old in (HERE / folder).glob("chromium-*.json"):
                old.unlink()
        for (folder, name), vector in sorted(self.vectors.items()):
            (HERE / folder / f"{name}.json").write_text(json.dumps(vector, indent=2) + "\n")


def _with_response(credential: dict[str, Any], **fields: bytes) -> dict[str, Any]:
    changed = copy.deepcopy(credential)
    for key, value in fields.items():
        changed["response"][key] = b64url_encode(value)
    return changed


def _replaced(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, (old, data)
    return data.replace(old, new)


def _resigned(key: Any, credential: dict[str, Any], client_data: bytes) -> dict[str, Any]:
    """``credential`` with another clientDataJSON, signed again by the credential's own (ES256) key."""
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    auth_data = b64url_decode(credential["response"]["authenticatorData"])
    signature = key.sign(auth_data + sha256(client_data), ec.ECDSA(hashes.SHA256()))
    return _with_response(credential, clientDataJSON=client_data, signature=signature)


async def record_valid(rec: Recording) -> dict[int, Registered]:
    registered: dict[int, Registered] = {}
    for alg, (name, label) in ALGORITHMS.items():
        reg = registered[alg] = await rec.register(alg, f"alice-{name}")
        rec.valid_registration(f"registration-{name}", f"{label} passkey made by Chromium's virtual "
                               "authenticator, attestation none, user verified, as recorded", reg)
        first, stored = await rec.assertion(reg)
        rec.valid_authentication(f"authentication-{name}", f"{label} assertion, first use (count {stored} from "
                                 f"the registration -> {_asserted(first)[1]}), user verified, as recorded",
                                 reg, first, stored)
        second, stored = await rec.assertion(reg, SECOND_CHALLENGE)
        rec.valid_authentication(f"authentication-{name}-second-use", f"{label} assertion, second use for a new "
                                 f"challenge (count {stored} -> {_asserted(second)[1]}), as recorded", reg, second,
                                 stored, challenge=b64url_encode(SECOND_CHALLENGE))
    es = registered[ES256]
    no_uv, stored = await rec.assertion(es, user_verification="discouraged")
    rec.valid_authentication("authentication-no-uv-not-required", 'assertion asked with userVerification '
                             '"discouraged" (UV flag clear) where UV is not required: possession only, as recorded',
                             es, no_uv, stored, require_uv=False)
    for _ in range(MAX_TRIES):
        extra, stored = await rec.assertion(es)
        if EXTRA_KEY in _client_data(extra):
            break
    else:
        raise SystemExit(f"no clientDataJSON of {MAX_TRIES} assertions had Chromium's {EXTRA_KEY.decode()}")
    rec.valid_authentication("authentication-es256-extra-client-data-member", "clientDataJSON with Chromium's "
                             'random "other_keys_can_be_added_here" member after crossOrigin, as recorded', es,
                             extra, stored)
    for attempt in range(MAX_TRIES):
        reg = await rec.register(ES256, f"carol-{attempt}")
        if EXTRA_KEY in _client_data(reg.credential):
            break
    else:
        raise SystemExit(f"no clientDataJSON of {MAX_TRIES} registrations had Chromium's {EXTRA_KEY.decode()}")
    rec.valid_registration("registration-es256-extra-client-data-member", "registration whose clientDataJSON has "
                           'Chromium\'s random "other_keys_can_be_added_here" member, as recorded', reg)
    return registered


async def record_invalid(rec: Recording, registered: dict[int, Registered]) -> None:
    es, reg = registered[ES256], registered[ES256].credential

    # Recorded as they are, checked against what the RP expected instead.
    other_origin, stored = await rec.assertion(es, origin=rec.other_origin)
    rec.invalid("auth-wrong-origin", f"assertion recorded on {rec.other_origin} (same RP ID, another port), "
                f"{rec.origin} expected", other_origin, rec._expected(AUTH_CHALLENGE, es, stored_sign_count=stored),
                "WebAuthnRejected", "origin")
    good, stored = await rec.assertion(es)
    rec.invalid("auth-wrong-rp-id", f"assertion recorded for RP ID {RP_ID}, checked as RP {OTHER_RP_ID}", good,
                rec._expected(AUTH_CHALLENGE, es, stored_sign_count=stored, rp_id=OTHER_RP_ID), "WebAuthnRejected",
                "RP ID hash")
    replayed, stored = await rec.assertion(es, OTHER_CHALLENGE)
    rec.invalid("auth-replayed-for-other-challenge", "assertion recorded for another challenge, replayed", replayed,
                rec._expected(AUTH_CHALLENGE, es, stored_sign_count=stored), "WebAuthnRejected", "challenge")
    no_uv, stored = await rec.assertion(es, user_verification="discouraged")
    rec.invalid("auth-uv-missing", 'assertion recorded with userVerification "discouraged" (UV flag clear) where UV '
                "is required", no_uv, rec._expected(AUTH_CHALLENGE, es, stored_sign_count=stored), "WebAuthnRejected",
                "User verification is required")
    counted, stored = await rec.assertion(es)
    count = _asserted(counted)[1]
    rec.invalid("auth-sign-count-equal", f"assertion recorded with count {count}, the RP already stored {count} "
                "(a replay of an accepted assertion, or a clone)", counted,
                rec._expected(AUTH_CHALLENGE, es, stored_sign_count=count), "SignCountRegression", "not greater")
    rec.invalid("auth-sign-count-regression", f"assertion recorded with count {count}, the RP stored {count + 10}",
                counted, rec._expected(AUTH_CHALLENGE, es, stored_sign_count=count + 10), "SignCountRegression",
                "not greater")
    eddsa, stored = await rec.assertion(registered[EDDSA])
    rec.invalid("auth-credential-mismatch", "assertion recorded with the EdDSA credential, the ES256 one expected",
                eddsa, rec._expected(AUTH_CHALLENGE, es), "WebAuthnRejected", "different credential")

    # Recorded, then changed after Chromium signed it.
    good, stored = await rec.assertion(es)
    expected = rec._expected(AUTH_CHALLENGE, es, stored_sign_count=stored)
    rec.invalid("auth-tampered-client-data", "recorded assertion, crossOrigin flipped to true after signing",
                _with_response(good, clientDataJSON=_replaced(_client_data(good), b'"crossOrigin":false',
                                                              b'"crossOrigin":true')),
                expected, "WebAuthnRejected", "signature")
    auth_data = b64url_decode(good["response"]["authenticatorData"])
    raised = auth_data[:33] + (_asserted(good)[1] + 1000).to_bytes(4, "big")
    rec.invalid("auth-tampered-authenticator-data", "recorded assertion, counter raised by 1000 after signing",
                _with_response(good, authenticatorData=raised), expected, "WebAuthnRejected", "signature")
    cleared = auth_data[:32] + bytes([auth_data[32] & ~FLAG_UV]) + auth_data[33:]
    rec.invalid("auth-uv-flag-cleared", "recorded assertion, UV flag cleared after signing, UV not required: the "
                "signature catches it", _with_response(good, authenticatorData=cleared),
                expected | {"require_uv": False}, "WebAuthnRejected", "signature")
    signature = bytearray(b64url_decode(good["response"]["signature"]))
    signature[-1] ^= 0x01
    rec.invalid("auth-tampered-signature", "recorded assertion, last signature byte flipped",
                _with_response(good, signature=bytes(signature)), expected, "WebAuthnRejected", "signature")
    rec.invalid("auth-user-handle-of-another-user", "recorded assertion, userHandle (not covered by the "
                "signature) replaced by another user's (WebAuthn 7.2 step 6)",
                _with_response(good, userHandle=b"user-mallory"), expected, "WebAuthnRejected",
                "userHandle names another user")
    as_create = _replaced(_client_data(good), b'"type":"webauthn.get"', b'"type":"webauthn.create"')
    rec.invalid("auth-type-create", 'recorded assertion, clientDataJSON type set to "webauthn.create" and signed '
                "again with the credential's private key as exported by the virtual authenticator (CDP "
                "WebAuthn.getCredentials): validly signed", _resigned(await rec.chromium.private_key(es.credential_id),
                                                                      good, as_create),
                expected, "WebAuthnRejected", 'client data type "webauthn.create"')

    # Registrations: recorded as they are, checked against the wrong expectation, or changed after recording.
    elsewhere = await rec.register(ES256, "mallory", origin=rec.other_origin)
    rec.invalid("reg-wrong-origin", f"registration recorded on {rec.other_origin}, {rec.origin} expected",
                elsewhere.credential, rec._expected(REG_CHALLENGE), "WebAuthnRejected", "origin")
    rec.invalid("reg-wrong-challenge", "recorded registration checked against another challenge", reg,
                rec._expected(OTHER_CHALLENGE), "WebAuthnRejected", "challenge")
    rec.invalid("reg-wrong-rp-id", f"registration recorded for RP ID {RP_ID}, checked as RP {OTHER_RP_ID}", reg,
                rec._expected(REG_CHALLENGE, rp_id=OTHER_RP_ID), "WebAuthnRejected", "RP ID hash")
    # Chromium verifies the user at registration even when asked not to, if the authenticator can: the last
    # recording is made with one that cannot.
    await rec.chromium.without_user_verification()
    unverified = await rec.register(ES256, "dave", user_verification="discouraged")
    assert not unverified.user_verified, "Chromium reported user verification by an authenticator without it"
    rec.invalid("reg-uv-missing", "registration recorded with an authenticator without user verification (UV flag "
                'clear), asked with userVerification "discouraged", where UV is required', unverified.credential,
                rec._expected(REG_CHALLENGE), "WebAuthnRejected", "User verification is required")
    rec.invalid("reg-type-get", 'recorded registration, clientDataJSON type set to "webauthn.get" (attestation '
                "none signs nothing, so no signature breaks)",
                _with_response(reg, clientDataJSON=_replaced(_client_data(reg), b'"type":"webauthn.create"',
                                                             b'"type":"webauthn.get"')),
                rec._expected(REG_CHALLENGE), "WebAuthnRejected", 'client data type "webauthn.get"')
    rec.invalid("reg-trailing-cbor-bytes", "recorded registration, one byte appended to the attestation object",
                _with_response(reg, attestationObject=b64url_decode(reg["response"]["attestationObject"]) + b"\x00"),
                rec._expected(REG_CHALLENGE), "WebAuthnRejected", "bytes left over")


def _tls(directory: Path) -> tuple[ssl.SSLContext, Path, dict[str, str]]:
    """A server context for localhost, the CA that issued it, and a client certificate entry for another origin.

    Playwright routes a context with client certificates through its TLS proxy, which checks servers against
    ``NODE_EXTRA_CA_CERTS``; the entry names an origin nobody serves, so nothing is presented to our server.
    """
    now = datetime.now(timezone.utc)
    ca_key = pki.generate_p256_key()
    ca = pki.make_ca("IDWall vector recorder CA", ca_key, now=now, days=1)
    pki.write_cert(directory / "ca.pem", ca)
    server_key = pki.generate_p256_key()
    server = pki.make_server_cert(ca, ca_key, server_key, hosts=["localhost", "127.0.0.1"], now=now, days=1)
    cert_path, key_path = write_device(directory, "server", pki.cert_pem(server), server_key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    unused_key = pki.generate_p256_key()
    unused = pki.make_server_cert(ca, ca_key, unused_key, hosts=["unused.invalid"], now=now, days=1)
    unused_cert, unused_key_path = write_device(directory, "unused", pki.cert_pem(unused), unused_key)
    return context, directory / "ca.pem", {"origin": "https://localhost:1", "certPath": str(unused_cert),
                                           "keyPath": str(unused_key_path)}


async def record() -> Recording:
    with tempfile.TemporaryDirectory(prefix="idwall-record-") as tmp:
        server_tls, ca_path, unused_client_cert = _tls(Path(tmp))
        app = web.Application()
        app.router.add_get("/", lambda _: web.Response(text=PAGE, content_type="text/html"))
        runner = web.AppRunner(app)
        await runner.setup()
        ports = (free_port(), free_port())
        for port in ports:
            await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_tls).start()
        # read by Playwright's driver (Node) when it starts, below
        os.environ["NODE_EXTRA_CA_CERTS"] = str(ca_path)
        try:
            async with playwright_api.async_playwright() as pw:
                browser = await launch(pw)
                try:
                    context = await browser.new_context(client_certificates=[unused_client_cert])
                    page = await context.new_page()
                    cdp, authenticator_id = await virtual_authenticator(context, page, AUTHENTICATOR)
                    origins = (f"https://localhost:{ports[0]}", f"https://localhost:{ports[1]}")
                    rec = Recording(Chromium(browser, page, cdp, authenticator_id, origins))
                    await record_invalid(rec, await record_valid(rec))
                    return rec
                finally:
                    await browser.close()
        finally:
            await runner.cleanup()


def main() -> None:
    rec = asyncio.run(record())
    rec.write()
    print(f"{rec.chromium.source}: wrote {len(rec.vectors)} vectors to {HERE.relative_to(ROOT)}/{{valid,invalid}}")
    # The test is the one judge of a vector: a recorded credential idwall refuses fails here, naming the field.
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/test_passkeys.py", "-k", "vector"], cwd=ROOT))


if __name__ == "__main__":
    main()
