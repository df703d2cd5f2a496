"""idwall.incident.webhooks: messages a Standard Webhooks receiver verifies, and the retry schedule.

The signature is checked two ways: by the convention's reference verifier (what a SOAR receiver runs),
and by recomputing HMAC-SHA256 over ``id.timestamp.body`` from the specification, so a change of
library cannot silently change the wire format.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from idwall.incident.webhooks import RETRY_AFTER, new_message, retry_delay, signed_headers

SECRET = os.urandom(32)


def test_a_receiver_verifies_the_message_and_reads_the_event() -> None:
    message = new_message("incident.stage", {"incident_id": "inc_1", "stage": 1, "sessions_revoked": 12},
                          now=time.time())
    headers = signed_headers(SECRET, message)
    event = Webhook("whsec_" + base64.b64encode(SECRET).decode()).verify(message.body, headers)
    assert event["type"] == "incident.stage"
    assert event["data"] == {"incident_id": "inc_1", "stage": 1, "sessions_revoked": 12}
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"].startswith("msg_") and headers["webhook-timestamp"] == str(message.timestamp)


def test_the_signature_is_hmac_sha256_over_id_timestamp_body() -> None:
    message = new_message("kill", {"scope": "user", "target": "alice"}, now=1_800_000_000.7, msg_id="msg_fixed")
    expected = hmac.new(SECRET, b"msg_fixed.1800000000." + message.body, hashlib.sha256).digest()
    assert signed_headers(SECRET, message)["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    assert json.loads(message.body) == {"type": "kill", "timestamp": "2027-01-15T08:00:00Z",
                                        "data": {"scope": "user", "target": "alice"}}


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "secret"])
def test_a_receiver_refuses_a_message_that_was_changed(tamper: str) -> None:
    message = new_message("kill", {"scope": "all"}, now=time.time())
    headers = signed_headers(SECRET, message)
    body = message.body
    secret = SECRET
    if tamper == "body":
        body = body.replace(b'"all"', b'"none"')
    elif tamper == "id":
        headers["webhook-id"] = "msg_other"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(message.timestamp - 1)
    else:
        secret = os.urandom(32)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_a_replayed_old_message_is_refused_by_the_receiver() -> None:
    message = new_message("kill", {"scope": "all"}, now=time.time() - 3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(message.body, signed_headers(SECRET, message))


def test_retries_keep_the_message_id_and_back_off_then_give_up() -> None:
    message = new_message("kill", {"scope": "all"}, now=time.time())
    assert signed_headers(SECRET, message) == signed_headers(SECRET, message)  # a retry is the same message
    delays = [retry_delay(n) for n in range(1, len(RETRY_AFTER) + 2)]
    assert delays[:-1] == list(RETRY_AFTER) and delays[-1] is None
    assert delays[:-1] == sorted(delays[:-1])
    with pytest.raises(ValueError):
        retry_delay(0)


def test_message_ids_are_unique() -> None:
    assert len({new_message("kill", {}, now=0).msg_id for _ in range(200)}) == 200
