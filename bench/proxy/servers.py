"""The servers of the proxy benchmark (nginx configurations, ``idwall serve``) and what /proc says about them.

Everything binds 127.0.0.1. nginx runs from generated configurations whose pid, logs and temp paths
live in the benchmark's temporary directory; every wait has a time limit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from idwall.config import Config

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- nginx configurations -------------------------------------------------------------------------


def nginx_conf(directory: Path, *, workers: int, server: str, connections: int = 4096) -> Path:
    """An nginx.conf whose pid, logs and temp paths all live in ``directory``.

    ``connections`` is per worker and counts upstream connections too; the descriptor limit follows it.
    """
    tmp = directory / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    text = f"""
worker_processes {workers};
worker_rlimit_nofile {connections + 1024};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type text/plain;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
{server}
}}
"""
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


def answer_locations(static: Path, small_body: str) -> str:
    """What the upstream answers, and nginx ``t`` itself, by the last segment of the path.

    - anything else (``…/1k``): ``small_body`` from the configuration;
    - ``…/1m``: the file ``static/1m.bin`` (1 MiB), from the open-file cache, with ``sendfile``;
    - ``…/upload``: reads the whole request body into memory, then answers ``uploaded``. ``return``
      alone would answer at once and discard the body as it arrives, so a front could stop forwarding
      it early; ``mirror_request_body on`` makes nginx read the whole body before the content phase,
      the static handler then finds no file (404, not logged) and ``error_page`` turns that into the
      200. ``client_body_buffer_size`` keeps the 1 MiB body off the disk.
    """
    return f"""
        root {static};
        sendfile on;
        open_file_cache max=16 inactive=600s;
        location / {{ return 200 "{small_body.rstrip()}\\n"; }}
        location ~ /1m$ {{ rewrite ^ /1m.bin break; }}
        location ~ /upload$ {{
            client_max_body_size 16m;
            client_body_buffer_size 2m;
            mirror /sink;
            mirror_request_body on;
            log_not_found off;
            error_page 404 =200 @uploaded;
        }}
        location = /sink {{ internal; return 204; }}
        location @uploaded {{ return 200 "uploaded\\n"; }}"""


def upstream_server_block(port: int, static: Path, small_body: str) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
{answer_locations(static, small_body)}
    }}"""


def mtls_server_block(port: int, config: Config, device_ca: str, locations: str) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        server_name localhost;
        ssl_certificate {config.tls.cert};
        ssl_certificate_key {config.tls.key};
        ssl_client_certificate {device_ca};
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
{locations}
    }}"""


def proxy_locations(header_name: str, header_value: str) -> str:
    """nginx as the proxy: a keep-alive pool, the fixed identity header, and bodies handled as IDWall does.

    Request bodies stream to the upstream as they arrive (``proxy_request_buffering off``) and a response
    is never spooled to a temporary file (``proxy_max_temp_file_size 0``: nginx's in-memory buffers only),
    so neither side's 1 MiB figures include disk writes.
    """
    return f"""
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header {header_name} "{header_value}";
            client_max_body_size 16m;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
        }}"""


def upstream_pool(up_port: int) -> str:
    return f"""
    upstream bench_upstream {{
        server 127.0.0.1:{up_port};
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}"""


# --- starting and stopping ------------------------------------------------------------------------


def start_nginx(directory: Path, conf: Path) -> subprocess.Popen[bytes]:
    # -e: nginx opens its compiled-in error log before reading the config, which fails for non-root
    return subprocess.Popen([NGINX, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=open(directory / "stderr.log", "w"))


def start_idwall(config_path: str, work: Path, workers: int, root: Path) -> subprocess.Popen[bytes]:
    """``python -m idwall serve`` from the tree at ``root``, logs appended to ``work/gateway.log``."""
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, "-m", "idwall", "serve", "--config", config_path]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return subprocess.Popen(cmd, env=env, stdout=open(work / "gateway.out", "a"),
                            stderr=open(work / "gateway.log", "a"))


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (nginx: fast shutdown; IDWall: drain), then SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server (pid {proc.pid}) exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {timeout}s") from None
            time.sleep(0.05)


# --- /proc ----------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (nginx workers, IDWall's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (processes gone since count as 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def io_syscalls(pids: list[int]) -> int:
    """Read-like plus write-like system calls of ``pids`` so far (``syscr`` + ``syscw`` of /proc/PID/io)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/io").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in text.splitlines() if line.startswith(("syscr:", "syscw:")))
    return total


def memory_kib(pids: list[int]) -> tuple[int, int | None]:
    """Resident memory of ``pids`` in KiB: (``VmRSS`` summed, ``Pss`` summed or None without smaps_rollup).

    RSS counts pages shared between an nginx master and its worker twice; PSS splits them.
    """
    rss, pss = 0, 0
    have_pss = True
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        rss += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            pss += next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
        except (OSError, StopIteration):
            have_pss = False
    return rss, pss if have_pss else None


def connections_per_process(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections on local ``port`` each of ``pids`` holds (from /proc)."""
    established = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
            established.add(fields[9])
    counts: dict[int, int] = {}
    for pid in pids:
        held = 0
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:  # closed since the listing
                continue
            held += link.startswith("socket:[") and link[8:-1] in established
        if held:
            counts[pid] = held
    return counts
