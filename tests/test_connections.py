"""idwall.connections: the registry of live connections, its indexes, invalidation and the cut.

The indexes are driven with hand-built records (``tests/helpers/records.py``) and connections without a
transport (nothing but the cut touches it); the cut runs on real sockets (a socket pair under asyncio
transports), so "aborted" means the peer reads the end of the stream; the certificate a connection reports
is read from a real TLS connection to a real gateway.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import socket
import weakref
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from idwall.connections import BURY_AFTER, BURY_CHUNK, Conn, Registry
from idwall.model import Resolved
from tests.helpers.gateway import GatewayUnderTest
from tests.helpers.records import CERT, device, resolved, session, user

OTHER_CERT = bytes(range(1, 33))


def bound(registry: Registry, found: Resolved | None, *, cert: bytes = CERT, transport: object = None) -> Conn:
    """A connection with ``cert`` added to ``registry`` and bound to ``found``."""
    conn = registry.add(transport, cert_sha256=cert, remote="127.0.0.1", now=1.0)
    registry.bind(conn, found)
    return conn


def alice(*, groups: tuple[str, ...] = ("eng", "oncall"), session_id: str = "ses-1") -> Resolved:
    return resolved(user_=user("alice", groups=groups), session_=session(session_id))


def bob() -> Resolved:
    return Resolved(device("dev-2", user_id="bob", cert_sha256=OTHER_CERT), user("bob", groups=("eng",)), (),
                    replace(session("ses-2", user_id="bob"), device_id="dev-2"))


# --- registering and indexing -----------------------------------------------------------------------


def test_a_connection_is_registered_until_it_is_removed() -> None:
    registry = Registry()
    first = registry.add(None, cert_sha256=CERT, remote="127.0.0.1", sni="localhost", now=5.0)
    anonymous = registry.add(None, cert_sha256=None, remote="127.0.0.2")
    assert first.id != anonymous.id and len(registry) == 2 and set(registry) == {first, anonymous}
    assert registry.get(first.id) is first and registry.by_cert(CERT) == [first]
    assert (first.sni, first.since, first.last_seen, first.stale, first.resolved) == ("localhost", 5.0, 5.0, True, None)
    registry.remove(first)
    registry.remove(first)  # a connection lost twice (abort, then connection_lost) is forgotten once
    assert registry.get(first.id) is None and registry.by_cert(CERT) == [] and list(registry) == [anonymous]


def test_an_unresolved_connection_names_nobody() -> None:
    conn = Registry().add(None, cert_sha256=CERT, remote="127.0.0.1")
    assert (conn.session_id, conn.device_id, conn.user_id, conn.groups) == (None, None, None, ())


def test_a_bound_connection_is_found_by_its_session_device_user_and_groups() -> None:
    registry = Registry()
    a, b = bound(registry, alice()), bound(registry, bob(), cert=OTHER_CERT)
    assert (a.session_id, a.device_id, a.user_id, a.groups) == ("ses-1", "dev-1", "alice", ("eng", "oncall"))
    assert not a.stale
    assert registry.select("session", "ses-1") == [a] and registry.select("device", "dev-2") == [b]
    assert registry.select("user", "alice") == [a] and registry.select("group", "oncall") == [a]
    assert set(registry.select("group", "eng")) == {a, b}
    assert registry.select("user", "carol") == [] and registry.select("group", None) == []
    assert registry.for_ids(sessions=["ses-2"], devices=["dev-1"]) == {a, b}
    assert registry.for_ids(users=["alice", "alice"]) == {a} and registry.for_ids() == set()


def test_a_kill_of_everyone_selects_every_connection_with_a_certificate() -> None:
    registry = Registry()
    a = bound(registry, alice())
    unresolved = registry.add(None, cert_sha256=OTHER_CERT, remote="127.0.0.1")
    registry.add(None, cert_sha256=None, remote="127.0.0.1")  # the SOAR's own connection: no certificate
    assert set(registry.select("all", None)) == {a, unresolved}


def test_an_unknown_scope_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scope 'planet'"):
        Registry().select("planet", "earth")


def test_binding_again_moves_the_connection_to_its_new_keys() -> None:
    registry = Registry()
    conn = bound(registry, alice(groups=("eng",), session_id="ses-1"))
    conn.grants["app"] = 99.0
    registry.bind(conn, alice(groups=("sre",), session_id="ses-9"))  # a new login, a group change
    assert registry.select("group", "eng") == [] and registry.select("session", "ses-1") == []
    assert registry.select("group", "sre") == [conn] and registry.select("session", "ses-9") == [conn]
    assert conn.grants == {} and conn.claims == {}, "what was decided for the old binding is not reused"
    registry.bind(conn, resolved(with_session=False))  # logged out: the device and user remain, no session
    assert registry.select("session", "ses-9") == [] and registry.select("device", "dev-1") == [conn]
    registry.bind(conn, None)  # the certificate maps to nothing any more
    assert registry.select("user", "alice") == [] and registry.by_cert(CERT) == [conn]


def test_a_resolution_finishing_after_the_connection_was_lost_indexes_nothing() -> None:
    registry = Registry()
    conn = registry.add(None, cert_sha256=CERT, remote="127.0.0.1")
    registry.remove(conn)
    registry.bind(conn, alice())
    assert registry.select("user", "alice") == [] and registry.select("all", None) == []


def test_a_crowded_group_is_found_whole_and_emptied_one_by_one() -> None:
    registry = Registry()
    conns = [bound(registry, alice(session_id=f"ses-{i}")) for i in range(20)]
    assert set(registry.select("group", "eng")) == set(conns) and len(registry.select("user", "alice")) == 20
    for conn in conns[:19]:
        registry.remove(conn)
    assert registry.select("group", "eng") == [conns[19]] and registry.select("session", "ses-3") == []
    registry.remove(conns[19])
    assert registry.select("group", "eng") == [] and len(registry) == 0


def test_invalidation_makes_exactly_those_connections_resolve_again() -> None:
    registry = Registry()
    a, b = bound(registry, alice()), bound(registry, bob(), cert=OTHER_CERT)
    a.grants["app"] = 99.0
    epoch = a.epoch
    registry.invalidate(registry.for_ids(users=["alice"]))
    assert a.stale and a.epoch == epoch + 1 and a.grants == {}
    assert not b.stale and b.epoch == 0
    assert registry.select("user", "alice") == [a], "an invalidated connection stays indexed until it resolves again"


# --- the cut, on real sockets -----------------------------------------------------------------------


class _Quiet(asyncio.Protocol):
    pass


@pytest.fixture
async def socket_pairs() -> AsyncIterator[list[tuple[asyncio.Transport, socket.socket]]]:
    """Three connected socket pairs: the gateway's end under an asyncio transport, the peer's end plain."""
    loop = asyncio.get_running_loop()
    pairs = []
    for _ in range(3):
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        transport, _ = await loop.create_connection(_Quiet, sock=ours)
        pairs.append((transport, theirs))
    yield pairs
    for transport, theirs in pairs:
        transport.abort()
        theirs.close()


async def test_a_cut_aborts_the_sockets_and_counts_only_the_open_ones(socket_pairs) -> None:
    loop = asyncio.get_running_loop()
    registry = Registry()
    (t1, peer1), (t2, peer2), (t3, peer3) = socket_pairs
    victim, closing = bound(registry, alice(), transport=t1), bound(registry, alice(session_id="ses-7"), transport=t2)
    bystander = bound(registry, bob(), cert=OTHER_CERT, transport=t3)
    t2.close()  # already closing (the client said goodbye): cut, but not counted as cut by the kill
    epoch = registry.epoch
    assert registry.cut(registry.select("user", "alice")) == 1
    assert registry.epoch == epoch + 1, "a resolution racing this kill must read again"
    assert victim.killed and closing.killed and not bystander.killed
    assert registry.select("user", "alice") == [] and list(registry) == [bystander]
    for peer in (peer1, peer2):
        assert await asyncio.wait_for(loop.sock_recv(peer, 1), 5) == b"", "the peer's socket is not closed"
    t3.write(b"still here")
    assert await asyncio.wait_for(loop.sock_recv(peer3, 64), 5) == b"still here"
    assert registry.cut([victim]) == 0, "cutting twice counts nothing"


class _Watched:
    """A transport that notes how many connections the registry still held when it was aborted."""

    def __init__(self, registry: Registry, seen: list[int]) -> None:
        self.registry, self.seen = registry, seen

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        self.seen.append(len(self.registry))


def test_a_large_cut_aborts_every_socket_before_it_takes_any_out_of_the_indexes() -> None:
    """Kill-all of 10,000 connections: the last socket is aborted without waiting for the index bookkeeping of
    the 9,999 before it (which follows, once every socket is closed)."""
    registry, seen = Registry(), []  # type: ignore[var-annotated]
    for i in range(10_000):
        bound(registry, alice(session_id=f"ses-{i}"), cert=hashlib.sha256(b"%d" % i).digest(),
              transport=_Watched(registry, seen))
    assert registry.cut(registry.select("all", None)) == 10_000
    assert seen == [10_000] * 10_000  # every abort happened with all of them still registered
    assert len(registry) == 0 and registry.select("user", "alice") == []


async def test_a_large_cut_holds_what_it_cut_past_the_teardown_then_lets_go() -> None:
    """Every socket is aborted at once, but the connections (their TLS state and certificates, 30 µs each to
    free) are let go of only after the kill has had time to answer, and the cyclic collector waits for that; a
    small cut holds nothing."""
    registry, seen = Registry(), []  # type: ignore[var-annotated]
    many = BURY_CHUNK * 3
    refs = []
    for i in range(many):
        transport = _Watched(registry, seen)
        refs.append(weakref.ref(transport))
        bound(registry, alice(session_id=f"ses-{i}"), cert=hashlib.sha256(b"%d" % i).digest(), transport=transport)
    del transport
    assert registry.cut(registry.select("all", None)) == many and len(seen) == many
    assert not gc.isenabled()
    await asyncio.sleep(BURY_AFTER / 2)
    assert sum(ref() is not None for ref in refs) == many  # held while the kill answers
    await asyncio.sleep(BURY_AFTER / 2 + 0.05)
    assert sum(ref() is not None for ref in refs) == 0 and gc.isenabled()
    bound(registry, bob(), cert=OTHER_CERT, transport=_Watched(registry, seen))
    assert registry.cut(registry.select("user", "bob")) == 1 and gc.isenabled()


def test_a_cut_of_most_connections_leaves_the_others_found_by_every_index() -> None:
    """Most are cut (the registry is indexed again from the few left): those left are found as before, by
    session, device, user, group and certificate, and leave the indexes when they go."""
    registry, seen = Registry(), []  # type: ignore[var-annotated]
    for i in range(8):
        bound(registry, alice(session_id=f"ses-{i}"), cert=hashlib.sha256(b"%d" % i).digest(),
              transport=_Watched(registry, seen))
    survivor = bound(registry, bob(), cert=OTHER_CERT, transport=_Watched(registry, seen))
    unresolved = registry.add(_Watched(registry, seen), cert_sha256=None, remote="127.0.0.1", now=1.0)
    assert registry.cut(registry.select("user", "alice")) == 8
    assert sorted(c.id for c in registry) == sorted([survivor.id, unresolved.id])
    assert [registry.select(scope, target) for scope, target in (
        ("session", "ses-2"), ("device", "dev-2"), ("user", "bob"), ("group", "eng"))] == [[survivor]] * 4
    assert registry.by_cert(OTHER_CERT) == [survivor] and registry.select("user", "alice") == []
    registry.remove(survivor)
    assert registry.select("group", "eng") == [] and registry.by_cert(OTHER_CERT) == [] and len(registry) == 1


# --- the certificate on a real TLS connection ---------------------------------------------------------


async def test_the_certificate_is_read_from_the_tls_connection(gateway: GatewayUnderTest) -> None:
    device_files = await gateway.device("alice")
    async with gateway.session(device_files) as client, client.get(gateway.url + "/page") as resp:
        assert resp.status == 200
        [conn] = gateway.running.node.registry.by_cert(device_files.cert_sha256)
        der = conn.certificate_der()
    assert der is not None and hashlib.sha256(der).digest() == device_files.cert_sha256
