"""The pure rules of sign requests: secrets and their hashes, the link, the check code, who holds a request."""

from __future__ import annotations

import pytest

from idwall.encoding import b64url_decode
from idwall.errors import Forbidden, Gone, NotFound
from idwall.sign_requests import (
    REQUEST_ID_RE, SECRET_RE, UNKNOWN, check_code, check_live, check_secret, holder_of, new_secrets, refusal,
    secret_hash, sign_link,
)
from tests.helpers.records import CERT, NOW, sign_request


def test_new_secrets_are_fresh_and_of_the_documented_shape() -> None:
    made = [new_secrets() for _ in range(50)]
    assert len({m.request_id for m in made} | {m.link_secret for m in made} | {m.poll_secret for m in made}) == 150
    for m in made:
        assert REQUEST_ID_RE.fullmatch(m.request_id) and len(b64url_decode(m.request_id[4:])) == 16
        assert SECRET_RE.fullmatch(m.link_secret) and len(b64url_decode(m.link_secret)) == 32
        assert SECRET_RE.fullmatch(m.poll_secret)


def test_the_secret_is_in_the_fragment_and_only_its_hash_is_kept() -> None:
    made = new_secrets()
    link = sign_link("https://gw.example:8443/", made.request_id, made.link_secret)
    assert link == f"https://gw.example:8443/idwall/sign/{made.request_id}#{made.link_secret}"
    assert len(secret_hash(made.link_secret)) == 32 and secret_hash(made.link_secret) != secret_hash(made.poll_secret)
    assert made.link_secret.encode() not in secret_hash(made.link_secret)


def test_check_secret_tells_an_unknown_id_and_a_wrong_secret_apart_in_no_way() -> None:
    made = new_secrets()
    request = sign_request(link_hash=secret_hash(made.link_secret), poll_hash=secret_hash(made.poll_secret))
    assert check_secret(request, "link", made.link_secret) is request
    assert check_secret(request, "poll", made.poll_secret) is request
    for found, which, secret in ((None, "link", made.link_secret), (request, "link", made.poll_secret),
                                 (request, "poll", made.link_secret), (request, "link", "short"),
                                 (request, "link", made.link_secret + "x")):
        with pytest.raises(NotFound) as info:
            check_secret(found, which, secret)  # type: ignore[arg-type]
        assert info.value.detail == UNKNOWN


def test_a_request_belongs_to_its_certificate_and_user() -> None:
    request = sign_request()
    assert holder_of(request, cert_sha256=CERT, user_id="alice")
    assert not holder_of(request, cert_sha256=bytes(32), user_id="alice")  # the same user on another device
    assert not holder_of(request, cert_sha256=CERT, user_id="bob")
    assert not holder_of(request, cert_sha256=None, user_id="alice")


def test_a_request_is_live_until_its_expiry() -> None:
    check_live(sign_request(expires_at=NOW + 1), now=NOW)
    with pytest.raises(Gone, match="expired"):
        check_live(sign_request(expires_at=NOW), now=NOW)


def test_the_check_code_is_the_first_four_challenge_bytes() -> None:
    assert check_code(bytes.fromhex("22f2ebc3") + bytes(28)) == "22F2-EBC3"


def test_a_refusal_names_who_opened_the_link_to_the_terminal_only() -> None:
    told, refused = refusal(user_id="mallory", device_id="dev-9")
    assert "user mallory, device dev-9" in told and "nothing was signed" in told
    assert isinstance(refused, Forbidden) and "mallory" not in refused.detail and "cancelled" in refused.detail
