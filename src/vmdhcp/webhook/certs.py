"""The webhook's certificate authority and serving certificate, made with `cryptography`.

Pure functions of their inputs and `now` (kopf's own generator depends on oscrypto, which
fails against Debian's OpenSSL 3). ECDSA P-256 keys: quick to make, accepted by every
API server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = timedelta(days=3650)
CA_RENEW_BEFORE = timedelta(days=365)
CERT_VALIDITY = timedelta(days=365)
CERT_RENEW_BEFORE = timedelta(days=30)
CLOCK_SKEW = timedelta(minutes=5)
"""Certificates start this long before `now`, for API servers whose clocks lag."""


class CertificateError(ValueError):
    """PEM data that is not a usable certificate and key."""


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    @cached_property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @cached_property
    def key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError("the private key is not an ECDSA key")
        return key

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> KeyPair:
        """Parse and check that the key belongs to the certificate; CertificateError if not."""
        pair = cls(cert_pem, key_pem)
        try:
            matches = pair.cert.public_key() == pair.key.public_key()
        except ValueError as exc:
            raise CertificateError(str(exc)) from exc
        if not matches:
            raise CertificateError("the private key does not belong to the certificate")
        return pair

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    def renewal_due(self, now: datetime, renew_before: timedelta) -> bool:
        """True when it expires within `renew_before` (or is not valid yet)."""
        return now >= self.not_after - renew_before or now < self.cert.not_valid_before_utc

    def signed_by(self, ca: KeyPair) -> bool:
        if self.cert.issuer != ca.cert.subject:
            return False
        try:
            self.cert.verify_directly_issued_by(ca.cert)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True

    def names(self) -> set[str]:
        """The DNS names and IP addresses (as text) the certificate is valid for."""
        try:
            san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return set()
        dns = san.value.get_values_for_type(x509.DNSName)
        ips = san.value.get_values_for_type(x509.IPAddress)
        return {*dns, *(str(ip) for ip in ips)}

    def covers(self, names: Iterable[str]) -> bool:
        return set(names) <= self.names()


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_ca(common_name: str, now: datetime, validity: timedelta = CA_VALIDITY) -> KeyPair:
    """A self-signed CA that can sign server certificates (and nothing below them)."""
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_serving_cert(
    ca: KeyPair, names: Sequence[str], now: datetime, validity: timedelta = CERT_VALIDITY
) -> KeyPair:
    """A TLS server certificate for `names` (DNS names or IP addresses; the first is the
    common name), signed by `ca`, never outliving it."""
    if not names:
        raise CertificateError("a serving certificate needs at least one name")
    key = _new_key()
    ca_key = ca.cert.public_key()
    if not isinstance(ca_key, ec.EllipticCurvePublicKey):
        raise CertificateError("the CA key is not an ECDSA key")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + validity, ca.not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in dict.fromkeys(names)]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))
