"""Throwaway TLS material for tests: a self-signed certificate for 127.0.0.1 and its key (PEM)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_key(path: Path, key: ec.EllipticCurvePrivateKey | None = None,
              passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    key = key or ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, encryption))
    path.chmod(0o600)
    return key


def self_signed(tmp: Path, stem: str = "server") -> tuple[Path, Path]:
    """``(cert, key)`` under ``tmp``: a CA-less self-signed certificate for 127.0.0.1, which a
    client trusts by passing it as its CA bundle (``--ca-cert``, ``verify=``)."""
    key_path, cert_path = tmp / f"{stem}.key", tmp / f"{stem}.crt"
    key = write_key(key_path)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secagg test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(
                "127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
