"""A throwaway certificate authority for TLS tests, made with `cryptography`: a CA, a server
certificate for 127.0.0.1 (and the name redis.test, never `localhost`, so that a client asking for
`localhost` shows host names are checked), a client certificate, and a second CA that signed
nothing of these (the wrong CA)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAME = "redis.test"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path

    def query(self, ca: Path | None = None) -> str:
        """A rediss:// URL's query naming the CA, client certificate and key, as redis-py reads them."""
        return f"ssl_ca_certs={ca or self.ca}&ssl_certfile={self.client_cert}&ssl_keyfile={self.client_key}"

    def server_args(self, tls_port: int) -> tuple[str, ...]:
        return ("--tls-port", str(tls_port), "--tls-cert-file", str(self.server_cert),
                "--tls-key-file", str(self.server_key), "--tls-ca-cert-file", str(self.ca),
                "--tls-auth-clients", "yes")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _authority(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _issue(authority: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], common_name: str,
           names: list[x509.GeneralName]) -> tuple[bytes, bytes]:
    ca_key, ca_cert = authority
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_tls_files(folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    authority, wrong = _authority("telemetry test CA"), _authority("another CA")
    server_cert, server_key = _issue(authority, SERVER_NAME, [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                              x509.DNSName(SERVER_NAME)])
    client_cert, client_key = _issue(authority, "telemetry client", [x509.DNSName("client.test")])
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
                     folder / "client.key", folder / "wrong-ca.pem")
    files.ca.write_bytes(authority[1].public_bytes(serialization.Encoding.PEM))
    files.wrong_ca.write_bytes(wrong[1].public_bytes(serialization.Encoding.PEM))
    for path, data in ((files.server_cert, server_cert), (files.server_key, server_key),
                       (files.client_cert, client_cert), (files.client_key, client_key)):
        path.write_bytes(data)
        path.chmod(0o600)
    return files
