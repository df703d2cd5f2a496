"""PROXY protocol version 2 (haproxy's proxy-protocol.txt §2.2), both sides, strict (pure, no I/O).

The gateway opens a TCP route's upstream connection with :func:`build`: the client's address and, in TLV
type :data:`TLV_ASSERTION` (``0xE0``, the first of the range the specification leaves to applications),
the signed identity assertion, so a service or ``idwall relay`` beside it can check who is connecting.
:func:`parse` reads one header off the front of a stream:

    None                          not all of the header has arrived yet (read more, within a deadline)
    (ProxyHeader, consumed)       the header and how many bytes it took; what follows is the payload
    ProxyHeaderError              anything that is not exactly one well-formed v2 header

Strict means what a second parser could read differently is refused: a wrong signature (including a v1
text header), any version but 2, a command other than LOCAL or PROXY, a family or transport other than TCP
over IPv4 or IPv6 (UNSPEC only with LOCAL), a length shorter than the address block, TLVs that overrun the
header or leave bytes over, and a TLV type given twice.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

__all__ = ["LOCAL", "MAX_HEADER", "PROXY", "ProxyHeader", "ProxyHeaderError", "SIGNATURE", "TLV_ASSERTION",
           "build", "parse"]

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: the commands (low nibble of byte 13; the high nibble is the version, 2)
LOCAL, PROXY = 0x0, 0x1
#: the signed identity assertion (a compact JWS, ASCII)
TLV_ASSERTION = 0xE0
#: the longest header accepted: 16 fixed bytes and a length field of at most this many minus 16
MAX_HEADER = 16 + 16 * 1024

_TCP4, _TCP6, _UNSPEC = 0x11, 0x21, 0x00
_ADDRESS_BYTES = {_TCP4: 12, _TCP6: 36, _UNSPEC: 0}


class ProxyHeaderError(ValueError):
    """The bytes are not one well-formed PROXY v2 header; the message says what was wrong."""


@dataclass(frozen=True)
class ProxyHeader:
    """One PROXY v2 header: the command, the connection's two ends, and its TLVs by type."""

    command: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    tlvs: dict[int, bytes] = field(default_factory=dict)

    @property
    def assertion(self) -> bytes | None:
        """The value of TLV :data:`TLV_ASSERTION`, if the header carries one."""
        return self.tlvs.get(TLV_ASSERTION)


def build(source: tuple[str, int], destination: tuple[str, int], tlvs: dict[int, bytes] | None = None) -> bytes:
    """A ``PROXY`` header for a TCP connection from ``source`` to ``destination`` (IPv4 or IPv6, same family).

    Raises ``ValueError`` for addresses of different families, ports outside 0-65535, TLV types outside
    0-255, or a header longer than :data:`MAX_HEADER`.
    """
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        raise ValueError(f"source {src} and destination {dst} are not of the same address family")
    for port in (source[1], destination[1]):
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is outside 0-65535")
    family = _TCP4 if src.version == 4 else _TCP6
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    for kind, value in (tlvs or {}).items():
        if not 0 <= kind <= 255:
            raise ValueError(f"TLV type {kind} is outside 0-255")
        body += struct.pack("!BH", kind, len(value)) + value
    if 16 + len(body) > MAX_HEADER:
        raise ValueError(f"the header would be {16 + len(body)} bytes, more than {MAX_HEADER}")
    return SIGNATURE + bytes((0x20 | PROXY, family)) + struct.pack("!H", len(body)) + body


def parse(data: bytes, *, max_header: int = MAX_HEADER) -> tuple[ProxyHeader, int] | None:
    """Read one header from the start of ``data`` (see the module docstring for what it answers)."""
    head = data[:12]
    if not SIGNATURE.startswith(head):
        raise ProxyHeaderError("the connection does not start with the PROXY protocol v2 signature")
    if len(data) < 16:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY protocol version {version}; only 2 is accepted")
    if command not in (LOCAL, PROXY):
        raise ProxyHeaderError(f"PROXY command {command:#x}; expected LOCAL (0x0) or PROXY (0x1)")
    family = data[13]
    if family not in _ADDRESS_BYTES or (family == _UNSPEC and command == PROXY):
        raise ProxyHeaderError(f"address family and transport {family:#04x}; expected TCP over IPv4 (0x11) "
                               "or IPv6 (0x21)")
    (length,) = struct.unpack("!H", data[14:16])
    if 16 + length > max_header:
        raise ProxyHeaderError(f"the header says it is {16 + length} bytes, more than the {max_header} accepted")
    if length < _ADDRESS_BYTES[family]:
        raise ProxyHeaderError(f"the header's length {length} is shorter than its address block "
                               f"({_ADDRESS_BYTES[family]} bytes)")
    if len(data) < 16 + length:
        return None
    body = data[16:16 + length]
    source = destination = None
    if family == _TCP4:
        source = (str(ipaddress.IPv4Address(body[0:4])), struct.unpack("!H", body[8:10])[0])
        destination = (str(ipaddress.IPv4Address(body[4:8])), struct.unpack("!H", body[10:12])[0])
    elif family == _TCP6:
        source = (str(ipaddress.IPv6Address(body[0:16])), struct.unpack("!H", body[32:34])[0])
        destination = (str(ipaddress.IPv6Address(body[16:32])), struct.unpack("!H", body[34:36])[0])
    tlvs = _tlvs(body[_ADDRESS_BYTES[family]:])
    if command == LOCAL:
        source = destination = None  # the specification: a receiver ignores the addresses of a LOCAL header
    return ProxyHeader(command, source, destination, tlvs), 16 + length


def _tlvs(data: bytes) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    at = 0
    while at < len(data):
        if len(data) - at < 3:
            raise ProxyHeaderError(f"{len(data) - at} bytes left after the TLVs, too few for another one")
        kind, size = data[at], struct.unpack("!H", data[at + 1:at + 3])[0]
        if at + 3 + size > len(data):
            raise ProxyHeaderError(f"TLV {kind:#04x} says it is {size} bytes, more than the header holds")
        if kind in tlvs:
            raise ProxyHeaderError(f"TLV {kind:#04x} appears twice")
        tlvs[kind] = data[at + 3:at + 3 + size]
        at += 3 + size
    return tlvs
