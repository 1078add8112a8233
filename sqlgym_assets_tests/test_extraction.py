"""Type mapping beyond SQLGym's own types, NULL cursors, and failures in the middle of a stream.

These use tables of their own in a separate PostgreSQL schema, read through the real asset
factory, resource and IO manager with a catalog entry made for them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import boto3
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, RetryPolicy
from psycopg2 import sql

from sqlgym_assets.catalog import Column, SyncMode, TableSpec
from sqlgym_assets.lake import writer
from sqlgym_assets.lake.io_manager import ParquetLakeIOManager
from sqlgym_assets.lake.layout import LakeSettings, lake_settings, partition_uri
from sqlgym_assets.lake.writer import write_partition
from sqlgym_assets.source.reader import PostgresResource, StreamClosedError
from sqlgym_assets_tests.helpers import (
    FaultyProxy,
    failed_once,
    lake_file,
    materialize_tables,
    today,
)

PROBE_SCHEMA = "sqlgym_probe"
PROBE = sql.Identifier(PROBE_SCHEMA)

KINDS = TableSpec(
    name="kinds",
    description="Every column type the mapping covers.",
    group="system",
    sync_mode=SyncMode.INCREMENTAL,
    cursor_column="changed_at",
    priority=4,
    primary_key=("id", "changed_at"),  # compound, to exercise the compound uniqueness check
    columns=(
        Column("id", "character varying", required=True),
        Column("amount", "numeric(10,2)"),
        Column("ratio", "numeric"),
        Column("big", "bigint"),
        Column("small", "smallint"),
        Column("real_value", "real"),
        Column("day", "date"),
        Column("labels", "text[]", required=True),
        Column("scores", "integer[]"),
        Column("token", "uuid"),
        Column("doc", "jsonb", required=True),
        Column("mood", "sqlgym_probe.mood"),
        Column("changed_at", "timestamp without time zone"),
        Column("prices", "numeric(6,2)[]"),
        Column("ratios", "numeric[]"),
        Column("tokens", "uuid[]"),
        Column("moods", "sqlgym_probe.mood[]"),
    ),
)
EXPECTED_TYPES = {
    "id": pa.string(),
    "amount": pa.decimal128(10, 2),
    "ratio": pa.string(),
    "big": pa.int64(),
    "small": pa.int16(),
    "real_value": pa.float32(),
    "day": pa.date32(),
    "labels": pa.list_(pa.string()),
    "scores": pa.list_(pa.int32()),
    "token": pa.string(),
    "doc": pa.string(),
    "mood": pa.string(),
    "changed_at": pa.timestamp("us"),
    "prices": pa.list_(pa.decimal128(6, 2)),
    "ratios": pa.list_(pa.string()),
    "tokens": pa.list_(pa.string()),
    "moods": pa.list_(pa.string()),
}
STREAM = TableSpec(
    name="stream",
    description="A view whose rows can be made to fail part-way through.",
    group="system",
    sync_mode=SyncMode.SNAPSHOT,
    priority=4,
    columns=(Column("id", "text", required=True), Column("payload", "text")),
)
STREAM_ROWS = 40_000


@pytest.fixture(scope="module")
def probe_schema(database_url: str) -> Iterator[None]:
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(PROBE))
        cursor.execute(sql.SQL("CREATE SCHEMA {}").format(PROBE))
        cursor.execute(sql.SQL("SET search_path = {}").format(PROBE))
        cursor.execute("CREATE TYPE mood AS ENUM ('calm', 'busy')")
        cursor.execute("CREATE TABLE stall_once (flag boolean)")
        cursor.execute(
            """
            CREATE TABLE kinds (
                id varchar PRIMARY KEY, amount numeric(10,2), ratio numeric, big bigint,
                small smallint, real_value real, day date, labels text[] NOT NULL,
                scores integer[], token uuid, doc jsonb NOT NULL, mood mood, changed_at timestamp,
                prices numeric(6,2)[], ratios numeric[], tokens uuid[], moods mood[]
            )
            """
        )
        cursor.execute(
            """
            INSERT INTO kinds VALUES
            ('full', 12345678.91, 3.14159265358979, 9007199254740993, -32768, 1.5,
             '2025-03-10', ARRAY['a', 'ü', NULL], ARRAY[1, NULL, 3],
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"nested": {"list": [1, "two", null]}}',
             'busy', '2025-03-10 08:00', '{1.50,NULL,-0.01}', '{2.718281828,1e-20}',
             '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{busy,calm}'),
            ('empty', NULL, NULL, NULL, NULL, NULL, NULL, '{}', NULL, NULL, '{}', NULL,
             '2025-03-10 09:00', NULL, '{}', NULL, NULL),
            ('nowhere', -0.01, 0, 0, 0, 0, NULL, '{x}', NULL, NULL, '[]', 'calm', NULL, NULL,
             NULL, NULL, NULL)
            """
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(PROBE))
    connection.close()


def _probe_reader(**options: object) -> PostgresResource:
    return PostgresResource(source_schema=PROBE_SCHEMA, **options)


def test_every_source_type_lands_as_its_arrow_type_with_exact_values(
    probe_schema, db, source_env
) -> None:
    result = materialize_tables([KINDS], "2025-03-10", postgres=_probe_reader())

    table = pq.read_table(lake_file(source_env, "kinds", "2025-03-10"))
    assert {field.name: field.type for field in table.schema} == EXPECTED_TYPES
    rows = {row["id"]: row for row in table.to_pylist()}
    assert set(rows) == {"full", "empty"}
    full, empty = rows["full"], rows["empty"]
    assert full["amount"] == Decimal("12345678.91")
    assert full["ratio"] == "3.14159265358979"
    assert full["big"] == 9007199254740993
    assert full["small"] == -32768
    assert full["labels"] == ["a", "ü", None]
    assert full["scores"] == [1, None, 3]
    assert full["token"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert full["doc"] == '{"nested": {"list": [1, "two", null]}}'
    assert full["mood"] == "busy"
    assert full["changed_at"] == datetime(2025, 3, 10, 8, 0)
    assert full["prices"] == [Decimal("1.50"), None, Decimal("-0.01")]
    assert full["ratios"] == ["2.718281828", "0.00000000000000000001"]  # as PostgreSQL prints
    assert full["tokens"] == ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]
    assert full["moods"] == ["busy", "calm"]
    assert empty["ratios"] == []
    assert empty["labels"] == []
    assert empty["doc"] == "{}"
    assert all(
        empty[name] is None for name in ("amount", "big", "scores", "mood", "prices", "tokens")
    )
    (materialization,) = result.asset_materializations_for_node("sqlgym__kinds")
    assert materialization.metadata["sqlgym/null_cursor_rows"].value == 1
    # Decimal, list and JSON columns must not trip any check (the old validator's defect 8).
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert {name: check.passed for name, check in checks.items()} == {
        "row_count_matches_source": True,
        "no_null_required_columns": True,
        "no_duplicate_primary_keys": True,
        "schema_matches_source": True,
        # The row whose cursor is NULL belongs to no day, so the lake cannot hold it.
        "keys_match_source": False,
    }
    missing = checks["keys_match_source"].metadata["missing_examples"].value
    assert missing == ["id=nowhere, changed_at=None"]


def _with_ghost(column: Column) -> TableSpec:
    """The kinds table as a catalog that lists one more column than the source has."""
    return TableSpec(
        name="kinds",
        description="Lists a column the source lacks.",
        group="system",
        sync_mode=SyncMode.SNAPSHOT,
        priority=4,
        columns=(*KINDS.columns, column),
    )


def test_a_required_catalog_column_missing_from_the_source_fails_once_naming_it(
    probe_schema, source_env
) -> None:
    ghost = _with_ghost(Column("ghost", "text", required=True))
    result = materialize_tables(
        [ghost],
        today(),
        postgres=_probe_reader(),
        raise_on_error=False,
        retry_policy=RetryPolicy(max_retries=2, delay=0.1),
    )

    message = failed_once(result)
    assert f"{PROBE_SCHEMA}.kinds" in message
    assert "'ghost'" in message
    assert not any(source_env.rglob("*.parquet")) if source_env.exists() else True


def test_an_optional_catalog_column_missing_from_the_source_is_written_as_nulls_and_reported(
    probe_schema, source_env
) -> None:
    ghost = _with_ghost(Column("ghost", "integer"))
    result = materialize_tables([ghost], today(), postgres=_probe_reader())

    table = pq.read_table(lake_file(source_env, "kinds", today()))
    assert table.schema.field("ghost").type == pa.int32()
    assert table.column("ghost").null_count == table.num_rows == 3
    (materialization,) = result.asset_materializations_for_node("sqlgym__kinds")
    assert materialization.metadata["sqlgym/absent_columns"].value == ["ghost"]
    schema = {c.check_name: c for c in result.get_asset_check_evaluations()}[
        "schema_matches_source"
    ]
    assert not schema.passed
    assert schema.metadata["removed_columns"].value == ["ghost"]
    assert schema.metadata["file_schema_differences"].value["missing"] == []


# In the extract only, not in its count: both run as COPY in one snapshot, and only the extract
# names the payload column.
STALL_AT_ROW_30000 = (
    "CASE WHEN n = 30000 AND strpos(current_query(), 'payload') > 0 "
    "THEN (SELECT 'z' FROM pg_sleep(60)) ELSE '' END"
)
HEX_PAYLOAD = "(SELECT string_agg(md5((n * 8 + k)::text), '') FROM generate_series(1, 8) AS k)"


def _create_stream_view(db, failure: str) -> None:
    # The payload expression is healthy for every row, or fails / stalls from row 30,000 on.
    payload = {
        "none": "repeat('x', 200)",
        "error": "repeat('x', 200) || (1 / (30000 - n))::text",
        "stall": "repeat('x', 200) || CASE WHEN n = 30000 THEN "
        "(SELECT 'z' FROM pg_sleep(60)) ELSE '' END",
        # Stalls only while sqlgym_probe.stall_once holds a row: the killer empties it.
        "stall_once": "repeat('x', 200) || CASE WHEN n = 30000 AND EXISTS "
        "(SELECT 1 FROM sqlgym_probe.stall_once) THEN (SELECT 'z' FROM pg_sleep(60)) ELSE '' END",
        # Hex digests: Snappy cannot shrink them, so 40,000 rows make a file of about 10 MB.
        "digests": HEX_PAYLOAD,
        "digests_error": f"{HEX_PAYLOAD} || (1 / (30000 - n))::text",
        # Stalls at row 30,000, after the first part has gone up: a writer to kill mid-upload.
        "digests_stall": f"{HEX_PAYLOAD} || {STALL_AT_ROW_30000}",
    }[failure]
    with db.cursor() as cursor:
        view = sql.SQL(
            "CREATE OR REPLACE VIEW {schema}.stream AS SELECT n::text AS id, {payload} AS payload "
            "FROM generate_series(1, %s) AS n"
        )
        cursor.execute(view.format(schema=PROBE, payload=sql.SQL(payload)), (STREAM_ROWS,))


def _kill_stalled_extract(database_url: str, stop: threading.Event) -> None:
    """Terminates the extract's backend once it is stalled mid-stream: a dropped connection.

    It first empties sqlgym_probe.stall_once, so a view that stalls only once lets a retry pass.
    """
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            while not stop.is_set():
                cursor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                    "AND query LIKE %s",
                    ("%stream%",),
                )
                stalled = [pid for (pid,) in cursor.fetchall()]
                if stalled:
                    cursor.execute(sql.SQL("DELETE FROM {}.stall_once").format(PROBE))
                    for pid in stalled:
                        cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    return
                time.sleep(0.05)
    finally:
        connection.close()


@pytest.mark.parametrize("failure", ["error", "stall"])
def test_a_failure_mid_stream_leaves_the_previous_file_intact(
    failure: str, probe_schema, db, database_url, source_env
) -> None:
    reader = _probe_reader(batch_size_hint_bytes=64 * 1024)
    partition = today()
    _create_stream_view(db, "none")
    materialize_tables([STREAM], partition, postgres=reader)
    path = lake_file(source_env, "stream", partition)
    previous = path.read_bytes()
    assert pq.read_metadata(path).num_rows == STREAM_ROWS

    _create_stream_view(db, failure)
    stop = threading.Event()
    killer = threading.Thread(target=_kill_stalled_extract, args=(database_url, stop))
    if failure == "stall":
        killer.start()
    try:
        result = materialize_tables([STREAM], partition, postgres=reader, raise_on_error=False)
    finally:
        stop.set()
        if killer.is_alive():
            killer.join()

    assert not result.success
    assert path.read_bytes() == previous
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_connection_dropped_mid_stream_is_retried_and_the_retry_succeeds(
    probe_schema, db, database_url, source_env
) -> None:
    reader = _probe_reader(batch_size_hint_bytes=64 * 1024)
    _create_stream_view(db, "stall_once")
    with db.cursor() as cursor:
        cursor.execute(sql.SQL("INSERT INTO {}.stall_once VALUES (true)").format(PROBE))
    stop = threading.Event()
    killer = threading.Thread(target=_kill_stalled_extract, args=(database_url, stop))
    killer.start()
    try:
        result = materialize_tables(
            [STREAM],
            today(),
            postgres=reader,
            retry_policy=RetryPolicy(max_retries=2, delay=0.2),
        )
    finally:
        stop.set()
        killer.join()

    assert result.success
    retries = [
        event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"
    ]
    assert len(retries) == 1
    path = lake_file(source_env, "stream", today())
    assert pq.read_metadata(path).num_rows == STREAM_ROWS


def _s3_lake() -> tuple[str, ParquetLakeIOManager]:
    bucket = f"sqlgym-parts-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket, ParquetLakeIOManager(lake_url=f"s3://{bucket}/lake")


def test_a_partition_larger_than_a_part_reaches_s3_in_parts_byte_for_byte(
    probe_schema, db, source_env, s3_server_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "UPLOAD_PART_BYTES", 5 * 1024 * 1024)  # S3's smallest
    reader = _probe_reader(batch_size_hint_bytes=256 * 1024)
    partition = today()
    _create_stream_view(db, "digests")
    materialize_tables([STREAM], partition, postgres=reader)
    local = lake_file(source_env, "stream", partition).read_bytes()
    bucket, s3_lake = _s3_lake()

    materialize_tables([STREAM], partition, postgres=reader, lake=s3_lake)

    key = s3_lake.file_uri(AssetKey(["sqlgym", "stream"]), partition).split("/", 3)[3]
    s3 = boto3.client("s3")
    head = s3.head_object(Bucket=bucket, Key=key)
    parts = -(-len(local) // writer.UPLOAD_PART_BYTES)
    assert parts >= 2
    assert head["ETag"].strip('"').endswith(f"-{parts}")  # a multipart object of that many parts
    assert head["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == local
    assert pq.read_table(pa.BufferReader(local)).num_rows == STREAM_ROWS


def test_a_failure_after_parts_were_sent_leaves_no_parts_and_the_previous_object(
    probe_schema, db, source_env, s3_server_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "UPLOAD_PART_BYTES", 5 * 1024 * 1024)
    reader = _probe_reader(batch_size_hint_bytes=256 * 1024)
    partition = today()
    bucket, s3_lake = _s3_lake()
    _create_stream_view(db, "digests")
    materialize_tables([STREAM], partition, postgres=reader, lake=s3_lake)
    key = s3_lake.file_uri(AssetKey(["sqlgym", "stream"]), partition).split("/", 3)[3]
    s3 = boto3.client("s3")
    previous = s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    _create_stream_view(db, "digests_error")  # fails at row 30,000: about 7.5 MB in
    result = materialize_tables(
        [STREAM], partition, postgres=reader, lake=s3_lake, raise_on_error=False
    )

    assert not result.success
    assert "division by zero" in str(result.all_events)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == previous
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_when_s3_fails_the_upload_and_its_abort_the_uploads_own_error_is_raised(
    probe_schema, db, source_env, s3_server_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "UPLOAD_PART_BYTES", 5 * 1024 * 1024)
    _create_stream_view(db, "digests")
    bucket, _ = _s3_lake()

    def s3_outage(method: str, path: str) -> bool:
        uploading_part = method == "PUT" and "partNumber=" in path
        aborting = method == "DELETE" and "uploadId=" in path
        return uploading_part or aborting

    with FaultyProxy(s3_server_env, fails=s3_outage) as proxy:
        lake = ParquetLakeIOManager(lake_url=f"s3://{bucket}/lake", s3_endpoint_url=proxy.endpoint)
        result = materialize_tables(
            [STREAM],
            today(),
            postgres=_probe_reader(batch_size_hint_bytes=256 * 1024),
            lake=lake,
            raise_on_error=False,
        )

    assert any(request.startswith("DELETE") for request in proxy.failed)  # the abort failed too
    message = failed_once(result)
    assert "UploadPart" in message
    assert "AbortMultipartUpload" not in message


def test_a_write_that_fails_mid_stream_ends_the_source_transaction_at_once(
    probe_schema, db, source_env, aws_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "UPLOAD_PART_BYTES", 5 * 1024 * 1024)
    _create_stream_view(db, "digests")
    missing_bucket = ParquetLakeIOManager(lake_url=f"s3://sqlgym-missing-{uuid.uuid4().hex[:12]}")

    result = materialize_tables(
        [STREAM],
        today(),
        postgres=_probe_reader(batch_size_hint_bytes=256 * 1024),
        lake=missing_bucket,
        raise_on_error=False,
    )

    assert not result.success
    assert "NoSuchBucket" in str(result.all_events)  # the upload failed while rows were coming
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT state FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
            ("%sqlgym_probe.stream%",),
        )
        assert cursor.fetchall() == []  # no snapshot left open until garbage collection


def _backend_in_transaction(db, pid: int) -> bool:
    with db.cursor() as cursor:
        cursor.execute("SELECT xact_start IS NOT NULL FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = cursor.fetchone()
    return bool(row and row[0])


def _wait_until_out_of_transaction(db, pid: int, timeout: float = 10.0) -> bool:
    """A closed connection's backend leaves pg_stat_activity a moment after the client goes."""
    deadline = time.monotonic() + timeout
    while _backend_in_transaction(db, pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def stream_file(probe_schema, db, source_env) -> tuple[LakeSettings, str]:
    """The healthy stream view, and the local lake file a test writes it to."""
    _create_stream_view(db, "none")
    settings = lake_settings(str(source_env))
    return settings, partition_uri(settings, "stream", date.fromisoformat(today()))


def test_the_snapshot_transaction_spans_the_write_and_ends_with_it(db, stream_file) -> None:
    settings, uri = stream_file

    with _probe_reader(batch_size_hint_bytes=64 * 1024).snapshot(STREAM, None) as snapshot:
        assert _backend_in_transaction(db, snapshot.backend_pid)
        written = write_partition(settings, uri, snapshot.stream)
        # Ended by the write itself, while the snapshot's block is still open.
        assert snapshot.stream.closed
        assert _wait_until_out_of_transaction(db, snapshot.backend_pid)

    assert written.rows == snapshot.source_row_count == STREAM_ROWS
    assert pq.read_metadata(uri).num_rows == STREAM_ROWS


def test_a_stream_read_after_its_snapshot_ended_fails_and_writes_nothing(
    db, stream_file, source_env
) -> None:
    settings, uri = stream_file

    with _probe_reader().snapshot(STREAM, None) as snapshot:
        pass
    assert _wait_until_out_of_transaction(db, snapshot.backend_pid)

    with pytest.raises(StreamClosedError, match="stream"):
        write_partition(settings, uri, snapshot.stream)
    assert not source_env.exists() or not any(source_env.rglob("*.parquet"))


KILLED_WRITER = """
import sys
from dagster import DagsterInstance
from sqlgym_assets.lake import writer
from sqlgym_assets.lake.io_manager import ParquetLakeIOManager
from sqlgym_assets.source.reader import PostgresResource
from sqlgym_assets_tests.helpers import materialize_tables
from sqlgym_assets_tests.test_extraction import PROBE_SCHEMA, STREAM

writer.UPLOAD_PART_BYTES = 5 * 1024 * 1024
materialize_tables(
    [STREAM],
    sys.argv[2],
    postgres=PostgresResource(source_schema=PROBE_SCHEMA, batch_size_hint_bytes=256 * 1024),
    lake=ParquetLakeIOManager(lake_url=sys.argv[1]),
    # Its storage in the test's folder: a process killed with SIGKILL cleans up nothing.
    instance=DagsterInstance.ephemeral(tempdir=sys.argv[3]),
)
"""


def _uploads(bucket: str) -> list[dict]:
    return boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_a_run_killed_mid_upload_leaves_the_previous_object_and_the_next_write_cleans_up(
    probe_schema, db, source_env, s3_server_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(writer, "UPLOAD_PART_BYTES", 5 * 1024 * 1024)
    monkeypatch.setattr(writer, "STALE_UPLOAD_AGE", timedelta(0))
    reader, partition = _probe_reader(batch_size_hint_bytes=256 * 1024), today()
    bucket, s3_lake = _s3_lake()
    key = s3_lake.file_uri(AssetKey(["sqlgym", "stream"]), partition).split("/", 3)[3]
    _create_stream_view(db, "digests")
    materialize_tables([STREAM], partition, postgres=reader, lake=s3_lake)
    s3 = boto3.client("s3")
    previous = s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    _create_stream_view(db, "digests_stall")
    run = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, s3_lake.lake_url, partition, str(tmp_path)],
        cwd=Path(__file__).resolve().parent.parent,
    )
    deadline = time.monotonic() + 120
    while not any(upload["Key"] == key for upload in _uploads(bucket)):  # a part is on its way
        assert run.poll() is None and time.monotonic() < deadline, "the writer never uploaded"
        time.sleep(0.2)
    time.sleep(1)
    run.send_signal(signal.SIGKILL)
    run.wait()
    with db.cursor() as cursor:  # its backend streams or sleeps on; end it, as a server would
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE %s AND pid <> pg_backend_pid()",
            ("%sqlgym_probe.stream%",),
        )
    staged = Path(tempfile.gettempdir()) / writer.STAGING_FOLDER
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == previous
    assert [upload["Key"] for upload in _uploads(bucket)] == [key]  # what kill -9 leaves
    assert any(path.name.startswith(f"{run.pid}-") for path in staged.iterdir())

    _create_stream_view(db, "digests")
    materialize_tables([STREAM], partition, postgres=reader, lake=s3_lake)

    assert _uploads(bucket) == []
    assert not any(path.name.startswith(f"{run.pid}-") for path in staged.iterdir())
    assert (
        pq.read_metadata(
            pa.BufferReader(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        ).num_rows
        == STREAM_ROWS
    )


def test_two_runs_writing_one_partition_at_once_leave_one_whole_object(
    probe_schema, db, source_env, s3_server_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "UPLOAD_PART_BYTES", 5 * 1024 * 1024)
    reader, partition = _probe_reader(batch_size_hint_bytes=256 * 1024), today()
    bucket, s3_lake = _s3_lake()
    key = s3_lake.file_uri(AssetKey(["sqlgym", "stream"]), partition).split("/", 3)[3]
    _create_stream_view(db, "digests")
    results = []

    def write() -> None:
        results.append(materialize_tables([STREAM], partition, postgres=reader, lake=s3_lake))

    writers = [threading.Thread(target=write) for _ in range(2)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()

    assert [result.success for result in results] == [True, True]
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    table = pq.read_table(pa.BufferReader(body))
    assert table.num_rows == STREAM_ROWS
    assert _uploads(bucket) == []
    records = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="lake/_metadata/stream/")
    assert len(records["Contents"]) == 2  # conditional writes: neither record overwrote the other
