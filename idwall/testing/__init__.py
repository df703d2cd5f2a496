"""Test helpers for IDWall and for integrators: a software passkey authenticator."""

from idwall.testing.authenticator import (
    EDDSA,
    ES256,
    RS256,
    AuthenticatorError,
    InvalidStateError,
    NotAllowedError,
    NotSupportedError,
    SoftAuthenticator,
    SoftCredential,
)

__all__ = [
    "EDDSA",
    "ES256",
    "RS256",
    "AuthenticatorError",
    "InvalidStateError",
    "NotAllowedError",
    "NotSupportedError",
    "SoftAuthenticator",
    "SoftCredential",
]
