"""A PostgreSQL server of a test's own, so the test may stop and restart it without touching the machine's
shared server on 127.0.0.1:5432 (which every other test uses).

:func:`private_postgres` runs Debian's PostgreSQL binaries as the ``postgres`` user: ``initdb`` into a fresh
directory (trust authentication, as the shared server), ``pg_ctl start`` on a port of its own on 127.0.0.1 with
its Unix socket in that directory, and always stops it (fast mode) and removes the directory at the end. A
missing binary fails the test (CI installs ``postgresql``).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from idwall.testing.fixtures import free_port

__all__ = ["PostgresServer", "private_postgres"]

BIN = Path("/usr/lib/postgresql/15/bin")
#: how long pg_ctl may wait for the server to start or stop (seconds)
WAIT = 60


class PostgresServer:
    """A private PostgreSQL cluster in ``directory``, listening on 127.0.0.1:``port`` while started."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.data = directory / "data"
        self.log = directory / "server.log"

    @property
    def url(self) -> str:
        """The server's ``postgres`` database (superuser ``postgres``, trust authentication)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *command], capture_output=True, text=True,
                              timeout=WAIT + 30)
        assert done.returncode == 0, f"{command[0]} failed: {done.stdout}{done.stderr}\n{self._log_tail()}"

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def create(self) -> None:
        """``initdb`` the cluster (superuser ``postgres``, trust authentication for local and TCP connections)."""
        assert (BIN / "initdb").exists(), f"PostgreSQL 15 is not installed ({BIN}): apt-get install -y postgresql"
        self._as_postgres(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                          "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                          "-w", "-t", str(WAIT), "start")

    def stop(self) -> None:
        """Stop the server in fast mode: every client connection is cut at once, as in an outage."""
        self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", str(WAIT), "stop")

    def running(self) -> bool:
        """Whether the server is up (``pg_ctl status``)."""
        done = subprocess.run(["runuser", "-u", "postgres", "--", str(BIN / "pg_ctl"), "-D", str(self.data),
                               "status"], capture_output=True, timeout=30)
        return done.returncode == 0


@contextlib.contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """A new PostgreSQL server of the caller's own, started; stopped and removed when the block ends.

    Its directory is a fresh one under the system temporary directory (not pytest's ``tmp_path``, whose parents
    the ``postgres`` user may not enter), owned by ``postgres``.
    """
    directory = Path(tempfile.mkdtemp(prefix="idwall-pg-"))
    try:
        shutil.chown(directory, "postgres", "postgres")
        server = PostgresServer(directory, free_port())
        server.create()
        server.start()
        try:
            yield server
        finally:
            if server.running():
                server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
