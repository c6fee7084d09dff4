"""Certificates made here, and the CDR stand-in served over TLS with them, for the TLS tests.

`private_ca` makes a certificate authority nobody trusts by default; `server_certificate` has it
sign a certificate for 127.0.0.1. `TLSStandIn` is the real stand-in (the same server the other
tests use, built from the same command line) with its listening socket wrapped in TLS, serving
from a thread of the test process; it counts the TCP connections it accepts, so a test can tell
that a certificate error was not retried (a retry is a new connection).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airflow_provider_cdr.fake_api import cli
from airflow_provider_cdr.fake_api.server import StandIn, StandInServer
from tests.conftest import STAND_IN_DEFAULTS


@dataclass(frozen=True)
class Authority:
    """A private CA: its certificate (the bundle a client's `verify` names) and its signing key."""

    cert_path: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _builder(subject: str, issuer: x509.Name, public_key: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def private_ca(directory: Path, name: str = "CDR tests private CA") -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        _builder(name, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name.replace(' ', '-')}.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Authority(cert_path, certificate, key)


def server_certificate(ca: Authority, directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A leaf certificate for `host` signed by `ca`, and its key: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _builder(host, ca.certificate.subject, key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    cert_path = directory / f"server-{host}.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, _write_key(key, directory / f"server-{host}.key")


def tls_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


class TLSStandIn:
    """The CDR stand-in on https://127.0.0.1:<port>, from a thread; counts the connections it accepts."""

    def __init__(self, cert: Path, key: Path, **params: Any) -> None:
        self._params = {**STAND_IN_DEFAULTS, **params}
        self._context = tls_server_context(cert, key)
        self.connections = 0
        self._server: StandInServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> TLSStandIn:
        plain = StandIn(**self._params)
        server = cli.build_server(cli.build_parser().parse_args(plain.argv()[3:]))
        # The handshake happens in the handler's thread, on its first read: a client that hangs
        # up on an untrusted certificate then costs that thread an error, not the server.
        server.socket = self._context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        accept = server.get_request

        def counting_accept() -> Any:
            self.connections += 1
            return accept()

        server.get_request = counting_accept  # type: ignore[method-assign]
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.socket.getsockname()[:2]
        return f"https://{host}:{port}"

    @property
    def api_key(self) -> str:
        return str(self._params.get("api_key", "demo-key"))

    @property
    def timezone(self) -> str:
        return str(self._params["timezone"])

    def requests(self) -> int:
        """/api requests that got through the handshake (each one carried the key)."""
        assert self._server is not None
        return int(self._server.app.stats.snapshot()["requests"])
