"""Real parts for every test: a PostgreSQL server loaded with the demo data, a TLS endpoint in
front of it, and moto's server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from sqlgym_assets.demo.data import load_demo_data
from sqlgym_assets.demo.embedded_postgres import (
    ensure_database,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from sqlgym_assets.source.pseudonymize import KEY_ENV, KEY_SECRET_ENV, PERSONAL_DATA_ENV
from sqlgym_assets_tests.helpers import (
    TEST_PSEUDONYMIZATION_KEY,
    TlsEndpoint,
    TlsTerminatingProxy,
    point_project_at,
    write_test_certificates,
)

TEST_DATABASE_URL_ENV = "SQLGYM_TEST_DATABASE_URL"
_TEST_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# Tests take about 4 s each here; 10 s, and 2 minutes more, bounds a session with room to spare.
SESSION_LENGTH_PER_TEST = timedelta(seconds=10)
SESSION_LENGTH_FLOOR = timedelta(minutes=2)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A session that could straddle midnight UTC starts just after it instead.

    The tests read "today" from the clock at different moments (seeding the demo's rows,
    choosing a partition, a snapshot step checking it runs on its own day): a day ending in
    between would have them compare different days."""
    if session.config.option.collectonly or not session.items:
        return
    length = SESSION_LENGTH_FLOOR + len(session.items) * SESSION_LENGTH_PER_TEST
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    if midnight - now < length:
        wait = (midnight - now).total_seconds() + 5
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"waiting {wait:.0f} s for 00:00 UTC: these {len(session.items)} tests could "
            "otherwise see the UTC day change while they run"
        )
        time.sleep(wait)


@pytest.fixture(autouse=True)
def pseudonymization_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """Personal data is pseudonymized by default: every test runs with a key, as a lake must."""
    monkeypatch.delenv(KEY_SECRET_ENV, raising=False)
    monkeypatch.delenv(PERSONAL_DATA_ENV, raising=False)
    monkeypatch.setenv(KEY_ENV, TEST_PSEUDONYMIZATION_KEY)
    return TEST_PSEUDONYMIZATION_KEY


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database holding the SQLGym schema and the demo data, loaded once per session."""
    url = os.environ.get(TEST_DATABASE_URL_ENV)
    if url:
        load_demo_data(url, datetime.now(UTC))
        yield url
        return
    root = Path(tempfile.mkdtemp(prefix="sqlgym-test-pg-"))
    try:
        server_url = start_embedded_postgres(root / "pgdata", keep_running=False)
        url = ensure_database(server_url, "sqlgym_test")
        load_demo_data(url, datetime.now(UTC))
        yield url
    finally:
        stop_embedded_postgres(root / "pgdata")
        shutil.rmtree(root, ignore_errors=True)  # about 50 MB a session otherwise


@pytest.fixture(scope="session")
def tls_server(database_url: str) -> Iterator[TlsEndpoint]:
    """The test database through a TLS endpoint on 127.0.0.1 whose certificate the tests' own CA
    signed; the server's other databases are reached through it by the URL's database name."""
    url = make_url(database_url)
    host = url.query.get("host") or url.host
    if not str(host).startswith("/"):
        pytest.skip("the TLS endpoint relays to the test server's Unix socket")
    root = Path(tempfile.mkdtemp(prefix="sqlgym-test-tls-"))
    certificates = write_test_certificates(root)
    proxy = TlsTerminatingProxy(
        f"{host}/.s.PGSQL.{url.port or 5432}",
        certificates.server_certificate,
        certificates.server_key,
    )
    try:
        through_tls = url.set(host="127.0.0.1", port=proxy.port, query={})
        yield TlsEndpoint(
            through_tls.render_as_string(hide_password=False),
            certificates.ca,
            certificates.other_ca,
        )
    finally:
        proxy.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """An autocommit psycopg2 connection: the tests' independent view of the source."""
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def source_env(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> Path:
    """Points the project at the test database and a fresh local lake; returns the lake."""
    return point_project_at(monkeypatch, database_url, tmp_path / "lake")


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode: S3 and Secrets Manager over real HTTP on loopback."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> str:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return moto_endpoint


@pytest.fixture(scope="session")
def seaweedfs_endpoint() -> Iterator[str]:
    """A real S3 server (SeaweedFS's `weed mini`) on loopback: it honours SSE headers, multipart
    uploads and conditional writes as S3 does, where moto accepts what S3 servers refuse."""
    root = Path(tempfile.mkdtemp(prefix="sqlgym-test-s3-"))
    ports = {name: _free_port() for name in ("s3", "master", "volume", "filer")}
    grpc = {f"{name}.port.grpc": _free_port() for name in ("master", "volume", "filer")}
    command = [
        str(Path(sys.executable).parent / "weed"),
        f"-logdir={root}",  # its logs, not /tmp/weed.*
        "mini",
        f"-dir={root}",
        # Its sockets, not /tmp/seaweedfs-*.sock, which outlive the server.
        f"-s3.localSocket={root / 's3.sock'}",
        f"-filer.localSocket={root / 'filer.sock'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-admin.ui=false",
        # Not needed, and its chunk cache is a new folder under /tmp at every start, never removed.
        "-webdav=false",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}={port}" for name, port in grpc.items()),
    ]
    with open(root / "weed.log", "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        _wait_for_s3(endpoint, server, root / "weed.log")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_s3(endpoint: str, server: subprocess.Popen, log: Path) -> None:
    import boto3
    import botocore.exceptions

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_TEST_KEYS)
    deadline = time.monotonic() + 90
    while True:
        try:
            client.list_buckets()
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            if server.poll() is not None or time.monotonic() > deadline:
                output = log.read_text()[-3000:]
                raise AssertionError(f"weed mini did not start: {output}") from None
            time.sleep(0.3)


@pytest.fixture
def s3_server_env(aws_env: str, seaweedfs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """S3 on SeaweedFS, Secrets Manager, SNS and KMS on moto; returns the S3 endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs_endpoint)
    return seaweedfs_endpoint
