"""Read access to the SQLGym database, with credentials from AWS Secrets Manager or a URL.

Every read is one REPEATABLE READ, READ ONLY transaction: the source's column types, the window's
row count and the extract itself describe the same instant.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import adbc_driver_manager
import adbc_driver_postgresql.dbapi
import botocore.exceptions
import pyarrow as pa
import sqlalchemy as sa
from dagster import ConfigurableResource
from dagster_aws.secretsmanager import SecretsManagerResource
from pydantic import Field

from sqlgym_assets.aws import region_from_environment
from sqlgym_assets.catalog import TableSpec
from sqlgym_assets.extraction import (
    SET_WINDOW_SQL,
    SOURCE_COLUMNS_SQL,
    SourceColumn,
    Window,
    plan_extract,
    prefetch_batches,
    window_parameters,
)

SECRET_ID_ENV = "SQLGYM_DB_SECRET_ID"
DATABASE_URL_ENV = "SQLGYM_DATABASE_URL"
SECRET_KEYS = ("host", "port", "database", "username", "password")
LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})

_BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_BATCH_SIZE_HINT_OPTION = "adbc.postgresql.batch_size_hint_bytes"
# The driver's own table of PostgreSQL's built-in types, instead of reading pg_type and every
# column of pg_attribute at each connect: 51 ms -> 7 ms per connection on the bench's server. The
# extract selects only built-in types: the others are cast to text (extraction.plan_column).
_DRIVER_OPTIONS = {"adbc.postgresql.type_resolver_mode": "builtin"}


class DatabaseConfigurationError(RuntimeError):
    """The credentials could not be found or read. Never carries a credential's value."""


class DatabaseConnectionError(ConnectionError):
    """The database refused or dropped the connection; worth another try. Never carries a
    credential's value."""


@dataclass(frozen=True, repr=False)
class ConnectionSettings:
    """A libpq URI and where it came from; repr-free so it never lands in a log."""

    uri: str = field(repr=False)
    origin: str  # "secret 'name'" or the environment variable: safe to show
    sensitive: tuple[str, ...] = field(repr=False)  # values to scrub from driver messages

    def redact(self, text: str) -> str:
        for value in sorted(self.sensitive, key=len, reverse=True):
            if value:
                text = text.replace(value, "***")
        return text


class _DropSecretBodies(logging.Filter):
    """botocore logs every response body at DEBUG, GetSecretValue's included: drop those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SecretString" not in record.getMessage()


_SECRET_BODY_FILTER = _DropSecretBodies()


def _keep_secret_bodies_out_of_logs() -> None:
    for name in ("botocore.parsers", "botocore.endpoint"):
        logger = logging.getLogger(name)
        if _SECRET_BODY_FILTER not in logger.filters:
            logger.addFilter(_SECRET_BODY_FILTER)


_secret_cache: dict[tuple[str, str | None, str | None], ConnectionSettings] = {}
_secret_cache_lock = threading.Lock()


def _is_local(host: str | None) -> bool:
    return host is None or host in LOCAL_HOSTS or host.startswith("/")


def settings_from_secret(secret_id: str, secret_string: str) -> ConnectionSettings:
    origin = f"secret {secret_id!r}"
    try:
        values = json.loads(secret_string)
    except ValueError:
        values = None
    if not isinstance(values, dict):
        raise DatabaseConfigurationError(
            f"AWS Secrets Manager {origin} is not a JSON object; it must hold the keys "
            f"{list(SECRET_KEYS)} (optional 'sslmode')"
        ) from None
    missing = [key for key in SECRET_KEYS if values.get(key) in (None, "")]
    if missing:
        raise DatabaseConfigurationError(
            f"AWS Secrets Manager {origin} lacks the key(s) {missing}; it must hold "
            f"{list(SECRET_KEYS)} (optional 'sslmode')"
        )
    try:
        port = int(values["port"])
    except (TypeError, ValueError):
        raise DatabaseConfigurationError(
            f"AWS Secrets Manager {origin}: key 'port' is not a whole number"
        ) from None
    host = str(values["host"])
    query = {"sslmode": str(values.get("sslmode") or ("prefer" if _is_local(host) else "require"))}
    if host.startswith("/"):
        # A socket directory: libpq takes it only as the host query parameter.
        query["host"] = host
    url = sa.engine.URL.create(
        "postgresql",
        username=str(values["username"]),
        password=str(values["password"]),
        host=None if host.startswith("/") else host,
        port=port,
        database=str(values["database"]),
        query=query,
    )
    uri = url.render_as_string(hide_password=False)
    sensitive = (str(values["password"]), quote(str(values["password"]), safe=""), uri)
    return ConnectionSettings(uri=uri, origin=origin, sensitive=sensitive)


def settings_from_url(url: str) -> ConnectionSettings:
    origin = f"environment variable {DATABASE_URL_ENV}"
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseConfigurationError(
            f"{origin} is not a PostgreSQL URL; use postgresql://user:password@host:port/database"
        ) from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise DatabaseConfigurationError(
            f"{origin} names a {parsed.get_backend_name()!r} database; use postgresql://..."
        )
    query = dict(parsed.query)
    if "sslmode" not in query and not _is_local(parsed.host or query.get("host")):
        query["sslmode"] = "require"
    parsed = parsed.set(drivername="postgresql", query=query)
    uri = parsed.render_as_string(hide_password=False)
    password = parsed.password or ""
    return ConnectionSettings(
        uri=uri, origin=origin, sensitive=(str(password), quote(str(password), safe=""), url, uri)
    )


@dataclass
class PartitionExtract:
    """A partition being read: its source count and a stream of Arrow batches, same snapshot."""

    table: TableSpec
    window: Window | None  # None for a snapshot table: the whole table
    source_row_count: int
    null_cursor_rows: int  # rows whose cursor is NULL and so belong to no day
    read_at: datetime  # the snapshot's instant (transaction start)
    source_columns: list[SourceColumn]  # every column the source has now, listed or not
    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self.batches)


class PostgresResource(ConfigurableResource):
    """The SQLGym PostgreSQL database, read-only.

    Credentials come from the AWS Secrets Manager secret named by ``secret_id`` (default: the
    ``SQLGYM_DB_SECRET_ID`` environment variable), else from the ``SQLGYM_DATABASE_URL``
    environment variable, read when a run starts. The URL is deliberately not a config field, so
    a password in it never shows in the Dagster UI.
    """

    secret_id: str | None = Field(
        default=None,
        description=f"Secrets Manager secret name or ARN; defaults to ${SECRET_ID_ENV}.",
    )
    source_schema: str = Field(default="public", description="PostgreSQL schema of the tables.")
    batch_size_hint_bytes: int = Field(
        # 8 MB: as fast as 16 MB in interleaved runs, with 35-55 MB less peak memory.
        default=8 * 1024 * 1024,
        description="Target size of one Arrow record batch (one Parquet row group); bounds "
        "the extract's memory.",
    )
    secretsmanager: SecretsManagerResource = Field(
        default_factory=SecretsManagerResource,
        description="Secrets Manager client settings (region, endpoint_url, ...).",
    )

    def connection_settings(self) -> ConnectionSettings:
        secret_id = self.secret_id or os.environ.get(SECRET_ID_ENV)
        if secret_id:
            return self._settings_from_secret_manager(secret_id)
        url = os.environ.get(DATABASE_URL_ENV)
        if url:
            return settings_from_url(url)
        raise DatabaseConfigurationError(
            f"no database configured: set {SECRET_ID_ENV} to an AWS Secrets Manager secret "
            f"holding {list(SECRET_KEYS)}, or {DATABASE_URL_ENV} to a postgresql:// URL"
        )

    def _settings_from_secret_manager(self, secret_id: str) -> ConnectionSettings:
        secrets = self.secretsmanager
        region = secrets.region_name or region_from_environment()
        cache_key = (secret_id, region, secrets.endpoint_url)
        with _secret_cache_lock:
            if cache_key in _secret_cache:
                return _secret_cache[cache_key]
            _keep_secret_bodies_out_of_logs()
            if region != secrets.region_name:
                secrets = secrets.model_copy(update={"region_name": region})
            try:
                response = secrets.get_client().get_secret_value(SecretId=secret_id)
            except botocore.exceptions.ClientError as error:
                code = error.response.get("Error", {}).get("Code", "error")
                raise DatabaseConfigurationError(
                    f"AWS Secrets Manager could not return secret {secret_id!r} ({code}); check "
                    f"{SECRET_ID_ENV}, the region ({region or 'unset'}) and this role's "
                    "secretsmanager:GetSecretValue permission"
                ) from None
            except botocore.exceptions.BotoCoreError as error:
                raise DatabaseConfigurationError(
                    f"AWS Secrets Manager could not be reached for secret {secret_id!r} "
                    f"({type(error).__name__}); set AWS_REGION and credentials"
                ) from None
            if "SecretString" not in response:
                raise DatabaseConfigurationError(
                    f"AWS Secrets Manager secret {secret_id!r} holds binary data; store the "
                    f"credentials as a JSON string with {list(SECRET_KEYS)}"
                )
            settings = settings_from_secret(secret_id, response["SecretString"])
            _secret_cache[cache_key] = settings
            return settings

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """An ADBC connection in autocommit mode; transactions are opened explicitly."""
        settings = self.connection_settings()
        try:
            connection = adbc_driver_postgresql.dbapi.connect(
                settings.uri, db_kwargs=_DRIVER_OPTIONS, autocommit=True
            )
        except adbc_driver_manager.Error as error:
            raise DatabaseConnectionError(
                f"could not connect to PostgreSQL with the credentials from {settings.origin}: "
                f"{settings.redact(str(error)).strip()}"
            ) from None
        try:
            yield connection
        finally:
            connection.close()

    def _read_source_columns(self, cursor: Any, table: TableSpec) -> list[SourceColumn]:
        cursor.execute(SOURCE_COLUMNS_SQL, parameters=(self.source_schema, table.name))
        return [SourceColumn.from_row(row) for row in cursor.fetchall()]

    def source_columns(self, table: TableSpec) -> list[SourceColumn]:
        """The source table's columns as they are now (empty if the table is missing)."""
        with self.connect() as connection:
            return self._read_source_columns(connection.cursor(), table)

    @contextmanager
    def read_partition(self, table: TableSpec, window: Window | None) -> Iterator[PartitionExtract]:
        """Opens one read-only snapshot and yields the partition's count and batch stream.

        The stream must be consumed inside the ``with`` block: leaving it ends the transaction.
        """
        with self.connect() as connection:
            cursor = connection.cursor()
            cursor.adbc_statement.set_options(
                **{_BATCH_SIZE_HINT_OPTION: str(self.batch_size_hint_bytes)}
            )
            cursor.execute(_BEGIN_SNAPSHOT)
            source_columns = self._read_source_columns(cursor, table)
            plan = plan_extract(table, source_columns, self.source_schema)
            if window is not None:
                cursor.execute(SET_WINDOW_SQL, parameters=window_parameters(window))
                cursor.fetchall()
            cursor.execute("SELECT now()")
            (read_at,) = cursor.fetchone()
            cursor.execute(plan.count_sql)
            (source_row_count,) = cursor.fetchone()
            null_cursor_rows = 0
            if plan.null_cursor_count_sql is not None:
                cursor.execute(plan.null_cursor_count_sql)
                (null_cursor_rows,) = cursor.fetchone()
            cursor.execute(plan.select_sql)
            reader = cursor.fetch_record_batch()
            batches = prefetch_batches(reader, plan.arrow_schema)
            try:
                yield PartitionExtract(
                    table=table,
                    window=window,
                    source_row_count=int(source_row_count),
                    null_cursor_rows=int(null_cursor_rows),
                    read_at=read_at.astimezone(UTC),
                    source_columns=source_columns,
                    schema=plan.arrow_schema,
                    batches=batches,
                )
            finally:
                batches.close()
