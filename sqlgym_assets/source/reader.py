"""The SQLGym database, read-only: one REPEATABLE READ snapshot per partition, streamed as Arrow.

In one snapshot the source's column types, the window's row count and the extract itself are
read, so all three describe the same instant. The extract is a stream that can be read only while
its transaction is open: closing the stream ends the transaction, and the lake's writer closes it
the moment the file is written (or the write fails). The transaction therefore spans exactly the
write, whatever runs the writer, and a stream read after its transaction ended raises
``StreamClosedError`` instead of returning a partial or empty file.
"""

from __future__ import annotations

import queue
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi
import pyarrow as pa
from dagster import BetaWarning, ConfigurableResource
from dagster_aws.secretsmanager import SecretsManagerResource
from pydantic import Field

from sqlgym_assets.catalog import TableSpec
from sqlgym_assets.source.arrow_types import SourceColumn, conform_batch
from sqlgym_assets.source.credentials import (
    ConnectionSettings,
    DatabaseConfigurationError,
    connection_settings,
)
from sqlgym_assets.source.plan import (
    SET_WINDOW_SQL,
    SOURCE_COLUMNS_SQL,
    ContractDrift,
    ExtractPlan,
    Window,
    key_schema,
    plan_extract,
    window_parameters,
)
from sqlgym_assets.source.pseudonymize import pseudonymizer

# SecretsManagerResource is the Secrets Manager client the product names (dagster-aws); it is
# marked beta, and Dagster re-creates it at every run, so its one notice would repeat on every
# CLI line. Only that notice is ignored.
warnings.filterwarnings(
    "ignore", message="Class `SecretsManagerResource` is currently in beta", category=BetaWarning
)

_BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_BATCH_SIZE_HINT_OPTION = "adbc.postgresql.batch_size_hint_bytes"
# The driver's own table of PostgreSQL's built-in types, instead of reading pg_type and every
# column of pg_attribute at each connect: 51 ms -> 7 ms per connection on the bench's server. The
# extract selects only built-in types: the others are cast to text (arrow_types.plan_column).
_DRIVER_OPTIONS = {"adbc.postgresql.type_resolver_mode": "builtin"}


class DatabaseConnectionError(ConnectionError):
    """The database refused or dropped the connection; worth another try. Never carries a
    credential's value."""


class DatabaseLoginRefusedError(DatabaseConfigurationError):
    """The login cannot succeed: the server refused it (wrong password, unknown user or database,
    no CONNECT privilege) or its certificate failed verification. Another try would fail the same
    way (and may lock the account)."""


# libpq reports a refused login without its SQLSTATE; these are PostgreSQL's own FATAL messages
# for 28P01 (invalid_password), 28000 (invalid_authorization_specification), 3D000 and 42501, and
# libpq's own when the server's certificate fails verification (sslmode verify-ca/verify-full).
_LOGIN_THAT_CANNOT_SUCCEED = re.compile(
    r"password authentication failed|authentication failed for user|role \".*\" does not exist"
    r"|no pg_hba\.conf entry|database \".*\" does not exist|permission denied for database"
    r"|certificate verify failed|server certificate for \".*\" does not match"
    r"|root certificate file \".*\" does not exist"
)


class DatabaseTimeoutError(TimeoutError):
    """A read waited longer for a lock, or ran longer, than the resource allows; worth a retry."""


_TIMEOUT_SQLSTATES = {"55P03": "lock timeout", "57014": "statement timeout"}
# After BEGIN: the snapshot's instant, its backend, and its timeouts (transaction-local).
_START_SNAPSHOT_SQL = (
    "SELECT now(), pg_backend_pid(), "
    "set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)"
)


class StreamClosedError(RuntimeError):
    """A partition's stream was read after its snapshot transaction had ended."""


class PartitionStream:
    """One pass over a partition's record batches, readable only inside its snapshot transaction.

    ``close`` ends the transaction at once (a partly read COPY is abandoned with its connection).
    """

    def __init__(
        self,
        table: TableSpec,
        schema: pa.Schema,
        batches: Iterator[pa.RecordBatch],
        end_transaction: Callable[[], None],
    ) -> None:
        self.table = table
        self.schema = schema
        self._batches = batches
        self._end_transaction = end_transaction
        self.closed = False

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        if self.closed:
            raise StreamClosedError(
                f"the rows of {self.table.name} were read after their snapshot transaction had "
                "ended: write the stream while its snapshot is open (inside "
                "PostgresResource.snapshot)"
            )
        return next(self._batches)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._batches.close()  # stops the fetching thread before its connection goes
        finally:
            self._end_transaction()


@dataclass
class PartitionSnapshot:
    """A partition read in one snapshot: its source counts and the stream of its rows."""

    table: TableSpec
    window: Window | None  # None for a snapshot table: the whole table
    source_row_count: int
    null_cursor_rows: int  # rows whose cursor is NULL and so belong to no day
    read_at: datetime  # the snapshot's instant (transaction start)
    backend_pid: int  # the PostgreSQL backend holding the transaction
    drift: ContractDrift  # how the live table differs from the catalog, what was converted
    pseudonymized: tuple[str, ...]  # personal columns replaced by their keyed hashes
    live_keys: pa.Table | None  # a windowed table's whole key set, in key order
    stream: PartitionStream


class PostgresResource(ConfigurableResource):
    """The SQLGym PostgreSQL database, read-only.

    Credentials come from the AWS Secrets Manager secret named by ``secret_id`` (default: the
    ``SQLGYM_DB_SECRET_ID`` environment variable), else from the ``SQLGYM_DATABASE_URL``
    environment variable, read when a run starts (see ``credentials.connection_settings``).
    """

    secret_id: str | None = Field(
        default=None,
        description="Secrets Manager secret name or ARN; defaults to $SQLGYM_DB_SECRET_ID.",
    )
    source_schema: str = Field(default="public", description="PostgreSQL schema of the tables.")
    batch_size_hint_bytes: int = Field(
        # 8 MB: as fast as 16 MB in interleaved runs, with 35-55 MB less peak memory.
        default=8 * 1024 * 1024,
        description="Target size of one Arrow record batch (one Parquet row group); bounds "
        "the extract's memory.",
    )
    sslrootcert: str | None = Field(
        default=None,
        description="CA bundle that verifies the server's certificate, for sslmode=verify-full "
        "(on AWS the RDS global bundle); a secret's or URL's own sslrootcert wins.",
    )
    lock_timeout_seconds: float = Field(
        default=60,
        description="How long a read waits for a lock (behind a migration's ACCESS EXCLUSIVE "
        "lock, say) before it gives up and is retried; 0 waits forever.",
    )
    statement_timeout_seconds: float = Field(
        default=30 * 60,
        description="The longest one statement of a read may run, the extract's COPY included; "
        "0 for no limit.",
    )
    secretsmanager: SecretsManagerResource = Field(
        default_factory=SecretsManagerResource,
        description="Secrets Manager client settings (region, endpoint_url, ...).",
    )

    def _timeouts(self) -> tuple[str, str]:
        return (
            f"{round(self.lock_timeout_seconds * 1000)}ms",
            f"{round(self.statement_timeout_seconds * 1000)}ms",
        )

    @contextmanager
    def _explained_timeouts(self, table: TableSpec) -> Iterator[None]:
        try:
            yield
        except adbc_driver_manager.Error as error:
            if error.sqlstate not in _TIMEOUT_SQLSTATES:
                raise
            limits = (
                f"lock_timeout {self.lock_timeout_seconds} s, "
                f"statement_timeout {self.statement_timeout_seconds} s"
            )
            raise DatabaseTimeoutError(
                f"reading {self.source_schema}.{table.name} (asset sqlgym/{table.name}) hit the "
                f"{_TIMEOUT_SQLSTATES[error.sqlstate]} ({limits}): another session held the "
                "table, or the database was slow. The step is retried; if it keeps failing, look "
                "for a long migration or lock in pg_stat_activity"
            ) from error

    def connection_settings(self) -> ConnectionSettings:
        settings = connection_settings(self.secret_id, self.secretsmanager)
        return settings.with_default(sslrootcert=self.sslrootcert) if self.sslrootcert else settings

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """An ADBC connection in autocommit mode; transactions are opened explicitly."""
        settings = self.connection_settings()
        try:
            connection = adbc_driver_postgresql.dbapi.connect(
                settings.uri, db_kwargs=_DRIVER_OPTIONS, autocommit=True
            )
        except adbc_driver_manager.Error as error:
            message = settings.redact(str(error)).strip()
            if _LOGIN_THAT_CANNOT_SUCCEED.search(message):
                raise DatabaseLoginRefusedError(
                    f"PostgreSQL refused the login with the credentials from {settings.origin}: "
                    f"{message}. Check the user, its password, the database name, the user's "
                    "CONNECT privilege and, with sslmode verify-full, the CA bundle (sslrootcert) "
                    "and the host name; retrying cannot help"
                ) from None
            raise DatabaseConnectionError(
                f"could not connect to PostgreSQL with the credentials from {settings.origin}: "
                f"{message}"
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

    def _read_key_set(self, cursor: Any, plan: ExtractPlan) -> pa.Table | None:
        if plan.key_set_sql is None:
            return None
        cursor.execute(plan.key_set_sql)
        keys = cursor.fetch_arrow_table()
        schema = key_schema(plan.table)
        return pa.Table.from_batches(
            [conform_batch(batch, schema) for batch in keys.to_batches()], schema=schema
        )

    def live_keys(self, table: TableSpec) -> pa.Table:
        """A windowed table's live key set, in a read-only snapshot of its own."""
        with self.connect() as connection:
            cursor = connection.cursor()
            cursor.execute(_BEGIN_SNAPSHOT)
            cursor.execute(_START_SNAPSHOT_SQL, parameters=self._timeouts())
            cursor.fetchone()
            with self._explained_timeouts(table):
                plan = plan_extract(
                    table, self._read_source_columns(cursor, table), self.source_schema
                )
                keys = self._read_key_set(cursor, plan)
        if keys is None:
            raise ValueError(f"{table.name} is a snapshot table: it has no key set")
        return keys

    @contextmanager
    def snapshot(self, table: TableSpec, window: Window | None) -> Iterator[PartitionSnapshot]:
        """Opens one read-only snapshot of the partition: its counts, then its row stream.

        The transaction ends when the stream is closed, or at the latest when this block ends.
        """
        hasher = pseudonymizer(table, self.secretsmanager)  # a missing key fails before connecting
        with self.connect() as connection:
            cursor = connection.cursor()
            cursor.adbc_statement.set_options(
                **{_BATCH_SIZE_HINT_OPTION: str(self.batch_size_hint_bytes)}
            )
            cursor.execute(_BEGIN_SNAPSHOT)
            cursor.execute(_START_SNAPSHOT_SQL, parameters=self._timeouts())
            read_at, backend_pid, *_ = cursor.fetchone()
            with self._explained_timeouts(table):
                source_columns = self._read_source_columns(cursor, table)
                plan = plan_extract(table, source_columns, self.source_schema)
                if window is not None:
                    cursor.execute(SET_WINDOW_SQL, parameters=window_parameters(window))
                    cursor.fetchall()
                cursor.execute(plan.count_sql)
                (source_row_count,) = cursor.fetchone()
                null_cursor_rows = 0
                if plan.null_cursor_count_sql is not None:
                    cursor.execute(plan.null_cursor_count_sql)
                    (null_cursor_rows,) = cursor.fetchone()
                live_keys = self._read_key_set(cursor, plan)
                cursor.execute(plan.select_sql)

            def prepare(batch: pa.RecordBatch) -> pa.RecordBatch:
                conformed = conform_batch(batch, plan.arrow_schema)
                return conformed if hasher is None else hasher.apply(conformed)

            stream = PartitionStream(
                table,
                plan.arrow_schema,
                prefetch_batches(cursor.fetch_record_batch(), prepare),
                end_transaction=connection.close,
            )
            try:
                yield PartitionSnapshot(
                    table=table,
                    window=window,
                    source_row_count=int(source_row_count),
                    null_cursor_rows=int(null_cursor_rows),
                    read_at=read_at.astimezone(UTC),
                    backend_pid=int(backend_pid),
                    drift=plan.drift,
                    pseudonymized=() if hasher is None else hasher.columns,
                    live_keys=live_keys,
                    stream=stream,
                )
            finally:
                stream.close()


_END = object()


def prefetch_batches(
    reader: pa.RecordBatchReader,
    prepare: Callable[[pa.RecordBatch], pa.RecordBatch],
    depth: int = 2,
) -> Iterator[pa.RecordBatch]:
    """Yields prepared batches while a thread already fetches and prepares the next ones.

    Fetching (the driver decoding COPY data) and the consumer's Parquet encoding both release the
    GIL, so overlapping them uses both cores; ``depth`` bounds the batches held in memory.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def fetch() -> None:
        try:
            for batch in reader:
                item = prepare(batch)
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as error:  # handed to the consumer, which re-raises it
            ready.put(error)

    fetcher = threading.Thread(target=fetch, name="sqlgym-fetch", daemon=True)
    fetcher.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while fetcher.is_alive():
            try:
                ready.get(timeout=0.1)
            except queue.Empty:
                pass
        fetcher.join()
