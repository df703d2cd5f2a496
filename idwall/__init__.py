"""IDWall: a passkey-backed identity gateway.

A mutual-TLS reverse proxy that binds device keys registered with WebAuthn to
persistent connections, passes signed identity assertions upstream, keeps a
tamper-evident audit ledger and can cut any session at once.
"""

__version__ = "0.1.0"
