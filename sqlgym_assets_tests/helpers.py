"""What the tests share: running a real materialization, and reading both sides to compare."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import http.server
import ipaddress
import json
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    EnvVar,
    ExecuteInProcessResult,
    RetryPolicy,
    materialize,
)
from psycopg2 import sql
from sqlalchemy.engine import make_url

from sqlgym_assets.assets import LAKE_IO_MANAGER_KEY, build_assets
from sqlgym_assets.catalog import TABLES_BY_NAME, ColumnPolicy, TableSpec
from sqlgym_assets.demo.data import load_demo_data
from sqlgym_assets.demo.embedded_postgres import ensure_database
from sqlgym_assets.lake.io_manager import ParquetLakeIOManager
from sqlgym_assets.lake.layout import LAKE_URL_ENV
from sqlgym_assets.quality.checks import check_names
from sqlgym_assets.quality.reconciliation import KEYS_MATCH_SOURCE
from sqlgym_assets.source.plan import Window, partition_window
from sqlgym_assets.source.reader import PostgresResource

# The mapping DESIGN.md fixes, written out independently of the code under test.
EXPECTED_ARROW_TYPES = {
    "character varying": pa.string(),
    "text": pa.string(),
    "integer": pa.int32(),
    "boolean": pa.bool_(),
    "double precision": pa.float64(),
    "timestamp without time zone": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "json": pa.string(),
    "jsonb": pa.string(),
    "difficultylevel": pa.string(),
    "execution_status": pa.string(),
}
JSON_TYPES = {"json", "jsonb"}
TEST_PSEUDONYMIZATION_KEY = "sqlgym-tests-pseudonymization-key-0123456789"


def keyed_hash(value: str, key: str = TEST_PSEUDONYMIZATION_KEY) -> str:
    """HMAC-SHA256 of the value's UTF-8 text, hex: what the lake holds for personal data."""
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def expected_arrow_type(pg_type: str) -> pa.DataType:
    return EXPECTED_ARROW_TYPES[pg_type.split("(")[0]]


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def assert_runs_in_a_fresh_interpreter(code: str) -> None:
    """Runs ``code`` in a new Python process (nothing imported yet) and expects it to pass."""
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


def point_project_at(monkeypatch, database_url: str, lake: Path) -> Path:
    """Points the project at a database (by URL) and a local lake; returns the lake."""
    monkeypatch.delenv("SQLGYM_DB_SECRET_ID", raising=False)
    monkeypatch.setenv("SQLGYM_DATABASE_URL", database_url)
    monkeypatch.setenv("SQLGYM_LAKE_URL", str(lake))
    return lake


REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run_command(
    command: Sequence[str], environment: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess:
    """A command of the virtualenv (dagster, dg, ...) run from the repository root, as a user
    runs it; its output is captured."""
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=REPOSITORY_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def service(
    command: Sequence[str], log: Path, environment: dict[str, str]
) -> Iterator[subprocess.Popen]:
    """A Dagster service of the virtualenv (dagster-webserver, dagster-daemon), run from the
    repository root with its output in ``log``; stopped on exit (SIGTERM, then waited for)."""
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(BIN / command[0]), *command[1:]],
            cwd=REPOSITORY_ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)


def check_evaluations(instance: DagsterInstance, run_id: str) -> list[AssetCheckEvaluation]:
    """The check evaluations a run stored, as the instance keeps them."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    return [record.event_log_entry.dagster_event.event_specific_data for record in records]


def failed_once(result: ExecuteInProcessResult) -> str:
    """Asserts the run failed in one step, once, without a retry; returns that failure's text."""
    assert not result.success
    kinds = [event.event_type_value for event in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in kinds
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    return failure.step_failure_data.error.to_string()


def env_lake(**options: str) -> ParquetLakeIOManager:
    """The lake IO manager as the code location configures it: its URL from $SQLGYM_LAKE_URL."""
    return ParquetLakeIOManager(lake_url=EnvVar(LAKE_URL_ENV), **options)


def materialize_tables(
    tables: Sequence[TableSpec | str],
    partition: str,
    *,
    instance: DagsterInstance | None = None,
    raise_on_error: bool = True,
    postgres: PostgresResource | None = None,
    lake: ParquetLakeIOManager | None = None,
    retry_policy: RetryPolicy | None = None,
    tags: dict[str, str] | None = None,
) -> ExecuteInProcessResult:
    """Materializes one partition of the given tables through the real assets and resources.

    Steps are not retried unless a test asks for a retry policy: a failure a test provokes
    must show on the first attempt.
    """
    specs = [TABLES_BY_NAME[t] if isinstance(t, str) else t for t in tables]
    return materialize(
        build_assets(tuple(specs), retry_policy=retry_policy),
        selection=[AssetKey(["sqlgym", spec.name]) for spec in specs],
        partition_key=partition,
        instance=instance,
        raise_on_error=raise_on_error,
        tags=tags,
        resources={
            "postgres": postgres or PostgresResource(),
            LAKE_IO_MANAGER_KEY: lake or env_lake(),
        },
    )


def lake_file(lake: Path, table: str, partition: str) -> Path:
    day = partition.replace("-", "")
    return lake / table / day[:4] / day[4:6] / day[6:] / f"{table}_{day}.parquet"


def source_rows(
    connection, table: TableSpec, window: Window | None, *, pseudonymized: bool = True
) -> list[dict[str, Any]]:
    """The rows PostgreSQL holds for a window, read with psycopg2 (not the project's driver), with
    personal columns as the lake must hold them: their keyed hash under the tests' key."""
    query = sql.SQL("SELECT {columns} FROM {table}").format(
        columns=sql.SQL(", ").join(sql.Identifier(name) for name in table.column_names),
        table=sql.Identifier(table.name),
    )
    parameters: tuple[object, ...] = ()
    if window is not None and table.cursor_column is not None:
        cursor_type = table.column(table.cursor_column).pg_type
        naive = cursor_type == "timestamp without time zone"
        start, end = window.start, window.end
        if naive:
            start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
        query += sql.SQL(" WHERE {cursor} >= %s AND {cursor} < %s").format(
            cursor=sql.Identifier(table.cursor_column)
        )
        parameters = (start, end)
    with connection.cursor() as cursor:
        cursor.execute(query, parameters)
        names = [column.name for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return [pseudonymize(table, row) for row in rows] if pseudonymized else rows


def pseudonymize(table: TableSpec, row: dict[str, Any]) -> dict[str, Any]:
    personal = {c.name for c in table.columns if c.policy is ColumnPolicy.PERSONAL}
    return {
        name: keyed_hash(value) if name in personal and value is not None else value
        for name, value in row.items()
    }


def lake_rows(table: TableSpec, path: Path) -> list[dict[str, Any]]:
    """Rows read back from Parquet, JSON text decoded so it compares with psycopg2's values."""
    rows = pq.read_table(path).to_pylist()
    json_columns = [c.name for c in table.columns if c.pg_type in JSON_TYPES]
    for row in rows:
        for name in json_columns:
            if row[name] is not None:
                row[name] = json.loads(row[name])
    return rows


def _drop_database(server_url: str, name: str) -> None:
    server = psycopg2.connect(server_url)
    server.autocommit = True
    with server.cursor() as cursor:
        cursor.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    server.close()


@contextmanager
def empty_database(server_url: str, name: str) -> Iterator[str]:
    """An empty database of its own on the tests' server; dropped afterwards, and first what an
    interrupted run left."""
    _drop_database(server_url, name)
    url = ensure_database(server_url, name)
    try:
        yield url
    finally:
        _drop_database(server_url, name)


@contextmanager
def demo_database(server_url: str, name: str, *, seed: int = 0) -> Iterator[str]:
    """A database of its own on the tests' server, with the demo's rows, for a test to change at
    will; dropped afterwards, and first what an interrupted run left."""
    with empty_database(server_url, name) as url:
        load_demo_data(url, datetime.now(UTC), seed=seed)
        yield url


@contextmanager
def utc_connection(url: str) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit connection whose days are UTC days, as the lake's."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    try:
        yield connection
    finally:
        connection.close()


def source_count(connection, table: TableSpec) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table.name)))
        return cursor.fetchone()[0]


def assert_checks_of_one_synced_day(
    checks: dict[str, Any], connection, table: TableSpec, synced_rows: int
) -> None:
    """The checks of a lake holding one day of ``table``: all pass, but for the reconciliation of
    a windowed table, which finds exactly the source's other rows missing, and nothing surviving."""
    assert set(checks) == set(check_names(table))
    failed = [name for name, check in checks.items() if not check.passed]
    assert set(failed) <= {KEYS_MATCH_SOURCE}, failed
    if KEYS_MATCH_SOURCE in checks:
        metadata = checks[KEYS_MATCH_SOURCE].metadata
        live = source_count(connection, table)
        assert metadata["live_keys"].value == live
        assert metadata["missing_keys"].value == live - synced_rows
        assert metadata["surviving_deleted_keys"].value == 0
        assert checks[KEYS_MATCH_SOURCE].severity.value == "WARN"


def by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in rows}


def window_for(table: TableSpec, partition: str) -> Window | None:
    return None if table.cursor_column is None else partition_window(partition)


def busiest_day(connection, table: TableSpec) -> str:
    """The UTC day holding most rows of an incremental or append table."""
    assert table.cursor_column is not None
    cursor_type = table.column(table.cursor_column).pg_type
    utc_day = "({} AT TIME ZONE 'UTC')::date" if "with time zone" in cursor_type else "{}::date"
    day = sql.SQL(utc_day)
    query = sql.SQL("SELECT {day} AS d FROM {table} GROUP BY d ORDER BY count(*) DESC, d LIMIT 1")
    with connection.cursor() as cursor:
        cursor.execute(
            query.format(
                day=day.format(sql.Identifier(table.cursor_column)),
                table=sql.Identifier(table.name),
            )
        )
        return cursor.fetchone()[0].isoformat()


class FaultyProxy:
    """An HTTP proxy on loopback in front of a real server (moto's or SeaweedFS's S3, moto's
    Secrets Manager) that answers 500 to the requests ``fails`` picks, passes every other request
    through unchanged, and records every request it receives in ``requests``."""

    class Request(NamedTuple):
        method: str
        path: str  # with its query string, as sent
        headers: dict[str, str]
        body: bytes | None  # kept up to BODY_KEPT bytes (API calls' JSON and XML), else None
        status: int  # the answer's HTTP status

    BODY_KEPT = 64 * 1024

    def __init__(self, upstream: str, fails: Callable[[str, str], bool] | None = None) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.fails = fails or (lambda method, path: False)
        self.failed: list[str] = []
        self.requests: list[FaultyProxy.Request] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                body = self._body()
                kept = body if len(body) <= proxy.BODY_KEPT else None

                def record(status: int) -> None:
                    proxy.requests.append(
                        FaultyProxy.Request(
                            self.command, self.path, dict(self.headers.items()), kept, status
                        )
                    )

                if proxy.fails(self.command, self.path):
                    record(500)
                    proxy.failed.append(f"{self.command} {self.path}")
                    error = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=60
                )
                headers = {
                    name: value
                    for name, value in self.headers.items()
                    if name.lower() != "transfer-encoding"
                }
                headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                record(response.status)
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(name, value)
                # A HEAD's answer has no body but tells the object's size, which readers use.
                length = response.getheader("Content-Length", "0")
                self.send_header(
                    "Content-Length", length if self.command == "HEAD" else str(len(payload))
                )
                self.end_headers()
                self.wfile.write(payload)
                upstream.close()

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class TlsEndpoint(NamedTuple):
    """The tests' database through TLS: its URL on 127.0.0.1, the CA that signed the endpoint's
    certificate, and another CA, a man in the middle's."""

    url: str
    ca: Path
    other_ca: Path


def instance_storage_variables(tls_server: TlsEndpoint, database: str) -> dict[str, str]:
    """The variables deploy/dagster.yaml reads its storage from, for a database of the tests'
    server reached through the TLS endpoint and verified against its CA ($PGSSLROOTCERT)."""
    through_tls = make_url(tls_server.url)
    return {
        "DAGSTER_PG_HOST": str(through_tls.host),
        "DAGSTER_PG_PORT": str(through_tls.port),
        "DAGSTER_PG_DB": database,
        "DAGSTER_PG_USERNAME": str(through_tls.username),
        "DAGSTER_PG_PASSWORD": through_tls.password or "",
        "PGSSLROOTCERT": str(tls_server.ca),
    }


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    """A query to dagster-webserver's GraphQL API, the UI's own; its data, errors failing."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


def wait_for_webserver(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"webserver did not start: {log.read_text()}") from None
            time.sleep(0.5)


class CertificateFiles(NamedTuple):
    ca: Path
    other_ca: Path
    server_certificate: Path
    server_key: Path


def write_test_certificates(directory: Path) -> CertificateFiles:
    """Two CAs of the tests' own, and a certificate for 127.0.0.1 and localhost signed by the
    first, as PEM files in ``directory``; valid from yesterday to tomorrow."""
    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("sqlgym test CA", ca_key, None, ca_key, ca=True)
    other = _certificate("someone else's CA", other_key, None, other_key, ca=True)
    server = _certificate("127.0.0.1", server_key, ca, ca_key, ca=False)
    files = CertificateFiles(
        directory / "ca.crt",
        directory / "other-ca.crt",
        directory / "server.crt",
        directory / "server.key",
    )
    files.ca.write_bytes(_pem(ca))
    files.other_ca.write_bytes(_pem(other))
    files.server_certificate.write_bytes(_pem(server))
    files.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


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
        # As libpq and real TLS terminators do: without it, each small message the relay
        # forwards waits for a delayed ACK (about 40 ms a round trip).
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
