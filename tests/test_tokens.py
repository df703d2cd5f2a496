"""idwall.tokens: issuing, parsing the Authorization header, authorising by scope, without sockets."""

from __future__ import annotations

import dataclasses

import pytest

from idwall import tokens
from idwall.errors import BadRequest
from idwall.tokens import InsufficientScope, InvalidToken

NOW = 1_800_000_000.0


def issue(scopes=("kill",), ttl=3600) -> tokens.IssuedToken:
    return tokens.new_token(name="soar", scopes=scopes, ttl=ttl, created_by="admin", now=NOW)


def test_new_token_shape_and_only_its_hash_is_kept() -> None:
    issued = issue(("read", "kill"))
    assert issued.secret.startswith("idw_")
    assert len(issued.secret) == 4 + 43  # 32 bytes of base64url
    assert issued.record.hash == tokens.token_hash(issued.secret)
    assert issued.secret not in repr(issued.record)
    assert issued.record.scopes == ("kill", "read")
    assert issued.record.expires_at == NOW + 3600
    assert issued.record.id.startswith("tok-")
    assert issue().secret != issue().secret


@pytest.mark.parametrize("scopes", [[], ["admin"], ["kill", "kill"], "kill", None, ["KILL"], [1], {"kill": 1}])
def test_bad_scopes_are_refused(scopes) -> None:
    with pytest.raises(BadRequest):
        tokens.check_scopes(scopes)


def test_new_token_checks_its_scopes() -> None:
    with pytest.raises(BadRequest):
        tokens.new_token(name="x", scopes=["kill", "grant"], ttl=60, created_by="a", now=NOW)


@pytest.mark.parametrize("name, ttl", [("", 60), ("a\nb", 60), ("x" * 101, 60), ("ok", 0), ("ok", -5),
                                       ("ok", True), ("ok", 1.5)])
def test_bad_name_or_ttl_is_refused(name, ttl) -> None:
    with pytest.raises(BadRequest):
        tokens.new_token(name=name, scopes=["kill"], ttl=ttl, created_by="a", now=NOW)


def test_parse_authorization_accepts_bearer_in_any_case() -> None:
    secret = issue().secret
    assert tokens.parse_authorization([]) is None
    assert tokens.parse_authorization([f"Bearer {secret}"]) == secret
    assert tokens.parse_authorization([f"bearer {secret}"]) == secret  # RFC 9110 §11.1: case-insensitive
    assert tokens.parse_authorization([f"BEARER  {secret}"]) == secret


@pytest.mark.parametrize("header", [
    "",                                   # empty value
    "Bearer",                             # no credentials
    "Bearer ",                            # RFC 6750 §2.1: b64token is 1*char
    "Basic YWRtaW46YWRtaW4=",             # another scheme
    "Token abc",
    "Bearer a b",                         # two credentials
    "Bearer abc\x00def",                  # NUL
    "Bearer ab\tc",
    "Bearer é-not-ascii",                 # outside b64token
    "Bearer abc=def",                     # '=' only as trailing padding
    "Bearer " + "a" * 129,                # longer than any token we issue
    "Bearer\tabc",                        # the separator is SP
    "Bearer,abc",
])
def test_malformed_authorization_is_invalid_token(header) -> None:
    with pytest.raises(InvalidToken) as info:
        tokens.parse_authorization([header])
    assert info.value.status == 401
    assert "abc" not in info.value.detail or "Basic" in header


def test_two_authorization_headers_are_refused() -> None:
    with pytest.raises(InvalidToken):
        tokens.parse_authorization(["Bearer a", "Bearer b"])


def test_authorize_by_scope_without_implication() -> None:
    kill_only = issue(("kill",))
    read_only = issue(("read",))
    both = issue(("kill", "read"))
    assert tokens.authorize(kill_only.record, secret=kill_only.secret, scope="kill", now=NOW) == kill_only.record
    with pytest.raises(InsufficientScope) as info:
        tokens.authorize(kill_only.record, secret=kill_only.secret, scope="read", now=NOW)
    assert info.value.status == 403
    with pytest.raises(InsufficientScope):
        tokens.authorize(read_only.record, secret=read_only.secret, scope="kill", now=NOW)
    for scope in ("kill", "read"):
        tokens.authorize(both.record, secret=both.secret, scope=scope, now=NOW)
    with pytest.raises(ValueError):
        tokens.authorize(both.record, secret=both.secret, scope="admin", now=NOW)


def test_unknown_expired_and_revoked_tokens_get_one_and_the_same_answer() -> None:
    issued = issue(ttl=60)
    answers = []
    for stored, now in [
        (None, NOW),                                                  # unknown
        (issued.record, NOW + 60),                                    # expired exactly at expires_at
        (issued.record, NOW + 3600),
        (dataclasses.replace(issued.record, revoked_at=NOW), NOW),    # revoked
        (issue().record, NOW),                                        # a record of another token
    ]:
        with pytest.raises(InvalidToken) as info:
            tokens.authorize(stored, secret=issued.secret, scope="kill", now=now)
        answers.append(info.value.problem())
        assert issued.secret not in info.value.detail + info.value.log_detail
    assert all(a == answers[0] for a in answers)
    tokens.authorize(issued.record, secret=issued.secret, scope="kill", now=NOW + 59.999)


def test_public_view_has_no_hash_and_a_status() -> None:
    issued = issue(ttl=60)
    view = tokens.public_view(issued.record, now=NOW)
    assert "hash" not in view and issued.secret not in str(view)
    assert view["status"] == "active"
    assert tokens.public_view(issued.record, now=NOW + 60)["status"] == "expired"
    revoked = dataclasses.replace(issued.record, revoked_at=NOW + 1)
    assert tokens.public_view(revoked, now=NOW + 100)["status"] == "revoked"
