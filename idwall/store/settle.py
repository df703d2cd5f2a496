"""What a kill leaves for after its answer: writing out the sessions it revoked.

A kill's transaction records the session ids it revoked in one ``kill_pending`` row, and every read that
decides whether a session lives treats those ids as revoked (each backend's ``NOT_KILLED``), so they are revoked
from its commit on, on every node. What the transaction no longer does is rewrite each session's row and add one
``kill_revocations`` row per id: for 10,000 sessions that held it, and the kill's answer, for hundreds of
milliseconds. :class:`Settling` does it :data:`SETTLE_AFTER` later, once every node has cut and acknowledged
(the UPDATE would take the CPU they need), in one transaction per backend (``_settle_pending``), and again when
a store opens (the rows a node left when it died) and when it closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from ..logs import event
from .base import StoreError

#: seconds from a kill's commit to writing out its sessions
SETTLE_AFTER = 1.0


class Settling:
    """The schedule of writing out ``kill_pending``; each backend's core mixes it in."""

    _settler: asyncio.Task[None] | None = None
    #: a kill of this process committed a pending row that no write-out has covered since
    _unsettled = False
    #: the backend's write-out of every ``kill_pending`` row (any node's) to its sessions and ``kill_revocations``,
    #: one transaction (each backend's ``SessionRecords`` defines it)
    _settle_pending: Callable[[], Awaitable[None]]

    def _settle_soon(self) -> None:
        """A kill just committed a ``kill_pending`` row: write it out :data:`SETTLE_AFTER` from now."""
        self._unsettled = True
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_later(), name="idwall-settle")

    async def _settle_later(self) -> None:
        await asyncio.sleep(SETTLE_AFTER)
        await self._settle_logged()

    async def _settle_logged(self) -> None:
        self._unsettled = False  # a kill committing from here on sets it again, and its row is read or not
        try:
            await self._settle_pending()
        except StoreError as exc:  # done again at close (or by the next store opened); the rows revoke meanwhile
            self._unsettled = True
            event("store.settle_failed", level=logging.WARNING, error=exc.log_detail or str(exc))

    async def _settle_before_close(self) -> None:
        """Write out what this process's kills left, now rather than after the delay."""
        settler, self._settler = self._settler, None
        if settler is not None:
            settler.cancel()
            await asyncio.gather(settler, return_exceptions=True)
        if self._unsettled:
            await self._settle_logged()
