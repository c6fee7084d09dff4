"""TLS is verified by default: a self-signed loopback server is refused, at once, without the key leaking.

The server is a throwaway ssl-wrapped http.server on 127.0.0.1 with a certificate made here with the
`cryptography` package. Plain http:// to a host that is not loopback is refused unless the
connection says allow_insecure_http (the refusal itself is also tested in tests/hooks).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airflow_provider_cdr.errors import CDRAPIError, CDRQueryError
from airflow_provider_cdr.hooks.cdr import CDRHook

SECRET = "tls-secret-5b8e1d"
DAY = "2024-03-05"


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, False, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class _EmptyDay(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        body = json.dumps({"records": [], "search_token": None}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _CountingServer(ThreadingHTTPServer):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.connections = 0
        self.requests: list[str] = []

    def get_request(self) -> Any:
        self.connections += 1
        return super().get_request()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client hanging up mid-handshake is the point


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[_CountingServer, Path]]:
    cert, key = self_signed(tmp_path)
    server = _CountingServer(("127.0.0.1", 0), _EmptyDay)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, cert
    server.shutdown()
    server.server_close()


def hook_for(monkeypatch: pytest.MonkeyPatch, host: str, **extra: Any) -> CDRHook:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CDR_TLS",
        json.dumps(
            {"conn_type": "cdr", "host": host, "password": SECRET, "extra": {"timezone": "UTC", **extra}}
        ),
    )
    return CDRHook(cdr_conn_id="cdr_tls")


def test_sessions_verify_certificates_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    session = hook_for(monkeypatch, "https://cc-ams03.voiso.com").get_conn()
    assert session.verify is True


def test_a_self_signed_server_is_refused_at_once_without_the_key(
    tls_server: tuple[_CountingServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = tls_server
    host, port = server.server_address[:2]
    hook = hook_for(monkeypatch, f"https://{host}:{port}")
    with pytest.raises(CDRAPIError, match=r"TLS verification .* failed") as raised:
        list(hook.iter_records(start_date=DAY, end_date=DAY))
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value) or "certificate verify failed" in str(
        raised.value
    )
    assert SECRET not in str(raised.value)
    assert server.requests == [], "no request (and no key) went over the unverified connection"
    assert server.connections == 1, "a certificate error is not retried"


def test_the_same_server_is_accepted_when_its_certificate_is_trusted(
    tls_server: tuple[_CountingServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cert = tls_server
    host, port = server.server_address[:2]
    # A worker image's CA bundle variable must not override the connection's own `verify`.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)
    hook = hook_for(monkeypatch, f"https://{host}:{port}", verify=str(cert))
    assert list(hook.iter_records(start_date=DAY, end_date=DAY)) == []
    assert len(server.requests) == 1


@pytest.mark.parametrize("host", ["http://cdr.example.com", "http://10.1.2.3:8080", "http://[2001:db8::1]"])
def test_plain_http_off_loopback_needs_allow_insecure_http(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CDRQueryError, match="allow_insecure_http"):
        hook_for(monkeypatch, host).get_conn()
    session = hook_for(monkeypatch, host, allow_insecure_http=True).get_conn()
    assert session.verify is True and "allow_insecure_http" not in session.headers


@pytest.mark.parametrize("host", ["http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"])
def test_plain_http_on_loopback_is_allowed(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hook_for(monkeypatch, host).get_conn() is not None
