"""idwall.web.api_renew over real mTLS: a device asks for a certificate for a new key over its own connection; the
request is bounded, checked as enrollment checks a CSR, and readable by id (the polling CLI, the page)."""

from __future__ import annotations

from idwall import pki
from tests.helpers.api import begin_renewal, bootstrap, call, counts, login, make_csr

BEGIN = "/idwall/api/renew/begin"


async def test_a_device_asks_for_a_renewal_and_can_read_it_back(gateway) -> None:
    admin = await bootstrap(gateway)
    _, status, begun = await begin_renewal(gateway, admin)
    assert status == 200, begun
    assert begun["device_id"] == admin.device_id
    assert begun["renew_url"] == f"{gateway.url}/idwall/renew/{begun['renewal_id']}"
    async with gateway.session() as anon:  # no client certificate needed to poll
        status, view = await call(anon, "GET", gateway.url + "/idwall/api/renew/" + begun["renewal_id"])
    assert status == 200, view
    assert view == {"renewal_id": begun["renewal_id"], "device_id": admin.device_id, "user": "admin",
                    "status": "begun", "expires_at": begun["expires_at"], "csr_pem": begun["csr_pem"]}
    renewal = await gateway.store.get_renewal(begun["renewal_id"])
    assert renewal.spki_sha256 == pki.check_csr(begun["csr_pem"]).spki_sha256


async def test_no_session_is_needed_but_an_enrolled_devices_certificate_is(gateway) -> None:
    await bootstrap(gateway)
    before = await counts(gateway)
    async with gateway.session() as anon:
        status, problem = await call(anon, "POST", gateway.url + BEGIN, {"csr_pem": make_csr()[1]})
    assert status == 403 and problem["type"].endswith("/no-client-certificate"), problem
    assert await counts(gateway) == before


async def test_a_bad_request_or_the_current_key_changes_nothing(gateway) -> None:
    admin = await bootstrap(gateway)
    current = pki.make_csr(pki.load_private_key(admin.key_path), "laptop")
    async with gateway.session(admin) as own:
        before = await counts(gateway)
        for body, expected, words in (({}, 400, "csr_pem"), ({"csr_pem": 5}, 400, "csr_pem"),
                                      ({"csr_pem": "not a csr"}, 400, "expected a PEM block"),
                                      ({"csr_pem": current}, 409, "the CSR is for the device's current key")):
            status, problem = await call(own, "POST", gateway.url + BEGIN, body)
            assert status == expected and words in problem["detail"], (body, problem)
        status, problem = await call(own, "POST", gateway.url + BEGIN, {"csr_pem": make_csr()[1]},
                                     headers={"Sec-Fetch-Site": "cross-site"})
        assert status == 403 and problem["type"].endswith("/cross-site-refused"), problem
        assert await counts(gateway) == before


async def test_open_renewals_of_a_device_are_bounded(gateway) -> None:
    admin = await bootstrap(gateway)
    for _ in range(3):
        assert (await begin_renewal(gateway, admin))[1] == 200
    _, status, problem = await begin_renewal(gateway, admin)
    assert status == 429 and "renewals of this device are already waiting" in problem["detail"], problem


async def test_a_revoked_device_cannot_ask(gateway) -> None:
    admin = await bootstrap(gateway)
    async with gateway.session(admin) as own:
        assert (await login(gateway, admin, own))[0] == 200
        status, answer = await call(own, "POST", gateway.url + "/idwall/api/admin/kill", {
            "scope": "device", "target": admin.device_id, "reason": "laptop stolen", "revoke_devices": True})
        assert status == 200 and answer["devices_revoked"] == 1, answer
    _, status, problem = await begin_renewal(gateway, admin)
    assert status == 403, problem
    assert await gateway.store.read(lambda c: c.execute("SELECT COUNT(*) FROM renewals").fetchone()[0]) == 0


async def test_an_unknown_renewal_is_a_404(gateway) -> None:
    async with gateway.session() as anon:
        status, problem = await call(anon, "GET", gateway.url + "/idwall/api/renew/ren-nope")
    assert status == 404 and "run idwall device renew again" in problem["detail"], problem
