"""idwall.engine.headers: which fields the gateway owns, drops or reads (the tables, checked as tables)."""

from __future__ import annotations

import pytest

from idwall.engine import headers as H
from idwall.engine.io import INTERNAL_HEADER


@pytest.mark.parametrize("name", [
    b"x-idwall-assertion", b"x_idwall_assertion", b"x.idwall.assertion", b"x-idwall_assertion",
    b"x_idwall-assertion", b"x.idwall_user", b"x-idwall-user", b"x-idwall-", b"x_idwall_", b"x-idwall-conn",
    b"x-idwall-a.b_c",
])
def test_is_identity_every_spelling(name: bytes) -> None:
    """DESIGN "Headers the gateway owns": any case (names arrive lower-cased), ``_`` or ``.`` for ``-``."""
    assert H.is_identity(name)


@pytest.mark.parametrize("name", [
    b"x-idwall", b"x_idwall", b"x-idwallet", b"x-idwallassertion", b"idwall-assertion", b"xx-idwall-a",
    b"x-id-wall-a", b"a-x-idwall-b", b"x-forwarded-for", b"",
])
def test_is_identity_only_the_namespace(name: bytes) -> None:
    assert not H.is_identity(name)


def test_is_identity_takes_lower_case() -> None:
    """The callers lower-case first (h1 does, once per field): the table compares bytes as they are."""
    assert not H.is_identity(b"X-IDWall-User") and H.is_identity(b"X-IDWall-User".lower())


def test_the_internal_hop_header_is_in_the_namespace() -> None:
    """engine.io: clients can never send X-IDWall-Conn, because the whole namespace is dropped from them."""
    assert H.is_identity(INTERNAL_HEADER.lower()) and INTERNAL_HEADER.lower().startswith(H.IDENTITY_PREFIX)


def test_hop_by_hop_is_rfc_9110_and_the_legacy_two() -> None:
    """RFC 9110 §7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade;
    Trailer and the Proxy-Auth* pair are hop-by-hop for a gateway that drops trailers and proxies nothing."""
    assert H.HOP_BY_HOP == {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                            b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization"}


@pytest.mark.parametrize("name", [b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
                                  b"x-forwarded-uri", b"forwarded", b"x-real-ip", b"x-forwarded-client-cert",
                                  b"x-original-url", b"x-rewrite-url"])
def test_the_forwarding_fields_design_names(name: bytes) -> None:
    assert name in H.FORWARDING and H.REQUEST_ACTIONS[name] == H.DROP


def test_every_name_in_the_tables_is_lower_case_and_forwardable_by_its_characters() -> None:
    """A table name the NAME_CHARS filter would drop anyway could never match: each must be reachable."""
    for name in H.REQUEST_ACTIONS.keys() | H.FORWARDING | H.HOP_BY_HOP:
        assert name == name.lower() and name.translate(None, H.NAME_CHARS) == b"", name


def test_request_actions() -> None:
    """Hop-by-hop fields the parser needs are read (and then not forwarded); the others are dropped."""
    read = {b"host": H.HOST, b"content-length": H.LENGTH, b"transfer-encoding": H.CODING,
            b"connection": H.CONNECTION, b"proxy-connection": H.CONNECTION, b"upgrade": H.UPGRADE, b"expect": H.EXPECT, b"origin": H.ORIGIN,
            b"sec-fetch-site": H.FETCH_SITE, b"accept": H.ACCEPT, b"sec-websocket-key": H.WS_KEY,
            b"sec-websocket-version": H.WS_VERSION, b"access-control-request-method": H.PREFLIGHT,
            b"user-agent": H.USER_AGENT}
    assert {name: action for name, action in H.REQUEST_ACTIONS.items() if action != H.DROP} == read
    assert {name for name, action in H.REQUEST_ACTIONS.items() if action == H.DROP} == (
        H.HOP_BY_HOP | H.FORWARDING) - read.keys()
    assert len({H.DROP, *read.values()}) == len(read), "every action is its own number (Proxy-Connection reads as Connection)"


def test_connection_cannot_list_what_routes_and_frames() -> None:
    assert H.NOT_CONNECTION_LISTABLE == {b"host", b"content-length", b"transfer-encoding"}


def test_the_identity_prefix_and_name_characters() -> None:
    assert H.IDENTITY_PREFIX == b"x-idwall-"
    assert set(H.NAME_CHARS) == set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
