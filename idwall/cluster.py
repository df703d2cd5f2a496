"""How a kill reaches every process of this node: worker identity, wake-up nudges, heartbeats, acknowledgements.

The processes themselves are started and supervised by :mod:`idwall.supervisor` (``idwall serve --workers N``).

Shape:

* Each worker is a whole gateway with its own connection registry, listening on the same port with
  ``SO_REUSEPORT``: the kernel spreads new connections over them.
* Each worker registers in the store's ``workers`` table and heartbeats from its event poller every
  :data:`HEARTBEAT_EVERY` seconds: the heartbeat means "my poller runs", which is exactly what a kill
  needs from it. A worker silent for :data:`STALE_AFTER` seconds is not waited for.
* A kill is committed by whichever worker received it (revocation + ``kill`` event, one transaction),
  which cuts its own connections, wakes the other workers' pollers with a datagram on an abstract
  unix socket (the *nudge*; the 20 ms poll is the fallback), and waits up to
  :data:`FANOUT_TIMEOUT` for each live worker's row in ``event_acks``: written by that worker's
  poller after it cut its matching connections, with how many it cut. Workers that did not answer
  in time are named in the kill's answer, never hidden (DESIGN principle 5). Between nodes the same
  event + ack shape will ride on PostgreSQL ``LISTEN/NOTIFY`` in place of the nudge.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from .model import WorkerRow


#: how often a worker's event poller records that it is alive (seconds)
HEARTBEAT_EVERY = 0.5
#: a worker whose heartbeat is older than this is not waited for by a kill (seconds)
STALE_AFTER = 3.0
#: how long a kill waits for the other workers' acknowledgements before reporting them unreached
FANOUT_TIMEOUT = 1.0
#: how often the killing worker looks for acknowledgements while it waits (seconds)
ACK_POLL = 0.002
#: workers and acks older than this are deleted when a worker registers (housekeeping only)
FORGET_AFTER = 3600.0

_NUDGE = b"e"


def _abstract(address: str) -> str:
    """The abstract-namespace form of a nudge address (no file to clean up; gone with the process)."""
    return "\0" + address


@dataclass
class Worker:
    """This process's identity as a worker, and the socket other workers wake its event poller through."""

    index: int
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    nudge_address: str = field(default_factory=lambda: "idwall-" + secrets.token_hex(12))
    started_at: float = field(default_factory=time.time)
    _sock: socket.socket | None = None
    _wake: asyncio.Event | None = None

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}"

    def row(self, now: float) -> WorkerRow:
        return WorkerRow(self.id, self.host, self.pid, self.nudge_address, self.started_at, now)

    def listen(self) -> None:
        """Bind the nudge socket and watch it from the running event loop."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(_abstract(self.nudge_address))
        sock.setblocking(False)
        self._sock = sock
        loop.add_reader(sock.fileno(), self._drain)

    def _drain(self) -> None:
        assert self._sock is not None and self._wake is not None
        try:
            while self._sock.recv(64):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._wake.set()

    async def wait(self, timeout: float) -> None:
        """Sleep until nudged or ``timeout`` seconds passed, whichever comes first."""
        if self._wake is None:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None


def nudge(addresses: Iterable[str]) -> None:
    """Wake the event pollers listening on ``addresses`` (best effort: the poll interval is the fallback)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for address in addresses:
            try:
                sock.sendto(_NUDGE, _abstract(address))
            except OSError:
                pass  # gone (refused) or already nudged (queue full): either way nothing to add


class WorkerStore(Protocol):
    """The part of the store that records which workers are alive."""

    async def register_worker(self, worker: WorkerRow, *, forget_before: float) -> None: ...


async def register(store: WorkerStore, worker: Worker, *, now: float) -> None:
    """Announce ``worker`` (call after reading the event cursor and before listening; see idwall.web.server)."""
    await store.register_worker(worker.row(now), forget_before=now - FORGET_AFTER)
