"""idwall.logs: one JSON object per line, one event per line, and no secret in any of them.

The formatter is read back line by line as a log shipper would; the last test captures everything a real
gateway logs while a bootstrap code, an invite code, an API token, a wrong token, a passkey assertion and an
identity assertion pass through it, and looks for each of them in the log.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idwall import logs
from idwall.logs import REDACTED_FIELDS, event, setup_logging
from tests.helpers.api import bootstrap, call, invite, login, sign
from tests.helpers.gateway import GatewayUnderTest

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """IDWall's log as JSON lines into a buffer; the logger is put back as it was afterwards."""
    saved = (list(logs.logger.handlers), logs.logger.level, logs.logger.propagate)
    buffer = io.StringIO()
    setup_logging("info", stream=buffer)
    try:
        yield buffer
    finally:
        logs.logger.handlers[:], logs.logger.level, logs.logger.propagate = saved


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    """Every line of the log, each of which must be one JSON object."""
    text = buffer.getvalue()
    assert text.endswith("\n") or text == ""
    return [json.loads(line) for line in text.splitlines()]


def test_an_event_is_one_json_line_with_its_time_level_name_and_fields(captured: io.StringIO) -> None:
    event("login", user="alice", device="dev-1", session="ses-1", connections=2)
    [line] = lines(captured)
    assert TIME.match(line["time"]), line["time"]
    assert line == {"time": line["time"], "level": "info", "event": "login", "user": "alice", "device": "dev-1",
                    "session": "ses-1", "connections": 2}


def test_a_field_holding_a_line_break_or_a_non_json_value_stays_on_one_line(captured: io.StringIO) -> None:
    event("request.refused", detail="bad\r\nX-Injected: 1", path=Path("/tmp/x"), raw=b"\x00\xff")
    text = captured.getvalue()
    assert text.count("\n") == 1, "a log line was split: a forged second line could be injected"
    [line] = lines(captured)
    assert line["detail"] == "bad\r\nX-Injected: 1" and line["path"] == "/tmp/x" and line["raw"] == str(b"\x00\xff")


@pytest.mark.parametrize("name", sorted(REDACTED_FIELDS))
def test_a_secret_passed_by_mistake_is_redacted(captured: io.StringIO, name: str) -> None:
    event("oops", **{name: "s3cr3t-value", "user": "alice"})
    [line] = lines(captured)
    assert line[name] == "[redacted]" and line["user"] == "alice"
    assert "s3cr3t-value" not in captured.getvalue()


def test_the_level_filters_and_warnings_say_so(captured: io.StringIO) -> None:
    setup_logging("warning", stream=captured)
    event("quiet")
    event("upstream.failed", level=logging.WARNING, status=502)
    assert [(line["event"], line["level"]) for line in lines(captured)] == [("upstream.failed", "warning")]


def test_a_traceback_is_kept_for_errors_only(captured: io.StringIO) -> None:
    try:
        raise RuntimeError("store vanished")
    except RuntimeError:
        logs.logger.warning("background.error", exc_info=True, extra={"fields": {}})
        logs.logger.exception("request.error", extra={"fields": {"route": "app"}})
    warning, error = lines(captured)
    assert "exception" not in warning
    assert error["level"] == "error" and error["route"] == "app"
    assert "RuntimeError: store vanished" in error["exception"] and "Traceback" in error["exception"]


def test_setting_up_twice_keeps_one_handler(captured: io.StringIO) -> None:
    setup_logging("info", stream=captured)
    event("once")
    assert [line["event"] for line in lines(captured)] == ["once"]
    assert logs.logger.propagate is False, "a root handler would print every line a second time"


async def test_no_secret_that_passes_through_the_gateway_reaches_its_log(gateway: GatewayUnderTest,
                                                                         captured: io.StringIO) -> None:
    code = gateway.init["bootstrap_code"]
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as client:
        status, answer = await login(gateway, admin, client)
        assert status == 200, answer
        invite_code = await invite(gateway, admin, client, "bob")
        status, answer = await sign(gateway, admin, client, {"type": "token.create", "name": "soar",
                                                             "scopes": ["kill"], "ttl": "1h"})
        assert status == 200, answer
        token = answer["result"]["token"]
        async with client.get(gateway.url + "/whoami") as resp:
            seen = await resp.json()
        jwt = dict((k.lower(), v) for k, v in seen["headers"])["x-idwall-assertion"]
    async with gateway.session() as anonymous:
        wrong = "idw_" + "A" * 43
        status, _ = await call(anonymous, "POST", gateway.url + "/idwall/api/admin/kill",
                               {"scope": "user", "target": "bob", "reason": "test", "revoke_devices": False},
                               headers={"Authorization": f"Bearer {wrong}"})
        assert status == 401
        status, answer = await call(anonymous, "POST", gateway.url + "/idwall/api/admin/kill",
                                    {"scope": "user", "target": "bob", "reason": "test", "revoke_devices": False},
                                    headers={"Authorization": f"Bearer {token}"})
        assert status == 200, answer
    text = captured.getvalue()
    names = [line["event"] for line in lines(captured)]
    assert {"enroll.finish", "login", "action", "kill"} <= set(names), names
    private_key = "".join(admin.key_path.read_text().splitlines()[1:-1])
    for secret, what in ((code, "the bootstrap code"), (invite_code, "an invite code"), (token, "an API token"),
                         (wrong, "a wrong token"), (jwt, "an identity assertion"), (jwt.split(".")[2], "its signature"),
                         (private_key[:40], "the device key")):
        assert secret not in text, f"{what} is in the log"
