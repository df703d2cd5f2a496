"""A gateway killed with SIGKILL in the middle of a burst of signed actions and logins loses no answered entry.

The gateway runs as its own process (``python -m idwall serve``). Every answer
of 200 means the ledger entry was committed first (SQLite, ``synchronous=FULL``,
one transaction for the effect and its entry), so after the kill and a restart:
the chain verifies, every login answered 200 has its ``session.login`` (by
session id) and every invite answered 200 its ``invite.create`` (by user), and
the restarted gateway keeps appending onto the same chain.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from idwall import audit
from idwall.testing.fixtures import client_ssl_context, free_port, init_gateway_dir
from idwall.testing.authenticator import SoftAuthenticator
from tests.helpers.api import Enrolled, begin_enroll, call, finish_enroll, invite, login, save_device, sign

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[2]  # tests/e2e/ is two levels below the repository
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
KILL_AFTER_ANSWERS = 25  # answered 200s before the SIGKILL: well inside the burst, which has no end of its own
LOGIN_WORKERS_PER_DEVICE, INVITE_WORKERS = 3, 3


@dataclass
class ServedGateway:
    """A gateway directory and the ``idwall serve`` process running on it (what the flow helpers need)."""

    dir: Path
    init: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    log: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.init["public_url"])

    @property
    def config(self) -> Path:
        return Path(self.init["config"])

    def session(self, device: Enrolled | None = None) -> aiohttp.ClientSession:
        """One client with one keep-alive connection, presenting ``device``'s certificate when given."""
        ctx = (client_ssl_context(self.init["ca_pem"]) if device is None
               else client_ssl_context(self.init["ca_pem"], device.cert_path, device.key_path))
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1),
                                     timeout=aiohttp.ClientTimeout(total=20))

    async def start(self) -> None:
        """Start ``idwall serve`` and wait until /idwall/healthz answers over TLS."""
        log = self.dir / f"serve-{len(self.log)}.log"
        self.log.append(log)
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "idwall", "serve", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT, env=ENV, cwd=self.dir)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                async with self.session() as client, client.get(self.url + "/idwall/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"the gateway did not come up: {log.read_text()}")

    def sigkill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM (drain and exit); the exit code, or None when it was not running."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


async def _enroll(gw: ServedGateway, code: str, user: str) -> Enrolled:
    auth = SoftAuthenticator(origin=gw.url)
    key, status, begun = await begin_enroll(gw, code=code)
    assert status == 200, begun
    status, answer = await finish_enroll(gw, begun["enrollment_id"], auth.create(begun["options"]))
    assert status == 200 and answer["status"] == "active", answer
    return save_device(gw, key, answer, user, auth)


def _ledger(gw: ServedGateway) -> list[dict[str, Any]]:
    """The stored entries, read-only (WAL lets this run beside the gateway)."""
    conn = sqlite3.connect(f"file:{gw.dir / 'idwall.db'}?mode=ro", uri=True)
    try:
        return [json.loads(r[0]) for r in conn.execute("SELECT entry FROM ledger ORDER BY seq")]
    finally:
        conn.close()


def _verify_cli(gw: ServedGateway, root: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "idwall", "audit", "verify", "--config", str(gw.config),
                           f"--root={root}"], capture_output=True, text=True, timeout=60, env=ENV, cwd=REPO)


@dataclass
class Burst:
    """What the burst got answered before the gateway died."""

    sessions: dict[str, str] = field(default_factory=dict)  # session id -> device id
    invited: list[str] = field(default_factory=list)
    cut: int = 0  # requests that died with the gateway
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self) -> None:
        if len(self.sessions) + len(self.invited) >= KILL_AFTER_ANSWERS:
            self.enough.set()


# Everything the client can see when the server vanishes mid-request or refuses new connections.
GONE = (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError)


async def _login_worker(gw: ServedGateway, device: Enrolled, lock: asyncio.Lock, burst: Burst) -> None:
    """Log in again and again on new connections until the gateway is gone.

    The passkey's counter moves at every signature and the gateway compare-and-sets
    it, so sign-and-finish is serialised per passkey; begins and connections race.
    """
    while True:
        try:
            async with gw.session(device) as client:
                status, begun = await call(client, "POST", gw.url + "/idwall/api/login/begin", {})
                assert status == 200, begun
                async with lock:
                    status, answer = await call(client, "POST", gw.url + "/idwall/api/login/finish",
                                                {"credential": device.auth.get(begun["options"])})
        except GONE:
            burst.cut += 1
            return
        assert status == 200, answer
        burst.sessions[answer["session_id"]] = device.device_id
        burst.answered()


async def _invite_worker(gw: ServedGateway, admin: Enrolled, lock: asyncio.Lock, burst: Burst, worker: int) -> None:
    """Signed invite.create actions by the admin, each on a new connection, until the gateway is gone."""
    for n in range(10_000):
        user = f"w{worker}-{n}"
        try:
            async with gw.session(admin) as client:
                status, begun = await call(client, "POST", gw.url + "/idwall/api/actions/begin", {"action": {
                    "type": "invite.create", "user": user, "name": user, "email": f"{user}@example.com",
                    "groups": [], "admin": False}})
                assert status == 200, begun
                async with lock:
                    status, answer = await call(client, "POST", gw.url + "/idwall/api/actions/finish", {
                        "action_id": begun["action_id"], "credential": admin.auth.get(begun["options"])})
        except GONE:
            burst.cut += 1
            return
        assert status == 200, answer
        burst.invited.append(user)
        burst.answered()


async def test_sigkill_mid_burst_loses_no_answered_entry_and_the_chain_verifies(tmp_path: Path) -> None:
    info = await asyncio.to_thread(init_gateway_dir, tmp_path / "gw", port=free_port())
    gw = ServedGateway(tmp_path / "gw", info)
    await gw.start()
    try:
        admin = await _enroll(gw, info["bootstrap_code"], "admin")
        root = admin.answer["root_fingerprint"]
        async with gw.session(admin) as client:
            assert (await login(gw, admin, client))[0] == 200
            codes = {f"user{i}": await invite(gw, admin, client, f"user{i}") for i in range(3)}
        devices = [await _enroll(gw, code, user) for user, code in codes.items()]

        burst = Burst()
        locks = {d.device_id: asyncio.Lock() for d in [admin, *devices]}
        workers = [asyncio.create_task(_login_worker(gw, d, locks[d.device_id], burst))
                   for d in devices for _ in range(LOGIN_WORKERS_PER_DEVICE)]
        workers += [asyncio.create_task(_invite_worker(gw, admin, locks[admin.device_id], burst, w))
                    for w in range(INVITE_WORKERS)]
        enough = asyncio.create_task(burst.enough.wait())
        done, _ = await asyncio.wait([enough, *workers], timeout=15, return_when=asyncio.FIRST_COMPLETED)
        for task in done - {enough}:
            task.result()  # a worker that stopped before the kill: show why
        assert enough in done, "the burst did not reach its answers in 15 s"
        gw.sigkill()
        # Answers read after this point were still sent by the process before it died (they sat in socket
        # buffers), so they count as answered too.
        await asyncio.wait_for(asyncio.gather(*workers), 30)
        sessions, invited = burst.sessions, burst.invited
        assert burst.cut == len(workers), "every worker was still going when the gateway died"
        assert len(sessions) + len(invited) >= KILL_AFTER_ANSWERS and sessions and invited

        await gw.start()
        entries = _ledger(gw)
        result = audit.verify_ledger(entries, root=root)
        assert result.ok, result.reason
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        logged = {e["subject"]: e["data"]["device_id"] for e in entries if e["type"] == "session.login"}
        assert sessions.items() <= logged.items(), "a login answered 200 is missing from the ledger"
        made = [e["data"]["user"] for e in entries if e["type"] == "invite.create"]
        assert set(invited) <= set(made), "an invite answered 200 is missing from the ledger"
        assert len(made) == len(set(made)), "no invite was recorded twice"

        # The restarted gateway appends onto the same chain: a login and a signed action after the crash.
        status, again = await login(gw, devices[0])
        assert status == 200, again
        async with gw.session(admin) as client:
            status, _ = await sign(gw, admin, client, {"type": "invite.create", "user": "after", "name": "After",
                                                       "email": "after@example.com", "groups": [], "admin": False})
            assert status == 200
        after = _ledger(gw)
        assert after[:len(entries)] == entries and [e["type"] for e in after[len(entries):]] == [
            "session.login", "invite.create"]
        run = await asyncio.to_thread(_verify_cli, gw, root)
        assert run.returncode == 0 and f"ledger OK: {len(after)} entries" in run.stdout, run.stdout + run.stderr
    finally:
        code = gw.stop()
    assert code == 0, "SIGTERM drains and exits 0: " + gw.log[-1].read_text()[-2000:]
