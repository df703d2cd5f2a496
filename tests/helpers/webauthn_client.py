"""An independent WebAuthn client for tests: browser and authenticator in one, ES256, attestation "none".

Written from the WebAuthn Level 3 text (§6.1 authenticator data, §6.5.1
attested credential data, §5.8.1 client data, §6.5.5 "none" attestation), not
from IDWall's code: it imports nothing from idwall, so a mistake shared with
idwall's own SoftAuthenticator cannot hide a bug in the gateway.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

FLAG_UP, FLAG_UV, FLAG_AT = 0x01, 0x04, 0x40
ES256 = -7


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Passkey:
    """One ES256 passkey for one RP; ``create`` makes it, ``get`` signs with it (the counter goes up)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(16)
        self.counter = 0
        self.user_handle: bytes | None = None

    def cose_public_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": self.origin,
                           "crossOrigin": False}).encode("utf-8")

    def create(self, options: dict[str, Any]) -> dict[str, Any]:
        """``navigator.credentials.create()``: answer a RegistrationResponseJSON."""
        if ES256 not in [p["alg"] for p in options["pubKeyCredParams"]]:
            raise ValueError("the relying party does not accept ES256")
        self.user_handle = unb64u(options["user"]["id"])
        auth_data = (hashlib.sha256(options["rp"]["id"].encode()).digest() + bytes([FLAG_UP | FLAG_UV | FLAG_AT])
                     + struct.pack(">I", 0) + bytes(16) + struct.pack(">H", len(self.credential_id))
                     + self.credential_id + self.cose_public_key())
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {"id": b64u(self.credential_id), "rawId": b64u(self.credential_id), "type": "public-key",
                "response": {"clientDataJSON": b64u(self._client_data("webauthn.create", options["challenge"])),
                             "attestationObject": b64u(attestation)},
                "clientExtensionResults": {}}

    def get(self, options: dict[str, Any]) -> dict[str, Any]:
        """``navigator.credentials.get()``: answer an AuthenticationResponseJSON."""
        allowed = [unb64u(c["id"]) for c in options.get("allowCredentials", [])]
        if allowed and self.credential_id not in allowed:
            raise LookupError("this passkey is not among the allowed credentials")
        self.counter += 1
        auth_data = (hashlib.sha256(options["rpId"].encode()).digest() + bytes([FLAG_UP | FLAG_UV])
                     + struct.pack(">I", self.counter))
        client_data = self._client_data("webauthn.get", options["challenge"])
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        response = {"clientDataJSON": b64u(client_data), "authenticatorData": b64u(auth_data),
                    "signature": b64u(signature)}
        if self.user_handle is not None:
            response["userHandle"] = b64u(self.user_handle)
        return {"id": b64u(self.credential_id), "rawId": b64u(self.credential_id), "type": "public-key",
                "response": response, "clientExtensionResults": {}}
