"""The console's Incidents page in real Chromium (Debian's, through Playwright) against one real gateway.

The story, in order (the tests share one gateway, one browser and what earlier tests made):

1. an administrator (through the API, with a software passkey) invites people in several groups and a SOC
   analyst, an administrator in the break-glass group; everyone enrolls and signs in; the analyst enrolls on the
   enrollment page in Chromium (CDP virtual passkey, device certificate presented with ``client_certificates``)
   and opens the Incidents page, where no incident is listed yet;
2. an automation token runs the organisation-wide playbook: the page, polling, lists the run and shows its
   dashboard: sessions and users cut, a uPlot chart of users back per group (drawn, with its data), and the
   table of everyone not back, the break-glass analyst never among them;
3. a person signs in again with their device: within the polling interval their groups' counts go up, the chart
   has their return, and they leave the not-back table, with no reload of the page.

Every page state is captured light at 1280 px and 400 px as incidents-*.png in helpers.browser.SHOTS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator

import pytest
import pytest_asyncio

from tests.helpers.api import Enrolled, bootstrap, call_fresh, enroll, invite, ledger_ok, login, sign
from tests.helpers.browser import Browsing, Story, enroll_in_browser, needs, sign_in, story_of
from tests.helpers.gateway import ORG_WIDE_PLAYBOOK

# a missing browser must fail the suite, never skip it
assert os.path.exists("/usr/bin/chromium"), "/usr/bin/chromium is missing: apt-get install chromium"

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

PEOPLE = {"alice": ["eng"], "bob": ["eng", "ops"], "carol": ["ops"], "dave": ["sales"]}
#: the page polls every 3 s; a count must change within two polls and a request's time
POLLED = 10_000


@dataclass
class IncidentStory(Story):
    """What the tests hand on: the people's devices, the automation token, the analyst's browser, the run."""

    people: dict[str, Enrolled] = field(default_factory=dict)
    token: str | None = None
    analyst: Browsing | None = None
    incident: dict[str, Any] | None = None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def story(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[IncidentStory]:
    """``idwall init`` with the playbook and a started gateway, Chromium trusting its CA."""
    async with story_of(IncidentStory, tmp_path_factory.mktemp("incidents"), "incidents",
                        extra_yaml=ORG_WIDE_PLAYBOOK) as started:
        yield started


@pytest.fixture(autouse=True)
def clean_console(story: IncidentStory) -> Iterator[None]:
    """No test may leave a CSP violation or a script error in any page (uPlot's drawing included)."""
    yield from story.console.watched()


async def _text(page: Any, selector: str) -> str:
    return " ".join((await page.text_content(selector) or "").split())


async def _cells(page: Any, selector: str) -> list[str]:
    """The text of each cell of the table row ``selector``."""
    return await page.eval_on_selector(selector, "row => [...row.cells].map(c => c.textContent.trim())")


async def test_people_in_several_groups_sign_in_and_the_analyst_opens_the_incidents_page(story: IncidentStory) -> None:
    gw = story.gw
    admin = await bootstrap(gw)
    async with gw.session(admin) as client:
        assert (await login(gw, admin, client))[0] == 200
        story.people = {user: await enroll(gw, await invite(gw, admin, client, user, groups=groups))
                        for user, groups in PEOPLE.items()}
        story.people["admin"] = admin
        analyst_code = await invite(gw, admin, client, "soc", groups=["break-glass"], is_admin=True)
        status, made = await sign(gw, admin, client, {"type": "token.create", "name": "soar", "scopes": ["incident"],
                                                      "ttl": "1h"})
        assert status == 200, made
        story.token = made["result"]["token"]
    for user in PEOPLE:
        assert (await login(gw, story.people[user]))[0] == 200
    analyst = await enroll_in_browser(story, "soc", "SOC laptop", code=analyst_code)
    story.analyst = await sign_in(story, analyst, "/idwall/admin/incidents")
    page = story.analyst.page
    await page.wait_for_selector("#incidents-empty:not([hidden])")
    assert await page.is_hidden("#dashboard")
    assert await page.get_attribute('nav a[href="/idwall/admin/incidents"]', "aria-current") == "page"
    await story.shots(page, "empty")


async def test_a_run_shows_on_the_page_with_what_it_cut_a_chart_and_who_is_not_back(story: IncidentStory) -> None:
    page = needs(story.analyst, "the analyst's browser").page
    status, done, _ = await call_fresh(story.gw, "POST", "/idwall/api/admin/incidents", token=story.token,
                                       body={"playbook": "org-wide", "reason": "credentials for sale"})
    assert status == 200 and done["state"] == "complete", done
    story.incident = done
    incident = done["incident_id"]
    # no reload: the page finds the run by itself, and shows the newest run's dashboard
    await page.wait_for_selector(f'#incidents-body tr[data-incident="{incident}"]', timeout=POLLED)
    await page.wait_for_selector("#dashboard:not([hidden])", timeout=POLLED)
    row = await _text(page, f'#incidents-body tr[data-incident="{incident}"]')
    assert "org-wide" in row and "credentials for sale" in row and "2 of 2 committed" in row, row
    assert await _text(page, "#dashboard-id") == incident
    # everyone but the break-glass analyst: the admin first, then the four people, one session each
    assert await _text(page, "#total-cut") == "5" and await _text(page, "#total-back") == "0"
    assert await _text(page, "#total-sessions") == "5" and await _text(page, "#total-not-back") == "5"
    assert "excluded (never cut): soc" in await _text(page, "#dashboard-about")
    first, second = [await _cells(page, f'#stages-body tr[data-stage="{n}"]') for n in (1, 2)]
    assert (first[:2], first[3:]) == (["1 · privileged", "kill"], ["1", "1", "0", "admins 1"]), first
    assert (second[:2], second[3:]) == (["2 · others", "kill"], ["4", "4", "0", "eng 2, ops 2, sales 1"]), second
    not_back = await page.eval_on_selector_all("#not-back-body tr", "rows => rows.map(r => r.dataset.user)")
    assert not_back == ["admin", "alice", "bob", "carol", "dave"]
    assert "to sign in again" in await _text(page, '#not-back-body tr[data-user="alice"]')
    # the chart: uPlot's canvas, a series per group with its name in the legend, drawn from the API's data
    await page.wait_for_selector("#chart canvas")
    assert await page.get_attribute("#chart", "data-back") == "admins:0,eng:0,ops:0,sales:0"
    assert int(await page.get_attribute("#chart", "data-points") or 0) >= 2
    legend = await _text(page, "#chart .u-legend")
    for group in ("eng", "ops", "sales"):
        assert group in legend, legend
    assert await page.locator("#chart").evaluate("c => c.querySelector('canvas').width") > 200
    assert [await _text(page, f'#groups-body tr[data-group="{g}"] td.back') for g in ("eng", "ops")] == ["0", "0"]
    await story.shots(page, "dashboard")


async def test_a_person_signing_in_again_counts_back_and_leaves_the_table_as_the_page_polls(
        story: IncidentStory) -> None:
    page = needs(story.analyst, "the analyst's browser").page
    needs(story.incident, "the incident run")
    assert (await login(story.gw, story.people["bob"]))[0] == 200
    # bob is in eng and ops: both groups count him, within the polling interval, without a reload
    await page.wait_for_selector('#not-back-body tr[data-user="bob"]', state="detached", timeout=POLLED)
    await page.wait_for_function(
        "() => document.getElementById('chart').dataset.back === 'admins:0,eng:1,ops:1,sales:0'", timeout=POLLED)
    assert [await _text(page, f'#groups-body tr[data-group="{g}"] td.back') for g in ("eng", "ops", "sales")] == [
        "1", "1", "0"]
    assert "1 logged in" in await _text(page, '#groups-body tr[data-group="eng"]')
    assert await _text(page, "#total-back") == "1" and await _text(page, "#total-not-back") == "4"
    assert await page.eval_on_selector_all("#not-back-body tr", "rows => rows.map(r => r.dataset.user)") == [
        "admin", "alice", "carol", "dave"]
    assert "1 user of 5 back." in await _text(page, "#status")
    # the chart's data has bob's return: a point more than before, the eng and ops steps at 1
    steps = await page.evaluate("() => { const c = document.getElementById('chart'); return c.dataset.points; }")
    assert int(steps) >= 3
    await story.shots(page, "back")
    await ledger_ok(story.gw)
