"""idwall.pki: keys on disk, the two CAs, CSR checks and device certificates.

Real keys, real files, and real TLS handshakes on 127.0.0.1 for the
certificates that matter on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import socket
import ssl
import stat
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from idwall import pki
from idwall.errors import BadRequest

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def gateway_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = pki.generate_p256_key()
    return pki.make_ca("IDWall gateway CA", key, now=NOW, days=3650), key


@pytest.fixture(scope="module")
def device_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = pki.generate_p256_key()
    return pki.make_ca("IDWall device CA", key, now=NOW, days=365), key


def _ext(cert: x509.Certificate, cls: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


def _issue(device_ca, device_id: str = "dev-1", key=None, ttl: int = 86400, now=NOW):
    ca_cert, ca_key = device_ca
    key = key or pki.generate_p256_key()
    info = pki.check_csr(pki.make_csr(key, "laptop"))
    return pki.issue_device_cert(ca_cert=ca_cert, ca_key=ca_key, csr=info, device_id=device_id, now=now, ttl=ttl), key


# --- private keys on disk ---------------------------------------------------


def test_generate_p256_key() -> None:
    key = pki.generate_p256_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"


def test_private_key_round_trip_mode_0600(tmp_path: Path) -> None:
    key = pki.generate_p256_key()
    path = tmp_path / "key.pem"
    pki.write_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    loaded = pki.load_private_key(path)
    assert loaded.private_numbers() == key.private_numbers()
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]  # no temporary file left behind


def test_private_key_mode_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        pki.write_private_key(tmp_path / "key.pem", pki.generate_p256_key())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600


def test_private_key_is_never_readable_by_others_while_written(tmp_path: Path, monkeypatch) -> None:
    """The content exists on disk only in a 0600 file: observe it just before the final rename."""
    seen: list[tuple[int, bytes]] = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((stat.S_IMODE(os.stat(src).st_mode), Path(src).read_bytes()))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    old = os.umask(0)
    try:
        pki.write_private_key(tmp_path / "key.pem", pki.generate_p256_key())
    finally:
        os.umask(old)
    assert len(seen) == 1
    mode, content = seen[0]
    assert mode == 0o600 and b"PRIVATE KEY" in content


def test_existing_world_readable_key_file_is_replaced_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("old")
    path.chmod(0o644)
    pki.write_private_key(path, pki.generate_p256_key())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_symlink_at_key_path_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("do not overwrite")
    link = tmp_path / "key.pem"
    link.symlink_to(victim)
    pki.write_private_key(link, pki.generate_p256_key())
    assert victim.read_text() == "do not overwrite"
    assert not link.is_symlink()
    assert stat.S_IMODE(link.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_load_private_key_refuses_garbage_and_names_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.pem"):
        pki.load_private_key(path)


def test_load_private_key_refuses_encrypted_key(tmp_path: Path) -> None:
    path = tmp_path / "enc.pem"
    path.write_bytes(
        pki.generate_p256_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ValueError, match="enc.pem"):
        pki.load_private_key(path)


# --- certificates on disk -------------------------------------------------


def test_cert_round_trip(tmp_path: Path, gateway_ca) -> None:
    cert, _ = gateway_ca
    path = tmp_path / "ca.pem"
    pki.write_cert(path, cert)
    assert pki.load_cert(path) == cert
    assert path.read_text() == pki.cert_pem(cert)
    assert pki.cert_pem(cert).startswith("-----BEGIN CERTIFICATE-----")


def test_load_cert_refuses_non_cert(tmp_path: Path) -> None:
    path = tmp_path / "x.pem"
    path.write_text(pki.make_csr(pki.generate_p256_key(), "x"))
    with pytest.raises(ValueError, match="x.pem"):
        pki.load_cert(path)


# --- CAs and server certificates --------------------------------------------


def test_make_ca(gateway_ca) -> None:
    cert, key = gateway_ca
    cert.verify_directly_issued_by(cert)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "IDWall gateway CA"
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)
    assert 0 < cert.serial_number < 2**128


def test_make_ca_accepts_unix_seconds_and_naive_utc() -> None:
    key = pki.generate_p256_key()
    a = pki.make_ca("x", key, now=NOW.timestamp(), days=1)
    b = pki.make_ca("x", key, now=NOW.replace(tzinfo=None), days=1)
    assert a.not_valid_after_utc == b.not_valid_after_utc == NOW + timedelta(days=1)


def test_make_server_cert(gateway_ca) -> None:
    ca_cert, ca_key = gateway_ca
    key = pki.generate_p256_key()
    cert = pki.make_server_cert(ca_cert, ca_key, key, hosts=["localhost", "127.0.0.1", "::1", "gw.example"],
                                now=NOW, days=90)
    cert.verify_directly_issued_by(ca_cert)
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "gw.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _ext(cert, x509.BasicConstraints).value.ca is False
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ca_cert, x509.SubjectKeyIdentifier).value.digest
    assert cert.public_key() == key.public_key()
    assert pki.device_id_from_cert(cert) is None


def test_make_server_cert_refuses_no_hosts_and_wrong_ca_key(gateway_ca) -> None:
    ca_cert, ca_key = gateway_ca
    with pytest.raises(ValueError, match="at least one host"):
        pki.make_server_cert(ca_cert, ca_key, pki.generate_p256_key(), hosts=[], now=NOW, days=1)
    with pytest.raises(ValueError, match="does not belong"):
        pki.make_server_cert(ca_cert, pki.generate_p256_key(), pki.generate_p256_key(), hosts=["a"], now=NOW, days=1)


# --- CSR checks -----------------------------------------------------------


def _pem_csr(der: bytes) -> bytes:
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE REQUEST-----\n"


def _csr_pem(key, sign_hash=None, builder=None) -> bytes:
    builder = builder or x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    )
    return builder.sign(key, sign_hash).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()])
def test_check_csr_accepts_p256_and_p384(curve) -> None:
    key = ec.generate_private_key(curve)
    pem = pki.make_csr(key, "laptop")
    for form in (pem, pem.encode("ascii")):
        info = pki.check_csr(form)
        spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert info.spki_der == spki
        assert info.spki_sha256 == hashlib.sha256(spki).digest()
        assert info.public_key == key.public_key()


def test_check_csr_accepts_legacy_new_certificate_request_label() -> None:
    key = pki.generate_p256_key()
    pem = pki.make_csr(key, "x").replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")
    assert pki.check_csr(pem).public_key == key.public_key()


@pytest.mark.parametrize(
    ("make_key", "sign_hash", "named"),
    [
        (lambda: rsa.generate_private_key(65537, 2048), hashes.SHA256(), "RSA-2048"),
        (lambda: ed25519.Ed25519PrivateKey.generate(), None, "Ed25519"),
        (lambda: ed448.Ed448PrivateKey.generate(), None, "Ed448"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), hashes.SHA512(), "EC secp521r1"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), hashes.SHA256(), "EC secp256k1"),
    ],
)
def test_check_csr_refuses_other_key_types(make_key, sign_hash, named) -> None:
    with pytest.raises(pki.CSRError, match=named) as info:
        pki.check_csr(_csr_pem(make_key(), sign_hash))
    assert isinstance(info.value, BadRequest) and info.value.status == 400


@pytest.mark.parametrize("sign_hash", [hashes.SHA224(), hashes.SHA3_256()])
def test_check_csr_refuses_weak_or_unexpected_signature_hash(sign_hash) -> None:
    with pytest.raises(pki.CSRError, match="expected SHA-256"):
        pki.check_csr(_csr_pem(pki.generate_p256_key(), sign_hash))


def test_check_csr_refuses_bad_self_signature() -> None:
    """A CSR whose signed content was altered (as if the key holder never signed it) is refused."""
    key = pki.generate_p256_key()
    csr = x509.load_pem_x509_csr(pki.make_csr(key, "aaaaaaaa").encode())
    der = csr.public_bytes(serialization.Encoding.DER)
    tampered = der.replace(b"aaaaaaaa", b"aaaaaaab")
    assert tampered != der
    pem = _pem_csr(tampered)
    with pytest.raises(pki.CSRError, match="self-signature does not verify"):
        pki.check_csr(pem)


def test_check_csr_refuses_csr_carrying_someone_elses_key() -> None:
    """Key substitution: the signed body names key B but the signature is by key A."""
    key_a, key_b = pki.generate_p256_key(), pki.generate_p256_key()
    csr_a = x509.load_pem_x509_csr(pki.make_csr(key_a, "dev").encode())
    spki_a = key_a.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    spki_b = key_b.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    der = csr_a.public_bytes(serialization.Encoding.DER).replace(spki_a, spki_b)
    assert spki_b in der  # the swapped CSR names key B
    with pytest.raises(pki.CSRError, match="self-signature"):
        pki.check_csr(_pem_csr(der))


@pytest.mark.parametrize(
    ("pem", "match"),
    [
        ("", "BEGIN CERTIFICATE REQUEST"),
        ("hello", "BEGIN CERTIFICATE REQUEST"),
        (b"\x00\xff" * 10, "BEGIN CERTIFICATE REQUEST"),
        ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "not a valid"),
        ("-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n", "not a valid"),
        ("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n", "not a valid"),
        ("-----BEGIN CERTIFICATE REQUEST-----\n\u00e9\n-----END CERTIFICATE REQUEST-----\n", "non-ASCII"),
        (None, "got NoneType"),
        (123, "got int"),
    ],
)
def test_check_csr_refuses_malformed_input(pem, match) -> None:
    with pytest.raises(pki.CSRError, match=match):
        pki.check_csr(pem)


def test_check_csr_refuses_certificate_instead_of_csr(gateway_ca) -> None:
    with pytest.raises(pki.CSRError, match="BEGIN CERTIFICATE REQUEST"):
        pki.check_csr(pki.cert_pem(gateway_ca[0]))


def test_check_csr_size_cap() -> None:
    pem = pki.make_csr(pki.generate_p256_key(), "x")
    padded = pem + "\n" * (pki.MAX_CSR_PEM_BYTES - len(pem))
    assert len(padded) == pki.MAX_CSR_PEM_BYTES
    pki.check_csr(padded)  # exactly at the cap is accepted
    with pytest.raises(pki.CSRError, match="at most 16384"):
        pki.check_csr(padded + "\n")


# --- device certificates ----------------------------------------------------


def test_issue_device_cert(device_ca) -> None:
    ca_cert, _ = device_ca
    cert, key = _issue(device_ca, device_id="dev_01.A-b", ttl=3600)
    cert.verify_directly_issued_by(ca_cert)
    assert cert.public_key() == key.public_key()
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev_01.A-b")])
    assert cert.issuer == ca_cert.subject
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("urn:idwall:device:dev_01.A-b")]
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == \
        _ext(ca_cert, x509.SubjectKeyIdentifier).value.digest
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(seconds=3600)
    assert 0 < cert.serial_number < 2**128
    assert pki.device_id_from_cert(cert) == "dev_01.A-b"


def test_serials_are_random(device_ca) -> None:
    serials = {_issue(device_ca)[0].serial_number for _ in range(5)}
    assert len(serials) == 5


def test_device_cert_never_outlives_its_ca(device_ca) -> None:
    ca_cert, _ = device_ca
    cert, _ = _issue(device_ca, ttl=10 * 365 * 86400)
    assert cert.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_requested_csr_extensions_are_ignored(device_ca) -> None:
    """A CSR asking to be a CA, a server, or another device gets none of it."""
    key = pki.generate_p256_key()
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "IDWall")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("gateway.example"),
            x509.UniformResourceIdentifier("urn:idwall:device:admin-laptop"),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        ]), critical=False)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=True, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
    )
    info = pki.check_csr(_csr_pem(key, hashes.SHA256(), builder))
    ca_cert, ca_key = device_ca
    cert = pki.issue_device_cert(ca_cert=ca_cert, ca_key=ca_key, csr=info, device_id="dev-7", now=NOW, ttl=600)

    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-7")])
    assert _ext(cert, x509.BasicConstraints).value.ca is False
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert list(_ext(cert, x509.SubjectAlternativeName).value) == [
        x509.UniformResourceIdentifier("urn:idwall:device:dev-7")
    ]
    ku = _ext(cert, x509.KeyUsage).value
    assert not ku.key_cert_sign and not ku.crl_sign and not ku.content_commitment
    assert pki.device_id_from_cert(cert) == "dev-7"
    assert {e.oid for e in cert.extensions} == {
        x509.BasicConstraints.oid, x509.KeyUsage.oid, x509.ExtendedKeyUsage.oid,
        x509.SubjectAlternativeName.oid, x509.SubjectKeyIdentifier.oid, x509.AuthorityKeyIdentifier.oid,
    }


@pytest.mark.parametrize(
    "device_id",
    ["", "a" * 65, "dev:admin", "dev/1", "dev 1", "dev\n1", "dév", "a,CN=admin", None],
)
def test_issue_device_cert_refuses_unsafe_device_ids(device_ca, device_id) -> None:
    with pytest.raises(ValueError, match="device id"):
        _issue(device_ca, device_id=device_id)


def test_issue_device_cert_refuses_bad_ttl_and_mismatched_ca(device_ca, gateway_ca) -> None:
    with pytest.raises(ValueError, match="ttl"):
        _issue(device_ca, ttl=0)
    info = pki.check_csr(pki.make_csr(pki.generate_p256_key(), "x"))
    with pytest.raises(ValueError, match="does not belong"):
        pki.issue_device_cert(ca_cert=device_ca[0], ca_key=gateway_ca[1], csr=info, device_id="d", now=NOW, ttl=60)


def test_cert_thumbprint(device_ca) -> None:
    cert, _ = _issue(device_ca)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert pki.cert_thumbprint(der) == hashlib.sha256(der).digest()
    assert len(pki.cert_thumbprint(der)) == 32


def _cert_with_sans(device_ca, uris: list[str]) -> x509.Certificate:
    ca_cert, ca_key = device_ca
    key = pki.generate_p256_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


@pytest.mark.parametrize(
    ("uris", "expected"),
    [
        ([], None),
        (["https://example.com/"], None),
        (["urn:idwall:device:"], None),
        (["urn:idwall:device:a", "urn:idwall:device:b"], None),  # ambiguous: names two devices
        (["urn:idwall:device:a", "urn:idwall:device:a"], "a"),
        (["https://example.com/", "urn:idwall:device:a"], "a"),
        (["URN:IDWALL:DEVICE:a"], None),
    ],
)
def test_device_id_from_cert(device_ca, uris, expected) -> None:
    assert pki.device_id_from_cert(_cert_with_sans(device_ca, uris)) == expected


def test_device_id_from_ca_cert_is_none(device_ca) -> None:
    assert pki.device_id_from_cert(device_ca[0]) is None


# --- device side: CSR and PKCS#12 -----------------------------------------------


def test_make_csr() -> None:
    key = pki.generate_p256_key()
    csr = x509.load_pem_x509_csr(pki.make_csr(key, "alice laptop").encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice laptop"
    assert csr.public_key() == key.public_key()
    with pytest.raises(ValueError, match="1-64"):
        pki.make_csr(key, "x" * 65)


def test_build_p12_with_password(device_ca) -> None:
    cert, key = _issue(device_ca)
    data = pki.build_p12(cert, key, [device_ca[0]], "dev-1", password=b"hunter2")
    loaded = pkcs12.load_pkcs12(data, b"hunter2")
    assert loaded.cert.certificate == cert and loaded.cert.friendly_name == b"dev-1"
    assert loaded.key.private_numbers() == key.private_numbers()
    assert [c.certificate for c in loaded.additional_certs] == [device_ca[0]]
    with pytest.raises(ValueError):
        pkcs12.load_pkcs12(data, b"wrong")
    with pytest.raises((ValueError, TypeError)):
        pkcs12.load_pkcs12(data, None)


def test_build_p12_without_password(device_ca) -> None:
    cert, key = _issue(device_ca)
    loaded = pkcs12.load_pkcs12(pki.build_p12(cert, key, [], "dev-1"), None)
    assert loaded.cert.certificate == cert and loaded.additional_certs == []


# --- on the wire: real TLS handshakes -------------------------------------------


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str):
    """One TLS handshake over 127.0.0.1; returns (server peer cert DER or exception, client exception)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                result["peer"] = tls.getpeercert(binary_form=True)
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            result["peer"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    client_error = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                tls.recv(2)
    except (ssl.SSLError, OSError) as exc:
        client_error = exc
    thread.join(5)
    listener.close()
    return result.get("peer"), client_error


@dataclass
class Wire:
    dir: Path
    server_ctx: ssl.SSLContext
    gateway_ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
    device_ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@pytest.fixture
def wire(tmp_path: Path) -> Wire:
    """A gateway's TLS files at the real current time: server cert for localhost/127.0.0.1, mTLS on the device CA."""
    now = datetime.now(timezone.utc)
    gateway_key, device_key, server_key = (pki.generate_p256_key() for _ in range(3))
    gateway_ca = pki.make_ca("gateway CA", gateway_key, now=now, days=1)
    device_ca = pki.make_ca("device CA", device_key, now=now, days=1)
    server_cert = pki.make_server_cert(gateway_ca, gateway_key, server_key, hosts=["localhost", "127.0.0.1"],
                                       now=now, days=1)
    pki.write_cert(tmp_path / "server.pem", server_cert)
    pki.write_private_key(tmp_path / "server-key.pem", server_key)
    pki.write_cert(tmp_path / "ca.pem", gateway_ca)
    pki.write_cert(tmp_path / "device-ca.pem", device_ca)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server-key.pem")
    server_ctx.load_verify_locations(tmp_path / "device-ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    return Wire(tmp_path, server_ctx, (gateway_ca, gateway_key), (device_ca, device_key))


def _client_ctx(dir: Path, cert: x509.Certificate | None = None, key=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(dir / "ca.pem")
    if cert is not None:
        pki.write_cert(dir / "client.pem", cert)
        pki.write_private_key(dir / "client-key.pem", key)
        ctx.load_cert_chain(dir / "client.pem", dir / "client-key.pem")
    return ctx


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_mtls_handshake_with_device_cert(wire: Wire, hostname: str) -> None:
    cert, key = _issue(wire.device_ca, device_id="dev-wire", now=datetime.now(timezone.utc))
    peer, client_error = _handshake(wire.server_ctx, _client_ctx(wire.dir, cert, key), hostname)
    assert client_error is None
    assert isinstance(peer, bytes)
    assert pki.device_id_from_cert(x509.load_der_x509_certificate(peer)) == "dev-wire"
    assert pki.cert_thumbprint(peer) == pki.cert_thumbprint(cert.public_bytes(serialization.Encoding.DER))


def test_client_cert_from_gateway_ca_is_not_a_device(wire: Wire) -> None:
    """The CAs never mix: a certificate signed by the gateway CA does not pass as a device."""
    rogue, key = _issue(wire.gateway_ca, device_id="dev-rogue", now=datetime.now(timezone.utc))
    peer, _ = _handshake(wire.server_ctx, _client_ctx(wire.dir, rogue, key), "localhost")
    assert isinstance(peer, ssl.SSLCertVerificationError)
    # The client sends the gateway CA along (it trusts it), so OpenSSL reports an untrusted root.
    assert "issuer" in peer.verify_message or "self-signed" in peer.verify_message


def test_expired_device_cert_fails_handshake(wire: Wire) -> None:
    cert, key = _issue(wire.device_ca, now=datetime.now(timezone.utc) - timedelta(hours=2), ttl=3600)
    peer, _ = _handshake(wire.server_ctx, _client_ctx(wire.dir, cert, key), "localhost")
    assert isinstance(peer, ssl.SSLCertVerificationError)
    assert "expired" in peer.verify_message


def test_server_cert_does_not_cover_other_hosts(wire: Wire) -> None:
    wire.server_ctx.verify_mode = ssl.CERT_NONE
    _, client_error = _handshake(wire.server_ctx, _client_ctx(wire.dir), "evil.example")
    assert isinstance(client_error, ssl.SSLCertVerificationError)
    assert "mismatch" in client_error.verify_message
