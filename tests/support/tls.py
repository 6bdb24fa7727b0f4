"""Fixtures for TLS tests: a throwaway PKI made at test time and a Mosquitto that requires mTLS.

Nothing secret is committed: every key is generated in the test's temporary directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatewayd.simulators.broker import Mosquitto

__all__ = ["Issued", "Pki", "TlsMosquitto", "TlsWorld", "pki", "tls_broker"]

ACL_FILE = Path(__file__).resolve().parents[2] / "configs" / "mosquitto-acl.conf"
#: Names in the broker certificate; tests connect to 127.0.0.1 or check one of these.
BROKER_NAMES = ("localhost", "broker.test")


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Pki:
    """A CA that issues broker and client certificates into a directory, as PEM files."""

    def __init__(self, directory: Path, name: str) -> None:
        self.dir = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"{name} test CA"))
            .issuer_name(_name(f"{name} test CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
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
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = self._write(
            f"{name}-ca.crt", self.cert.public_bytes(serialization.Encoding.PEM)
        )

    def issue(
        self, cn: str, *, server: bool = False, expired: bool = False, self_signed: bool = False
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = (
            (now - dt.timedelta(days=10), now - dt.timedelta(days=1))
            if expired
            else (now - dt.timedelta(days=1), now + dt.timedelta(days=30))
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn) if self_signed else self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(n) for n in BROKER_NAMES]
                    + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(key if self_signed else self.key, hashes.SHA256())
        stem = f"{self.name}-{cn}{'-expired' if expired else ''}{'-self' if self_signed else ''}"
        return Issued(
            self._write(f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM)),
            self._write(
                f"{stem}.key",
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            ),
        )

    def _write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path


class TlsMosquitto(Mosquitto):
    """A private Mosquitto with one TLS listener that requires a client certificate and
    applies the shipped ACL (``configs/mosquitto-acl.conf``), as ``configs/mosquitto-tls.conf``.
    """

    def __init__(self, ca_file: Path, server: Issued) -> None:
        super().__init__(host="127.0.0.1")
        self.ca_file = ca_file
        self.server = server

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

    def _config(self) -> str:
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"acl_file {ACL_FILE}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type all",
            "connection_messages true",
            f"listener {self.port} {self.host}",
            f"cafile {self.ca_file}",
            f"certfile {self.server.cert}",
            f"keyfile {self.server.key}",
            "tls_version tlsv1.2",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "message_size_limit 65536",
            # Running as root, mosquitto would otherwise drop to a user who cannot read the keys.
            "user root",
        ]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TlsWorld:
    broker: TlsMosquitto
    ca: Pki
    #: A second, unrelated CA: what an attacker's (or a misconfigured) PKI looks like.
    other_ca: Pki
    gateway: Issued
    ops: Issued


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsWorld]:
    """A running mTLS Mosquitto, its CA, an unrelated CA, and good client certificates."""
    directory = tmp_path_factory.mktemp("pki")
    ca, other = Pki(directory, "school"), Pki(directory, "other")
    broker = TlsMosquitto(ca.ca_file, ca.issue("broker", server=True))
    broker.start()
    try:
        yield TlsWorld(broker, ca, other, ca.issue("site-a"), ca.issue("district-ops"))
    finally:
        broker.stop()


@pytest.fixture
def pki(tls_broker: TlsWorld) -> Pki:
    return tls_broker.ca
