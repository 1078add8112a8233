"""Every table, materialized for real and compared with PostgreSQL value by value."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg2 import sql

from sqlgym_assets.catalog import TABLES, TABLES_BY_NAME, SyncMode, TableSpec
from sqlgym_assets.lake.writer import ARROW_MEMORY_POOL_ENV
from sqlgym_assets.source.plan import partition_window
from sqlgym_assets_tests.helpers import (
    assert_checks_of_one_synced_day,
    busiest_day,
    by_key,
    expected_arrow_type,
    lake_file,
    lake_rows,
    materialize_tables,
    source_rows,
    today,
    window_for,
)

USERS = TABLES_BY_NAME["users"]
SUBMISSIONS = TABLES_BY_NAME["submissions"]
SESSIONS = TABLES_BY_NAME["problem_sessions"]
# Days the demo data (the last 7 days) never touches, so tests own them.
QUIET_DAY = "2025-03-10"


@pytest.mark.parametrize("table", TABLES, ids=lambda table: table.name)
def test_partition_matches_source_value_by_value(table: TableSpec, db, source_env) -> None:
    partition = today() if table.sync_mode is SyncMode.SNAPSHOT else busiest_day(db, table)

    result = materialize_tables([table], partition)

    path = lake_file(source_env, table.name, partition)
    schema = pq.read_schema(path)
    assert schema.names == list(table.column_names)
    for column in table.lake_columns:
        assert schema.field(column.name).type == expected_arrow_type(column.pg_type), column.name
    expected = source_rows(db, table, window_for(table, partition))
    actual = lake_rows(table, path)
    assert expected, f"the demo data has no rows of {table.name} on {partition}"
    assert len(actual) == len(expected)
    assert by_key(actual) == by_key(expected)
    (materialization,) = result.asset_materializations_for_node(f"sqlgym__{table.name}")
    assert materialization.metadata["dagster/row_count"].value == len(expected)
    assert materialization.metadata["sqlgym/source_row_count"].value == len(expected)
    assert materialization.metadata["dagster/uri"].value == str(path)
    written = materialization.metadata["dagster/column_schema"].value
    assert [(c.name, c.type) for c in written.columns] == [(f.name, str(f.type)) for f in schema]
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert_checks_of_one_synced_day(checks, db, table, len(expected))


def test_json_text_non_ascii_text_and_null_integers_survive(db, source_env) -> None:
    submissions_day = busiest_day(db, SUBMISSIONS)
    test_cases_day = busiest_day(db, TABLES_BY_NAME["test_cases"])
    materialize_tables([SUBMISSIONS], submissions_day)
    materialize_tables(["test_cases"], test_cases_day)

    submissions = pq.read_table(lake_file(source_env, "submissions", submissions_day))
    assert str(submissions.schema.field("execution_time").type) == "int32"
    assert submissions.column("execution_time").null_count > 0
    assert any(not text.isascii() for text in submissions.column("query").to_pylist())
    test_cases = pq.read_table(lake_file(source_env, "test_cases", test_cases_day))
    assert str(test_cases.schema.field("input_data").type) == "string"
    assert "{}" in test_cases.column("input_data").to_pylist()


def _insert_user(connection, user_id: str, updated_at: datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO users (id, username, email, created_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            (user_id, user_id, f"{user_id}@example.test", updated_at, updated_at),
        )


@pytest.fixture
def test_users(db) -> Iterator[list[str]]:
    """Users a test inserts; deleted afterwards so other tests see only the demo data."""
    ids: list[str] = []
    yield ids
    with db.cursor() as cursor:
        cursor.execute("DELETE FROM users WHERE id = ANY(%s)", (ids,))


def _lake_ids(lake, table: str, partition: str) -> set[str]:
    return set(pq.read_table(lake_file(lake, table, partition), columns=["id"])["id"].to_pylist())


def test_incremental_window_includes_midnight_of_d_and_excludes_midnight_of_d_plus_1(
    db, source_env, test_users
) -> None:
    rows = {
        "t-at-start": datetime(2025, 3, 10, 0, 0, 0),
        "t-last-microsecond": datetime(2025, 3, 10, 23, 59, 59, 999999),
        "t-at-end": datetime(2025, 3, 11, 0, 0, 0),
        "t-before": datetime(2025, 3, 9, 23, 59, 59, 999999),
    }
    for user_id, updated_at in rows.items():
        test_users.append(user_id)
        _insert_user(db, user_id, updated_at)

    materialize_tables([USERS], "2025-03-10")
    materialize_tables([USERS], "2025-03-11")

    assert _lake_ids(source_env, "users", "2025-03-10") == {"t-at-start", "t-last-microsecond"}
    assert _lake_ids(source_env, "users", "2025-03-11") == {"t-at-end"}


def test_append_window_is_read_on_submitted_at(db, source_env) -> None:
    with db.cursor() as cursor:
        cursor.execute("SELECT id FROM users LIMIT 1")
        (user_id,) = cursor.fetchone()
        cursor.execute("SELECT id FROM problems LIMIT 1")
        (problem_id,) = cursor.fetchone()
        inserted = {
            "s-at-start": datetime(2025, 3, 10, 0, 0),
            "s-at-end": datetime(2025, 3, 11, 0, 0),
        }
        for submission_id, submitted_at in inserted.items():
            cursor.execute(
                "INSERT INTO submissions (id, user_id, problem_id, query, is_correct, "
                "submitted_at) VALUES (%s, %s, %s, 'SELECT 1', true, %s)",
                (submission_id, user_id, problem_id, submitted_at),
            )
    try:
        materialize_tables([SUBMISSIONS], "2025-03-10")
        assert _lake_ids(source_env, "submissions", "2025-03-10") == {"s-at-start"}
    finally:
        with db.cursor() as cursor:
            cursor.execute("DELETE FROM submissions WHERE id = ANY(%s)", (list(inserted),))


def test_timestamptz_window_is_utc_whatever_the_session_time_zone(
    db, database_url, source_env
) -> None:
    with db.cursor() as cursor:
        cursor.execute("SELECT user_id, problem_id FROM problem_sessions LIMIT 1")
        user_id, problem_id = cursor.fetchone()
        cursor.execute("SELECT current_database()")
        (database,) = cursor.fetchone()
        inserted = {
            "p-at-start": "2025-03-10 00:00:00+00",
            "p-late-in-new-york": "2025-03-10 19:30:00-04",  # 23:30 UTC: in the day
            "p-next-utc-day": "2025-03-10 21:00:00-04",  # 01:00 UTC on the 11th
            "p-early-in-paris": "2025-03-10 00:30:00+01",  # 23:30 UTC on the 9th
        }
        for session_id, updated_at in inserted.items():
            cursor.execute(
                "INSERT INTO problem_sessions (id, user_id, problem_id, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (session_id, user_id, problem_id, updated_at, updated_at),
            )
        # The extract's own connection starts in this zone; the window must not move with it.
        cursor.execute(
            sql.SQL("ALTER DATABASE {} SET TimeZone = 'America/New_York'").format(
                sql.Identifier(database)
            )
        )
    try:
        materialize_tables([SESSIONS], "2025-03-10")
        assert _lake_ids(source_env, "problem_sessions", "2025-03-10") == {
            "p-at-start",
            "p-late-in-new-york",
        }
    finally:
        with db.cursor() as cursor:
            cursor.execute(
                sql.SQL("ALTER DATABASE {} RESET TimeZone").format(sql.Identifier(database))
            )
            cursor.execute("DELETE FROM problem_sessions WHERE id = ANY(%s)", (list(inserted),))


def test_updated_row_moves_to_its_new_day_when_both_days_are_rematerialized(
    db, source_env, test_users
) -> None:
    test_users.append("t-mover")
    _insert_user(db, "t-mover", datetime(2025, 3, 12, 10, 0))
    materialize_tables([USERS], "2025-03-12")
    assert "t-mover" in _lake_ids(source_env, "users", "2025-03-12")

    with db.cursor() as cursor:
        cursor.execute(
            "UPDATE users SET updated_at = %s WHERE id = %s",
            (datetime(2025, 3, 13, 9, 0), "t-mover"),
        )
    materialize_tables([USERS], "2025-03-12")
    materialize_tables([USERS], "2025-03-13")

    assert "t-mover" not in _lake_ids(source_env, "users", "2025-03-12")
    assert "t-mover" in _lake_ids(source_env, "users", "2025-03-13")


@pytest.mark.parametrize("table_name", ["users", "followers"])
def test_rematerializing_a_partition_replaces_it_without_duplicates(
    table_name: str, db, source_env
) -> None:
    table = TABLES_BY_NAME[table_name]
    partition = today()
    materialize_tables([table], partition)
    first = pq.read_table(lake_file(source_env, table_name, partition))
    materialize_tables([table], partition)
    second = pq.read_table(lake_file(source_env, table_name, partition))

    ids = second["id"].to_pylist()
    assert len(ids) == len(set(ids))
    assert sorted(first.to_pylist(), key=lambda r: r["id"]) == sorted(
        second.to_pylist(), key=lambda r: r["id"]
    )
    assert len(ids) == len(source_rows(db, table, window_for(table, partition)))


def test_empty_window_writes_a_zero_row_file_with_the_full_schema(db, source_env) -> None:
    result = materialize_tables([USERS], "2025-02-01")

    table = pq.read_table(lake_file(source_env, "users", "2025-02-01"))
    assert table.num_rows == 0
    assert table.schema.names == list(USERS.column_names)
    for column in USERS.lake_columns:
        assert table.schema.field(column.name).type == expected_arrow_type(column.pg_type)
    (materialization,) = result.asset_materializations_for_node("sqlgym__users")
    assert materialization.metadata["dagster/row_count"].value == 0
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert_checks_of_one_synced_day(checks, db, USERS, 0)
    assert checks["row_count_matches_source"].metadata["expected"].value == 0


def test_snapshot_table_refuses_a_past_day_and_writes_nothing(source_env) -> None:
    result = materialize_tables(["followers"], "2025-10-24", raise_on_error=False)

    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert "snapshot table" in message
    assert "2025-10-24" in message
    assert not source_env.exists() or not any(source_env.rglob("*.parquet"))


def test_partition_window_is_the_utc_day() -> None:
    window = partition_window("2025-10-24")
    assert window.start.isoformat() == "2025-10-24T00:00:00+00:00"
    assert window.end.isoformat() == "2025-10-25T00:00:00+00:00"


def test_one_failing_table_leaves_the_other_tables_of_the_run_materialized(source_env) -> None:
    result = materialize_tables(["followers", USERS], "2025-03-10", raise_on_error=False)

    assert not result.success
    assert [event.asset_key.path for event in result.get_asset_materialization_events()] == [
        ["sqlgym", "users"]
    ]
    assert lake_file(source_env, "users", "2025-03-10").exists()
    assert not lake_file(source_env, "followers", "2025-03-10").exists()


@pytest.fixture
def arrow_pool_restored() -> Iterator[None]:
    previous = pa.default_memory_pool()
    yield
    pa.set_memory_pool(previous)


def test_a_materialization_makes_jemalloc_arrows_allocator(
    source_env, monkeypatch: pytest.MonkeyPatch, arrow_pool_restored
) -> None:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow is built without jemalloc")
    monkeypatch.delenv(ARROW_MEMORY_POOL_ENV, raising=False)
    pa.set_memory_pool(pa.system_memory_pool())

    materialize_tables([USERS], QUIET_DAY)

    assert pa.default_memory_pool().backend_name == "jemalloc"


def test_an_arrow_allocator_chosen_in_the_environment_is_kept(
    source_env, monkeypatch: pytest.MonkeyPatch, arrow_pool_restored
) -> None:
    monkeypatch.setenv(ARROW_MEMORY_POOL_ENV, "system")
    pa.set_memory_pool(pa.system_memory_pool())

    materialize_tables([USERS], QUIET_DAY)

    assert pa.default_memory_pool().backend_name == "system"
