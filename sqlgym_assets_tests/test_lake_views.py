"""The lake as a queryable mirror: current-state views equal PostgreSQL after inserts, updates and
deletes across days and syncs; the reconciliation check catches a lost or a surviving key; the
Athena DDL parses and projects every table; the DuckDB shell opens on the lake."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import duckdb
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from dagster import AssetSelection, DagsterInstance, materialize
from sqlglot import exp

from sqlgym_assets.assets import LAKE_IO_MANAGER_KEY, build_lake_asset, lake_asset_key
from sqlgym_assets.catalog import TABLES, TABLES_BY_NAME, SyncMode, TableSpec
from sqlgym_assets.lake.keys import (
    HASHED_PER_SLICE,
    LiveKeys,
    key_hashes,
    stored_key_set,
    write_key_set,
)
from sqlgym_assets.lake.layout import key_index_uri, key_set_uri, lake_settings
from sqlgym_assets.quality.reconciliation import KEYS_MATCH_SOURCE
from sqlgym_assets.source.reader import PostgresResource
from sqlgym_assets_tests.helpers import (
    BIN,
    JSON_TYPES,
    demo_database,
    env_lake,
    lake_file,
    materialize_tables,
    point_project_at,
    run_command,
    source_rows,
    today,
    utc_connection,
)

MIRROR_DATABASE = "sqlgym_mirror"
WINDOWED = [table for table in TABLES if table.sync_mode is not SyncMode.SNAPSHOT]
INTERACTIONS = TABLES_BY_NAME["problem_interactions"]
# A reader far from UTC: the views' instants must not depend on the session's time zone.
READER_TIME_ZONE = "America/Los_Angeles"


@pytest.fixture
def mirror_database_url(database_url: str) -> Iterator[str]:
    """A database of its own, with the demo's rows, that a test may change at will."""
    with demo_database(database_url, MIRROR_DATABASE, seed=13) as url:
        yield url


@pytest.fixture
def mirror(mirror_database_url: str) -> Iterator[psycopg2.extensions.connection]:
    with utc_connection(mirror_database_url) as connection:
        yield connection


@pytest.fixture
def mirror_lake(monkeypatch: pytest.MonkeyPatch, mirror_database_url: str, tmp_path: Path) -> Path:
    return point_project_at(monkeypatch, mirror_database_url, tmp_path / "lake")


def past_days(count: int = 7) -> list[str]:
    """The demo rows' days before today, oldest first: seven days back touch seven dates."""
    now = date.fromisoformat(today())
    return [(now - timedelta(days=back)).isoformat() for back in range(count, 0, -1)]


def sync_every_day(tables: list[TableSpec], instance: DagsterInstance | None = None) -> None:
    windowed = [table for table in tables if table.sync_mode is not SyncMode.SNAPSHOT]
    for day in past_days():
        materialize_tables(windowed, day, instance=instance)
    materialize_tables(tables, today(), instance=instance)


def execute(connection, statement: str, *parameters: object) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, parameters)
        return cursor.rowcount


def change_the_source(connection) -> dict[str, int]:
    """What the app does between two syncs: updates, inserts, and hard deletes (cascading)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    changed = {
        # Rows move to today's partition; their old versions stay in older days' files.
        "updated users": execute(
            connection,
            "UPDATE users SET company_name = 'changed', updated_at = %s "
            "WHERE id IN (SELECT id FROM users ORDER BY id LIMIT 5)",
            now,
        ),
        "updated posts": execute(
            connection,
            "UPDATE community_posts SET likes = likes + 1, updated_at = %s "
            "WHERE id IN (SELECT id FROM community_posts ORDER BY id LIMIT 3)",
            now,
        ),
        # Un-bookmarks and un-votes: the app deletes the interaction.
        "deleted interactions": execute(
            connection,
            "DELETE FROM problem_interactions "
            "WHERE id IN (SELECT id FROM problem_interactions ORDER BY id LIMIT 3)",
        ),
        # An admin deletes a problem: its test cases, sessions, posts and submissions go with it.
        "deleted problems": execute(
            connection,
            "DELETE FROM problems WHERE id = (SELECT problem_id FROM submissions "
            "GROUP BY problem_id ORDER BY count(*) DESC, problem_id LIMIT 1)",
        ),
        "inserted interactions": execute(
            connection,
            "INSERT INTO problem_interactions (id, user_id, problem_id, bookmark, upvote, "
            "downvote, created_at, updated_at) "
            "SELECT %s, u.id, p.id, true, false, false, %s, %s "
            "FROM users u, problems p ORDER BY u.id, p.id LIMIT 1",
            str(uuid.uuid4()),
            now,
            now,
        ),
    }
    assert all(changed.values()), changed
    return changed


def comparable(table: TableSpec, row: dict[str, Any]) -> dict[str, Any]:
    """A row as values to compare: instants in UTC, JSON decoded, decimals exact."""
    json_columns = {c.name for c in table.columns if c.pg_type in JSON_TYPES}
    result = {}
    for name, value in row.items():
        if isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        elif name in json_columns and isinstance(value, str):
            value = json.loads(value)
        result[name] = value
    return result


def keyed(table: TableSpec, rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    by_key = {
        tuple(row[name] for name in table.primary_key): comparable(table, row) for row in rows
    }
    assert len(by_key) == len(rows), f"{table.name}: a key repeats"
    return by_key


def sqlgym_lake(*arguments: str) -> str:
    """What `sqlgym-lake` prints, run as a user runs it."""
    finished = run_command(["sqlgym-lake", *arguments], dict(os.environ))
    assert finished.returncode == 0, finished.stderr
    return finished.stdout


def duckdb_on(lake: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB with the views `sqlgym-lake sql` prints, in a session far from UTC."""
    printed = sqlgym_lake("sql", "--engine", "duckdb", "--lake", str(lake))
    connection = duckdb.connect()
    connection.execute(f"SET TimeZone = '{READER_TIME_ZONE}'")
    connection.execute(printed)
    return connection


def view_rows(connection: duckdb.DuckDBPyConnection, view: str) -> list[dict[str, Any]]:
    return connection.table(view).to_arrow_table().to_pylist()


def test_every_current_state_view_equals_postgres_after_inserts_updates_and_deletes(
    mirror, mirror_lake
) -> None:
    sync_every_day(list(TABLES))
    change_the_source(mirror)
    materialize_tables(TABLES, today())

    views = duckdb_on(mirror_lake)

    for table in TABLES:
        expected = source_rows(mirror, table, None)
        if table.cursor_column is not None:  # a row with no cursor belongs to no day
            expected = [row for row in expected if row[table.cursor_column] is not None]
        current = view_rows(views, table.name)
        assert len(current) == len(expected), table.name
        assert keyed(table, current) == keyed(table, expected), table.name
    for table in TABLES:
        rows_per_day = {
            date.fromisoformat(day): pq.read_metadata(
                lake_file(mirror_lake, table.name, day)
            ).num_rows
            for day in [*past_days(), today()]
            if lake_file(mirror_lake, table.name, day).exists()
        }
        history = views.table(f"{table.name}_history")
        counted = history.aggregate("partition_date, count(*)").fetchall()
        assert dict(counted) == {day: rows for day, rows in rows_per_day.items() if rows}


def test_a_deleted_key_is_counted_in_the_sync_and_leaves_the_current_state(
    mirror, mirror_lake
) -> None:
    sync_every_day([INTERACTIONS])
    # A key whose row lives in a past day's file: re-syncing today replaces today's file, so a
    # row of today's that is deleted leaves the history as well as the current state.
    midnight = datetime.combine(date.fromisoformat(today()), datetime.min.time())
    deleted = next(
        row["id"] for row in source_rows(mirror, INTERACTIONS, None) if row["updated_at"] < midnight
    )
    execute(mirror, "DELETE FROM problem_interactions WHERE id = %s", deleted)

    result = materialize_tables([INTERACTIONS], today())

    (materialization,) = result.asset_materializations_for_node("sqlgym__problem_interactions")
    live = len(source_rows(mirror, INTERACTIONS, None))
    assert materialization.metadata["sqlgym/live_keys"].value == live
    assert materialization.metadata["sqlgym/deleted_keys"].value == 1
    record = json.loads(Path(materialization.metadata["sqlgym/sync_record"].value).read_text())
    assert (record["live_keys"], record["deleted_keys"]) == (live, 1)
    views = duckdb_on(mirror_lake)
    ids = {row["id"] for row in view_rows(views, INTERACTIONS.name)}
    assert deleted not in ids
    assert deleted in {row["id"] for row in view_rows(views, f"{INTERACTIONS.name}_history")}
    # Key sets and the index live outside the table's folder: a glob of its data never sees them.
    settings = lake_settings(str(mirror_lake))
    for bookkeeping in (
        key_set_uri(settings, "problem_interactions"),
        key_index_uri(settings, "problem_interactions"),
    ):
        assert Path(bookkeeping).is_file()
        assert not Path(bookkeeping).is_relative_to(mirror_lake / "problem_interactions")


def check_today(table: TableSpec, instance: DagsterInstance):
    """Runs only the checks of a table's partition of today, as the lake checks job does."""
    result = materialize(
        [build_lake_asset(table, retry_policy=None)],
        selection=AssetSelection.checks_for_assets(lake_asset_key(table)),
        tags={"dagster/partition": today()},
        instance=instance,
        resources={"postgres": PostgresResource(), LAKE_IO_MANAGER_KEY: env_lake()},
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}[KEYS_MATCH_SOURCE]


def test_the_reconciliation_errors_on_a_surviving_deleted_key_and_warns_on_a_lost_one(
    mirror, mirror_lake, instance
) -> None:
    sync_every_day([INTERACTIONS], instance)
    clean = check_today(INTERACTIONS, instance)
    assert clean.passed, clean.description
    assert clean.metadata["key_index_rebuilt"].value is False

    # Deleted in the source after the latest sync: the lake's current state still holds it.
    (survivor,) = [row["id"] for row in source_rows(mirror, INTERACTIONS, None)][:1]
    execute(mirror, "DELETE FROM problem_interactions WHERE id = %s", survivor)
    surviving = check_today(INTERACTIONS, instance)
    assert not surviving.passed
    assert surviving.severity.value == "ERROR"
    assert surviving.metadata["surviving_deleted_keys"].value == 1
    assert surviving.metadata["surviving_examples"].value == [f"id={survivor}"]

    # The next sync records the live key set: nothing survives any more.
    materialize_tables([INTERACTIONS], today(), instance=instance)
    assert check_today(INTERACTIONS, instance).passed

    # A day's file lost outside the project: its live keys are missing, found by a rebuild.
    lost_day = past_days()[3]
    lost_file = lake_file(mirror_lake, INTERACTIONS.name, lost_day)
    lost = {row["id"] for row in pq.read_table(lost_file, columns=["id"]).to_pylist()}
    live = {row["id"] for row in source_rows(mirror, INTERACTIONS, None)}
    assert lost & live
    lost_file.unlink()
    missing = check_today(INTERACTIONS, instance)
    assert not missing.passed
    assert missing.severity.value == "WARN"
    assert missing.metadata["key_index_rebuilt"].value is True
    assert missing.metadata["missing_keys"].value == len(lost & live)
    examples = missing.metadata["missing_examples"].value
    assert examples == [f"id={key}" for key in sorted(lost & live)][:20]


def statements_of(printed: str) -> list[exp.Expression]:
    """Each statement parsed on its own, as Athena runs them: its DDL is Hive's, its views
    Trino's, and sqlglot picks the grammar by the statement's first words."""
    texts = [text for text in re.split(r";\s*$", printed, flags=re.MULTILINE) if text.strip()]
    return [sqlglot.parse_one(text, read="athena") for text in texts]


def _fnv1a(parts: list[str | None]) -> int:
    """The key index's hash, written out plainly: FNV-1a over each column's UTF-8 text, the
    columns' hashes combined FNV-style, a NULL hashing to a constant."""
    mask, prime = 2**64 - 1, 0x100000001B3
    combined = 0xCBF29CE484222325
    for part in parts:
        if part is None:
            column_hash = 0x9E3779B97F4A7C15
        else:
            column_hash = 0xCBF29CE484222325
            for byte in part.encode():
                column_hash = ((column_hash ^ byte) * prime) & mask
        combined = ((combined ^ column_hash) * prime) & mask
    return combined


@pytest.mark.parametrize("keys", ["uuids", "mixed widths", "compound with nulls"])
def test_key_hashes_are_the_index_format_whatever_the_keys_widths(keys: str) -> None:
    """Key indexes already in lakes hold these hashes: any faster path must give the same."""
    rows = HASHED_PER_SLICE + 7  # more than one slice
    if keys == "uuids":
        table = pa.table({"id": [str(uuid.UUID(int=n * 7919)) for n in range(rows)]})
    elif keys == "mixed widths":
        table = pa.table({"id": pa.array(range(rows), pa.int64())})
    else:
        table = pa.table(
            {
                "user_id": [None if n % 5 == 0 else f"u{n % 97}" for n in range(rows)],
                "day": pa.array([date(2025, 1, 1) + timedelta(days=n % 3) for n in range(rows)]),
            }
        )
    texts = [
        [None if value is None else str(value) for value in row.values()]
        for row in table.to_pylist()
    ]

    assert key_hashes(table).tolist() == [_fnv1a(parts) for parts in texts]


def test_the_athena_ddl_parses_and_projects_every_table_by_day(
    s3_server_env, source_env, monkeypatch
) -> None:
    bucket = f"sqlgym-athena-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    lake = f"s3://{bucket}/lake"
    monkeypatch.setenv("SQLGYM_LAKE_URL", lake)
    materialize_tables(["problem_interactions"], today())

    printed = sqlgym_lake("sql", "--engine", "athena", "--lake", lake, "--database", "analytics")

    statements = statements_of(printed)
    created = {
        statement.this.find(exp.Table).name: statement
        for statement in statements
        if isinstance(statement, exp.Create)
    }
    for table in TABLES:
        files = created[f"{table.name}_files"]
        properties = {prop.name: prop.text("value") for prop in files.find_all(exp.Property)}
        assert properties["projection.enabled"] == "true", table.name
        assert properties["projection.day.type"] == "date"
        assert properties["projection.day.format"] == "yyyy/MM/dd"
        assert properties["storage.location.template"] == f"{lake}/{table.name}/${{day}}/"
        assert {f"{table.name}_history", table.name} <= set(created), table.name
        columns = [c.name for c in files.find_all(exp.ColumnDef)]
        assert columns[: len(table.column_names)] == list(table.column_names)
    assert 'k."id" = h."id"' in created["problem_interactions"].sql(dialect="athena")


def test_the_lake_shell_opens_duckdb_with_the_views(source_env) -> None:
    day = today()
    materialize_tables(["topics"], day)
    rows = pq.read_metadata(lake_file(source_env, "topics", day)).num_rows

    one_query = sqlgym_lake(
        "shell", "--lake", str(source_env), "-c", "SELECT count(*) AS topics FROM topics"
    )
    session = subprocess.run(
        [str(BIN / "sqlgym-lake"), "shell", "--lake", str(source_env)],
        input="SELECT count(*) AS history\nFROM topics_history;\nSELECT nope;\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout

    assert boxed_cells(one_query) == ["topics", "int64", str(rows)]
    assert "<table>_history" in session and "sqlgym> " in session
    assert boxed_cells(session)[:3] == ["history", "int64", str(rows)]
    assert '"nope" was not found' in session  # an error is printed, and the session goes on


def boxed_cells(output: str) -> list[str]:
    """The cells of the tables DuckDB draws, in order."""
    return [
        cell.strip()
        for line in output.splitlines()
        if line.startswith("│")
        for cell in line.strip().strip("│").split("│")
    ]


def test_a_key_set_read_earlier_never_replaces_one_read_later(tmp_path: Path) -> None:
    """Two days of a table synced out of order: the current state follows the newer snapshot."""
    settings = lake_settings(str(tmp_path))
    newer = LiveKeys(pa.table({"id": ["a", "b"]}), datetime(2025, 10, 2, 12, tzinfo=UTC))
    older = LiveKeys(pa.table({"id": ["a", "b", "c"]}), datetime(2025, 10, 2, 11, tzinfo=UTC))

    first = write_key_set(settings, "users", newer)
    second = write_key_set(settings, "users", older)

    assert (first.live, first.deleted, first.superseded) == (2, 0, False)
    assert (second.live, second.superseded) == (3, True)
    kept = stored_key_set(settings, "users")
    assert kept.read_at == newer.read_at
    assert kept.keys.column("id").to_pylist() == ["a", "b"]
    later = LiveKeys(pa.table({"id": ["b"]}), datetime(2025, 10, 2, 13, tzinfo=UTC))
    assert write_key_set(settings, "users", later).deleted == 1


def test_an_unusable_lake_is_refused_in_one_line_naming_the_option(monkeypatch) -> None:
    monkeypatch.delenv("SQLGYM_LAKE_URL", raising=False)
    for arguments, reason in (
        (["sql", "--engine", "duckdb"], "no lake configured"),
        (["sql", "--engine", "athena", "--lake", "/srv/lake"], "Athena reads S3 only"),
    ):
        finished = run_command(["sqlgym-lake", *arguments], dict(os.environ))
        assert finished.returncode == 2
        assert reason in finished.stderr and "(--lake)" in finished.stderr
        assert "Traceback" not in finished.stderr
