"""idwall.proxy_protocol: PROXY v2 headers built and parsed, round trips for any address and TLVs, and every
malformed header refused with its reason (never read another way)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st

from idwall.proxy_protocol import LOCAL, MAX_HEADER, PROXY, SIGNATURE, TLV_ASSERTION, ProxyHeaderError, build, parse

ports = st.integers(0, 65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
tlv_maps = st.dictionaries(st.integers(0, 255), st.binary(max_size=300), max_size=6)


@given(family=st.sampled_from([ipv4, ipv6]).flatmap(lambda a: st.tuples(a, a)), sport=ports, dport=ports,
       tlvs=tlv_maps, payload=st.binary(max_size=64))
def test_round_trip(family: tuple[str, str], sport: int, dport: int, tlvs: dict[int, bytes], payload: bytes) -> None:
    header = build((family[0], sport), (family[1], dport), tlvs)
    parsed, used = parse(header + payload)  # type: ignore[misc]
    assert used == len(header)
    assert (parsed.command, parsed.source, parsed.destination, parsed.tlvs) == (
        PROXY, (family[0], sport), (family[1], dport), tlvs)


@given(tlvs=tlv_maps, cut=st.integers(0, 400))
def test_a_header_that_has_not_all_arrived_asks_for_more(tlvs: dict[int, bytes], cut: int) -> None:
    header = build(("10.0.0.1", 1), ("10.0.0.2", 2), tlvs)
    cut = min(cut, len(header) - 1)
    assert parse(header[:cut]) is None


def test_the_assertion_travels_in_tlv_0xe0() -> None:
    header = build(("192.0.2.7", 50000), ("192.0.2.1", 5432), {TLV_ASSERTION: b"a.b.c"})
    parsed, _ = parse(header)  # type: ignore[misc]
    assert parsed.assertion == b"a.b.c"
    assert header[:12] == SIGNATURE and header[12] == 0x21 and header[13] == 0x11


def test_a_local_header_carries_no_addresses() -> None:
    header = SIGNATURE + bytes((0x20 | LOCAL, 0x00)) + struct.pack("!H", 0)
    parsed, used = parse(header + b"x")  # type: ignore[misc]
    assert (parsed.command, parsed.source, parsed.destination, used) == (LOCAL, None, None, 16)


def _raw(command: int = 0x21, family: int = 0x11, body: bytes = bytes(12), length: int | None = None) -> bytes:
    return SIGNATURE + bytes((command, family)) + struct.pack("!H", len(body) if length is None else length) + body


@pytest.mark.parametrize("data, reason", [
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "signature"),
    (b"\x16\x03\x01\x02\x00", "signature"),
    (b"GET / HTTP/1.1\r\n", "signature"),
    (_raw(command=0x11), "version 1"),
    (_raw(command=0x31), "version 3"),
    (_raw(command=0x22), "command 0x2"),
    (_raw(family=0x12), "0x12"),
    (_raw(family=0x31), "0x31"),
    (_raw(family=0x00, body=b""), "0x00"),
    (_raw(body=bytes(11)), "shorter than its address block"),
    (_raw(family=0x21, body=bytes(20)), "shorter than its address block"),
    (_raw(body=bytes(12) + b"\xe0\x00"), "too few for another one"),
    (_raw(body=bytes(12) + b"\xe0\x00\x05abc"), "more than the header holds"),
    (_raw(body=bytes(12) + b"\xe0\x00\x01a\xe0\x00\x01b"), "appears twice"),
    (_raw(length=MAX_HEADER), "more than the"),
])
def test_malformed_headers_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse(data + bytes(64))


@given(junk=st.binary(min_size=1, max_size=200))
def test_arbitrary_bytes_are_refused_or_parsed_never_crash(junk: bytes) -> None:
    for data in (junk, SIGNATURE + junk):
        try:
            result = parse(data)
        except ProxyHeaderError:
            continue
        if result is not None:
            header, used = result
            assert used <= len(data) and header.command in (LOCAL, PROXY)


@pytest.mark.parametrize("source, destination, tlvs, reason", [
    (("10.0.0.1", 1), ("::1", 2), None, "same address family"),
    (("10.0.0.1", 70000), ("10.0.0.2", 2), None, "outside 0-65535"),
    (("10.0.0.1", 1), ("10.0.0.2", 2), {256: b""}, "TLV type 256"),
    (("10.0.0.1", 1), ("10.0.0.2", 2), {TLV_ASSERTION: bytes(MAX_HEADER)}, "more than"),
])
def test_build_refuses_what_it_cannot_write(source: tuple[str, int], destination: tuple[str, int],
                                            tlvs: dict[int, bytes] | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        build(source, destination, tlvs)
