"""Webhook messages as the Standard Webhooks convention has them: body, id, timestamp, signature, retries.

Signing is the ``standardwebhooks`` reference library's (HMAC-SHA256 over ``id.timestamp.body``, sent
as ``webhook-signature: v1,<base64>``), so any receiver built on that convention verifies us without
code of ours. Delivery (I/O) retries on the schedule :func:`retry_delay` gives; a kill never waits for it.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook

from ..encoding import canonical_json

__all__ = ["RETRY_AFTER", "WebhookMessage", "new_message", "retry_delay", "signed_headers"]

#: seconds to wait before the 2nd, 3rd, ... attempt; after the last, the message is given up (and says so)
RETRY_AFTER = (1, 5, 30, 120, 600, 1800, 3600)


@dataclass(frozen=True)
class WebhookMessage:
    """One event to announce: ``msg_id`` stays the same across retries so receivers can drop repeats."""

    msg_id: str
    timestamp: int
    event_type: str
    body: bytes


def new_message(event_type: str, data: Mapping[str, Any], *, now: float, msg_id: str | None = None) -> WebhookMessage:
    """The message for ``event_type`` (``incident.stage``, ``kill``, ...), body ``{type, timestamp, data}``."""
    timestamp = int(now)
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    body = canonical_json({"type": event_type, "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"), "data": dict(data)})
    return WebhookMessage(msg_id=msg_id or "msg_" + secrets.token_urlsafe(18), timestamp=timestamp,
                          event_type=event_type, body=body)


def signed_headers(secret: bytes, message: WebhookMessage) -> dict[str, str]:
    """The request headers of one attempt: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``."""
    moment = datetime.datetime.fromtimestamp(message.timestamp, tz=datetime.timezone.utc)
    return {
        "content-type": "application/json",
        "webhook-id": message.msg_id,
        "webhook-timestamp": str(message.timestamp),
        "webhook-signature": Webhook(secret).sign(message.msg_id, moment, message.body),
    }


def retry_delay(failed_attempts: int) -> int | None:
    """Seconds before the next attempt after ``failed_attempts`` failures, or None: give up."""
    if failed_attempts < 1:
        raise ValueError("retry_delay is asked after a failed attempt")
    index = failed_attempts - 1
    return RETRY_AFTER[index] if index < len(RETRY_AFTER) else None
