"""The Python cost of one proxied request, without TLS, sockets or the kernel: the engine's own code.

The real protocols (``idwall.engine.io.ClientProtocol`` and ``UpstreamProtocol``) of a real node (a gateway
directory from ``idwall init``, its SQLite store, a device with a live session) are driven with canned bytes
through in-memory transports, so a run measures exactly what the engine adds per request and nothing the box
does around it. Two figures:

    CPU     best of --repeats runs of --requests requests: microseconds of process CPU per request
    instr   with --callgrind: instructions per request under valgrind (the difference between two run
            lengths, so start-up cancels out); the same figure for the same code on any load, which is what
            an optimisation should be judged by on a shared machine

    python bench/engine/run.py                      # unbound route (the cached assertion)
    python bench/engine/run.py --bind               # a fresh ES256 assertion per request
    python bench/engine/run.py --callgrind          # instructions per request (needs valgrind)
    python bench/engine/run.py --profile            # cProfile, top 25 by own time
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from idwall.config import load_config  # noqa: E402
from idwall.engine import io as engine_io  # noqa: E402
from idwall.engine.upstream import UpstreamProtocol  # noqa: E402
from idwall.testing.fixtures import free_port, init_gateway_dir, register_device_directly  # noqa: E402
from idwall.web.server import make_node  # noqa: E402

REQUEST = b"GET /item HTTP/1.1\r\nHost: localhost:8443\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 03 Dec 2026 13:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n\r\n" + b"x" * 1024)


class _TLSObject:
    """What the engine reads of uvloop's TLS object: the peer certificate and the server name."""

    def __init__(self, der: bytes) -> None:
        self._der = der
        self._idwall_sni = "localhost"

    def getpeercert(self, binary_form: bool = False) -> bytes:
        return self._der


class _Transport:
    """An in-memory transport: keeps what is written, reads nothing."""

    def __init__(self, extra: dict[str, Any]) -> None:
        self.extra = extra
        self.written: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


async def measure(*, bind: bool, requests: int, repeats: int, profile: bool) -> float:
    work = Path(tempfile.mkdtemp(prefix="idwall-enginebench-"))
    info = init_gateway_dir(work / "gw", port=free_port(), upstream="http://127.0.0.1:9")
    path = Path(info["config"])
    path.write_text(path.read_text().replace("    websockets: true\n",
                                             f"    websockets: true\n    bind_request: {str(bind).lower()}\n"))
    node = await make_node(load_config(path))
    device = await register_device_directly(node.store, device_ca_cert=node.device_ca_cert,
                                            device_ca_key=node.device_ca_key, out_dir=work / "device",
                                            user_id="alice")
    der = x509.load_pem_x509_certificate(device.cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    engine = engine_io.Engine(node, internal_socket=str(work / "unused.sock"))
    client = engine_io.ClientProtocol(engine)
    client_transport = _Transport({"ssl_object": _TLSObject(der), "peername": ("127.0.0.1", 50000)})
    client.connection_made(client_transport)  # type: ignore[arg-type]
    await node.resolve(client.conn)
    upstream = UpstreamProtocol(engine, engine.destinations["whoami"])
    upstream_transport = _Transport({})
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    engine.pool.release(upstream, 0.0)

    def one() -> None:
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)

    for _ in range(200):  # warm: claims prepared, caches filled
        one()
    answer = client_transport.written[-1]
    if not answer.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"the engine did not answer 200: {answer[:200]!r}")
    profiler = cProfile.Profile() if profile else None
    best = float("inf")
    for _ in range(repeats):
        client_transport.written.clear()
        upstream_transport.written.clear()
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        for _ in range(requests):
            one()
        if profiler is not None:
            profiler.disable()
        best = min(best, time.process_time() - started)
    await node.store.close()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return best / requests * 1e6


def callgrind(bind: bool) -> int:
    """Instructions per request: two runs under valgrind, the longer minus the shorter, over the difference."""
    counts = []
    for requests in (500, 1500):
        out = Path(tempfile.mkdtemp()) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                   "--requests", str(requests), "--repeats", "1"] + (["--bind"] if bind else [])
        env = dict(os.environ, PYTHONHASHSEED="0")
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=True)
        counts.append(int(re.search(r"Collected : (\d+)", result.stderr).group(1)))  # type: ignore[union-attr]
    return (counts[1] - counts[0]) // 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", action="store_true", help="bind_request: true (sign every request)")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile the measured runs")
    parser.add_argument("--callgrind", action="store_true", help="instructions per request under valgrind")
    args = parser.parse_args()
    route = "bind_request: true" if args.bind else "bind_request: false"
    if args.callgrind:
        print(f"{route}: {callgrind(args.bind)} instructions per request")
        return
    cpu = uvloop.run(measure(bind=args.bind, requests=args.requests, repeats=args.repeats, profile=args.profile))
    print(f"{route}: {cpu:.1f} µs of CPU per request (best of {args.repeats} runs of {args.requests})")


if __name__ == "__main__":
    main()
