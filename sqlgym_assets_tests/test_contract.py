"""The catalog as the lake's contract, against a database shaped like the SQLGym app's own.

The app creates its database with SQLAlchemy's ``create_all``: no legacy tables, naive
timestamps in problem_sessions, no column DEFAULTs, an unbounded varchar for
problems.expected_hash, and tables and columns the production schema does not list. Every table
it has must sync exactly, into the same schema as a production database gives.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pyarrow.parquet as pq
import pytest
from dagster import RetryPolicy, instance_for_test
from psycopg2 import sql

from sqlgym_assets.assets import ABSENT_FROM_SOURCE, lake_asset_key
from sqlgym_assets.catalog import TABLES, TABLES_BY_NAME, ColumnPolicy, TableSpec
from sqlgym_assets.operations import monitor
from sqlgym_assets.source.plan import contract_schema
from sqlgym_assets_tests.helpers import (
    demo_database,
    failed_once,
    lake_file,
    lake_rows,
    materialize_tables,
    point_project_at,
    pseudonymize,
    run_command,
    today,
    utc_connection,
)

APP_DATABASE = "sqlgym_app_shaped"
LEGACY = {"problem_schemas", "problem_submissions", "user_progress"}
SESSION_TIMESTAMPS = ("first_query_at", "completed_at", "created_at", "updated_at")

# What the app's models create, applied to a production-shaped database loaded with demo rows.
APP_SHAPE = [
    "DROP TABLE problem_schemas, problem_submissions, user_progress CASCADE",
    *(
        f"ALTER TABLE problem_sessions ALTER COLUMN {column} TYPE timestamp "
        f"USING {column} AT TIME ZONE 'UTC'"
        for column in SESSION_TIMESTAMPS
    ),
    "ALTER TABLE problems ALTER COLUMN expected_hash TYPE varchar",
    "ALTER TABLE execution_results ADD COLUMN cpu_time_ms integer, ADD COLUMN query_plan jsonb",
    "CREATE TYPE sandbox_status AS ENUM ('PENDING', 'RUNNING', 'DONE')",
    "CREATE TABLE admin_audit_logs (id varchar PRIMARY KEY, action text NOT NULL, "
    "created_at timestamp NOT NULL)",
    "CREATE TABLE admin_failed_attempts (id varchar PRIMARY KEY, ip text, attempted_at timestamp)",
    "CREATE TABLE admin_lockouts (id varchar PRIMARY KEY, ip text, locked_until timestamp)",
    """
    DO $$
    DECLARE defaulted record;
    BEGIN
        FOR defaulted IN
            SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = 'public' AND column_default IS NOT NULL
        LOOP
            EXECUTE format('ALTER TABLE %I ALTER COLUMN %I DROP DEFAULT',
                           defaulted.table_name, defaulted.column_name);
        END LOOP;
    END $$
    """,
]


@pytest.fixture(scope="module")
def app_database_url(database_url: str) -> Iterator[str]:
    with demo_database(database_url, APP_DATABASE) as url, utc_connection(url) as connection:
        with connection.cursor() as cursor:
            for statement in APP_SHAPE:
                cursor.execute(statement)
        yield url


@pytest.fixture
def app_db(app_database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """The tests' own view of the app's database; days are UTC days."""
    with utc_connection(app_database_url) as connection:
        yield connection


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, app_database_url: str, tmp_path: Path) -> Path:
    """Points the project at the app-shaped database and a fresh local lake."""
    return point_project_at(monkeypatch, app_database_url, tmp_path / "lake")


def app_rows(connection, table: TableSpec, partition: str) -> list[dict]:
    """The partition's rows read with psycopg2, personal data as the lake must hold it."""
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, table.column_names)), sql.Identifier(table.name)
    )
    parameters: tuple[object, ...] = ()
    if table.cursor_column is not None:
        query += sql.SQL(" WHERE ({cursor})::date = %s").format(
            cursor=sql.Identifier(table.cursor_column)
        )
        parameters = (partition,)
    with connection.cursor() as cursor:
        cursor.execute(query, parameters)
        names = [column.name for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return [pseudonymize(table, row) for row in rows]


def as_naive_utc(row: dict) -> dict:
    return {
        name: value.astimezone(UTC).replace(tzinfo=None)
        if isinstance(value, datetime) and value.tzinfo is not None
        else value
        for name, value in row.items()
    }


def test_every_table_of_the_apps_own_database_syncs_into_the_contract(
    app_db, app_database_url: str, tmp_path: Path
) -> None:
    partition = today()
    lake, home = tmp_path / "lake", tmp_path / "dagster_home"
    home.mkdir()
    environment = {
        **{k: v for k, v in os.environ.items() if k != "SQLGYM_DB_SECRET_ID"},
        "DAGSTER_HOME": str(home),
        "SQLGYM_DATABASE_URL": app_database_url,
        "SQLGYM_LAKE_URL": str(lake),
    }
    completed = run_command(
        [
            *("dagster", "asset", "materialize", "-m", "sqlgym_assets.definitions"),
            *("--partition", partition),
            *("--select", ",".join(lake_asset_key(t).to_user_string() for t in TABLES)),
        ],
        environment,
    )

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for table in TABLES:
        path = lake_file(lake, table.name, partition)
        if table.name in LEGACY:
            assert not path.exists()
            continue
        # One schema per table, whatever the source's types: the catalog's.
        assert pq.read_schema(path).equals(contract_schema(table)), table.name
        expected = [as_naive_utc(row) for row in app_rows(app_db, table, partition)]
        actual = [as_naive_utc(row) for row in lake_rows(table, path)]
        assert sorted(actual, key=lambda r: r["id"]) == sorted(expected, key=lambda r: r["id"])
    assert any(app_rows(app_db, TABLES_BY_NAME["problem_sessions"], partition))
    with instance_for_test(temp_dir=str(home)) as instance:
        for name in LEGACY:
            key = lake_asset_key(TABLES_BY_NAME[name])
            (observation,) = instance.fetch_observations(key, limit=5).records
            assert observation.asset_observation.metadata[ABSENT_FROM_SOURCE].value is True
            assert observation.asset_observation.partition == partition
            assert not instance.fetch_materializations(key, limit=1).records
        sessions = instance.fetch_materializations(
            lake_asset_key(TABLES_BY_NAME["problem_sessions"]), limit=1
        ).records[0]
        converted = sessions.asset_materialization.metadata["sqlgym/converted_columns"].value
        assert converted == {
            column: "timestamp without time zone -> timestamp with time zone"
            for column in SESSION_TIMESTAMPS
        }


def test_an_absent_legacy_table_is_a_warning_and_any_other_absent_table_fails_once(
    app_env, instance
) -> None:
    legacy = materialize_tables(["user_progress"], today(), instance=instance)

    assert legacy.success
    assert not legacy.get_asset_materialization_events()
    (check,) = legacy.get_asset_check_evaluations()
    assert (check.check_name, check.passed, check.severity.value) == (
        "schema_matches_source",
        False,
        "WARN",
    )
    assert not any(app_env.rglob("*.parquet")) if app_env.exists() else True

    not_legacy = replace(TABLES_BY_NAME["user_progress"], legacy=False)
    failed = materialize_tables(
        [not_legacy],
        today(),
        instance=instance,
        raise_on_error=False,
        retry_policy=RetryPolicy(max_retries=2, delay=0.1),
    )
    assert "public.user_progress" in failed_once(failed)


def _busiest_days(connection, table: TableSpec, count: int) -> list[str]:
    query = sql.SQL(
        "SELECT ({cursor})::date AS d FROM {table} GROUP BY d ORDER BY count(*) DESC, d LIMIT %s"
    ).format(cursor=sql.Identifier(table.cursor_column), table=sql.Identifier(table.name))
    with connection.cursor() as cursor:
        cursor.execute(query, (count,))
        return [day.isoformat() for (day,) in cursor.fetchall()]


def test_a_type_changed_upstream_between_two_days_leaves_both_days_in_one_schema(
    app_db, app_env
) -> None:
    sessions = TABLES_BY_NAME["problem_sessions"]
    first_day, second_day = sorted(_busiest_days(app_db, sessions, 2))
    first = materialize_tables([sessions], first_day)  # naive timestamps, as the app creates
    drift = {c.check_name: c for c in first.get_asset_check_evaluations()}["schema_matches_source"]
    assert not drift.passed
    naive, aware = "timestamp without time zone", "timestamp with time zone"
    assert drift.metadata["changed_columns"].value == {
        column: {"contract": aware, "source": naive} for column in SESSION_TIMESTAMPS
    }
    assert drift.metadata["converted_columns"].value == list(SESSION_TIMESTAMPS)
    assert drift.metadata["file_schema_differences"].value == {
        "missing": [],
        "unexpected": [],
        "mistyped": {},
    }
    with app_db.cursor() as cursor:
        for column in SESSION_TIMESTAMPS:
            cursor.execute(
                f"ALTER TABLE problem_sessions ALTER COLUMN {column} TYPE timestamptz "
                f"USING {column} AT TIME ZONE 'UTC'"
            )
    try:
        materialize_tables([sessions], second_day)  # timestamptz, as the schema document says
        second_expected = [as_naive_utc(r) for r in app_rows(app_db, sessions, second_day)]
    finally:
        with app_db.cursor() as cursor:
            for column in SESSION_TIMESTAMPS:
                cursor.execute(
                    f"ALTER TABLE problem_sessions ALTER COLUMN {column} TYPE timestamp "
                    f"USING {column} AT TIME ZONE 'UTC'"
                )
    first_expected = [as_naive_utc(r) for r in app_rows(app_db, sessions, first_day)]

    schemas = [
        pq.read_schema(lake_file(app_env, sessions.name, d)) for d in (first_day, second_day)
    ]
    assert schemas[0].equals(schemas[1])
    assert schemas[0].equals(contract_schema(sessions))
    for day, expected in ((first_day, first_expected), (second_day, second_expected)):
        actual = [
            as_naive_utc(r) for r in lake_rows(sessions, lake_file(app_env, sessions.name, day))
        ]
        assert expected
        assert sorted(actual, key=lambda r: r["id"]) == sorted(expected, key=lambda r: r["id"])


def test_a_type_that_cannot_be_converted_fails_once_naming_both_types_and_writes_nothing(
    app_db, app_env
) -> None:
    users = TABLES_BY_NAME["users"]
    with app_db.cursor() as cursor:
        cursor.execute("ALTER TABLE users ALTER COLUMN problems_solved TYPE text")
    try:
        result = materialize_tables(
            [users],
            today(),
            raise_on_error=False,
            retry_policy=RetryPolicy(max_retries=2, delay=0.1),
        )
    finally:
        with app_db.cursor() as cursor:
            cursor.execute(
                "ALTER TABLE users ALTER COLUMN problems_solved TYPE integer "
                "USING problems_solved::integer"
            )

    message = failed_once(result)
    for part in ("public.users", "'problems_solved'", "is text in the source", "integer"):
        assert part in message
    assert not any(app_env.rglob("*.parquet")) if app_env.exists() else True


def test_no_credential_column_reaches_a_file_its_metadata_or_the_sync_record(
    db, source_env
) -> None:
    users = TABLES_BY_NAME["users"]
    credentials = [c.name for c in users.columns if c.policy is ColumnPolicy.CREDENTIAL]
    assert credentials == ["password_hash", "verification_token"]
    with db.cursor() as cursor:
        cursor.execute("SELECT password_hash, verification_token FROM users")
        secrets = {value for row in cursor.fetchall() for value in row if value}
    assert secrets  # the demo data has credentials to leak

    result = materialize_tables([users], today())

    path = lake_file(source_env, "users", today())
    assert not set(credentials) & set(pq.read_schema(path).names)
    (materialization,) = result.asset_materializations_for_node("sqlgym__users")
    written = [
        path.read_bytes(),
        repr(materialization.metadata).encode(),
        *(p.read_bytes() for p in (source_env / "_metadata").rglob("*.json")),
    ]
    for value in secrets:
        assert not any(value.encode() in blob for blob in written), value


def test_the_monitor_says_a_legacy_table_is_absent_from_the_source(
    app_env, tmp_path, monkeypatch, capsys
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with instance_for_test(temp_dir=str(home)) as instance:
        materialize_tables(["user_progress", "users"], today(), instance=instance)

    monitor.main([])

    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert lines["user_progress"][1:5] == ["-", "-", "-", "absent"]
    assert lines["users"][5] == "-"  # materialized: present, nothing to say
