"""Verification of a whole ledger: replay it in order, stop at the first failing entry, check the pins."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from idwall.audit.replay import LedgerState, LedgerViolation
from idwall.audit.sealing import public_key_from_jwk, require_p256
from idwall.encoding import b64url_encode


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify_ledger`.

    On failure ``seq`` is the first failing entry and ``reason`` reads
    ``"seq N: why"``; on success ``seq`` is the last entry's seq. ``entries`` is
    how many entries verified; ``root`` the genesis fingerprint (once seen);
    ``head`` the base64url hash of the last verified entry (pin it to detect
    truncation later).
    """

    ok: bool
    seq: int | None
    reason: str
    entries: int
    root: str | None
    head: str | None = None


def verify_ledger(
    entries: Iterable[Any],
    *,
    root: str | None = None,
    ledger_public_key: ec.EllipticCurvePublicKey | dict[str, Any] | None = None,
    expected_last: int | None = None,
    expected_last_hash: str | None = None,
) -> VerifyResult:
    """Verify a whole ledger in order; stop at the first failure and name its seq.

    ``root`` pins the genesis admin credential (``idwall audit verify --root``);
    ``ledger_public_key`` (key or JWK) pins the ledger key instead of trusting
    the bootstrap's. ``expected_last`` says the ledger reaches at least that
    seq (truncation at the end is otherwise invisible) and
    ``expected_last_hash`` what that entry's hash is.
    """
    if expected_last_hash is not None and expected_last is None:
        raise ValueError("expected_last_hash needs expected_last: it is the hash of that entry")
    if isinstance(ledger_public_key, dict):
        ledger_public_key = public_key_from_jwk(ledger_public_key)
    elif ledger_public_key is not None:
        require_p256(ledger_public_key)
    state = LedgerState(root_pin=root, ledger_public_key=ledger_public_key)
    count = 0
    for entry in entries:
        try:
            state.apply(entry)
        except LedgerViolation as exc:
            return VerifyResult(False, exc.seq, exc.detail, count, state.root, _head(state))
        count += 1
        if state.last_seq == expected_last and expected_last_hash is not None:
            if b64url_encode(state.last_hash) != expected_last_hash:
                return VerifyResult(
                    False, state.last_seq,
                    f"seq {state.last_seq}: hash does not match the pinned head hash {expected_last_hash}",
                    count, state.root, _head(state),
                )
    if count == 0:
        return VerifyResult(False, 1, "seq 1: the ledger is empty; it must start with a bootstrap entry", 0, None)
    if expected_last is not None and state.last_seq < expected_last:
        missing = state.last_seq + 1
        return VerifyResult(
            False, missing,
            f"seq {missing}: missing; the ledger ends at seq {state.last_seq} but the head pin says it reaches "
            f"seq {expected_last} (truncated)",
            count, state.root, _head(state),
        )
    return VerifyResult(True, state.last_seq, f"verified {count} entries", count, state.root, _head(state))


def _head(state: LedgerState) -> str | None:
    return b64url_encode(state.last_hash) if state.last_seq else None
