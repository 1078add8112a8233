"""TLS to the database: verify-full checks the server's certificate, require only encrypts.

The tests' PostgreSQL is reached through a TLS endpoint on 127.0.0.1 whose certificate is signed
by a CA this module makes; another CA of its own stands in for a man in the middle's.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dagster import RetryPolicy
from sqlalchemy.engine import make_url

from sqlgym_assets.catalog import TABLES_BY_NAME
from sqlgym_assets.source.reader import PostgresResource
from sqlgym_assets_tests.helpers import failed_once, materialize_tables, point_project_at, today

USERS = TABLES_BY_NAME["users"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: x509.Certificate | None, issuer_key, *, ca: bool):
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        ).add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104  # the protocol's first-message codes


class TlsTerminatingProxy:
    """A TLS endpoint for PostgreSQL's protocol in front of the embedded server, which is built
    without SSL: it answers the client's SSLRequest, does the TLS handshake with its certificate
    (as RDS Proxy or pgbouncer would) and relays the session, in plain text, to the server."""

    def __init__(self, upstream_socket: str, certificate: Path, key: Path) -> None:
        self._upstream = upstream_socket
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            code = struct.unpack("!II", _receive(client, 8))[1]
            if code == GSSENC_REQUEST:
                client.sendall(b"N")
                code = struct.unpack("!II", _receive(client, 8))[1]
            if code != SSL_REQUEST:
                client.close()  # this endpoint speaks TLS only
                return
            client.sendall(b"S")
            secure = self._context.wrap_socket(client, server_side=True)
        except (OSError, ssl.SSLError, struct.error):  # a client that refused our certificate
            client.close()
            return
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(self._upstream)
        threading.Thread(target=_relay, args=(upstream, secure), daemon=True).start()
        _relay(secure, upstream)


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


def _relay(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.close()


@pytest.fixture(scope="module")
def tls_server(database_url: str) -> Iterator[tuple[str, Path, Path]]:
    """(URL of the test database through TLS on 127.0.0.1, the server's CA, another CA)."""
    root = Path(tempfile.mkdtemp(prefix="sqlgym-test-tls-"))
    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("sqlgym test CA", ca_key, None, ca_key, ca=True)
    other = _certificate("someone else's CA", other_key, None, other_key, ca=True)
    server = _certificate("127.0.0.1", server_key, ca, ca_key, ca=False)
    (root / "ca.crt").write_bytes(_pem(ca))
    (root / "other-ca.crt").write_bytes(_pem(other))
    (root / "server.crt").write_bytes(_pem(server))
    (root / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    url = make_url(database_url)
    host = url.query.get("host") or url.host
    if not str(host).startswith("/"):
        pytest.skip("the TLS endpoint relays to the test server's Unix socket")
    proxy = TlsTerminatingProxy(
        f"{host}/.s.PGSQL.{url.port or 5432}", root / "server.crt", root / "server.key"
    )
    try:
        through_tls = url.set(host="127.0.0.1", port=proxy.port, query={})
        yield (
            through_tls.render_as_string(hide_password=False),
            root / "ca.crt",
            root / "other-ca.crt",
        )
    finally:
        proxy.close()
        shutil.rmtree(root, ignore_errors=True)


def _with(url: str, **query: str) -> str:
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


def test_verify_full_with_the_servers_ca_reads_the_partition(
    tls_server, monkeypatch, tmp_path
) -> None:
    url, ca, _ = tls_server
    point_project_at(monkeypatch, _with(url, sslmode="verify-full"), tmp_path / "lake")

    result = materialize_tables([USERS], today(), postgres=PostgresResource(sslrootcert=str(ca)))

    assert result.success


def test_verify_full_refuses_a_certificate_of_another_ca_once(
    tls_server, monkeypatch, tmp_path
) -> None:
    url, _, other_ca = tls_server
    lake = point_project_at(
        monkeypatch, _with(url, sslmode="verify-full", sslrootcert=str(other_ca)), tmp_path / "lake"
    )

    result = materialize_tables(
        [USERS], today(), raise_on_error=False, retry_policy=RetryPolicy(max_retries=2, delay=0.1)
    )

    message = failed_once(result)
    assert "certificate verify failed" in message
    assert not lake.exists() or not any(lake.rglob("*.parquet"))


def test_require_encrypts_but_accepts_a_certificate_no_one_verified(
    tls_server, monkeypatch, tmp_path
) -> None:
    """Why verify-full is the production setting: require, without a CA bundle, connects to
    whoever answers with any certificate (here one signed by a CA the client never saw)."""
    url, _, _ = tls_server
    point_project_at(monkeypatch, _with(url, sslmode="require"), tmp_path / "lake")

    assert materialize_tables([USERS], today()).success
