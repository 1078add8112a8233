"""Failures that another try cannot mend fail once, clearly, and write nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from dagster import RetryPolicy
from psycopg2 import sql
from sqlalchemy.engine import make_url

from sqlgym_assets.catalog import TABLES_BY_NAME
from sqlgym_assets.source.reader import PostgresResource
from sqlgym_assets_tests.helpers import (
    busiest_day,
    failed_once,
    lake_file,
    materialize_tables,
    point_project_at,
)

USERS = TABLES_BY_NAME["users"]
RETRIES = RetryPolicy(max_retries=2, delay=0.1)


@pytest.mark.parametrize("lake_url", ["s3:/sqlgym-lake", "relative/lake", "gs://bucket/lake"])
def test_a_lake_url_that_is_neither_s3_nor_absolute_fails_once_and_writes_nothing(
    lake_url: str, source_env, monkeypatch, tmp_path: Path
) -> None:
    working_directory = tmp_path / "cwd"
    working_directory.mkdir()
    monkeypatch.chdir(working_directory)
    monkeypatch.setenv("SQLGYM_LAKE_URL", lake_url)

    result = materialize_tables([USERS], "2025-03-10", raise_on_error=False, retry_policy=RETRIES)

    message = failed_once(result)
    assert repr(lake_url) in message
    assert "s3://bucket/prefix" in message
    assert list(working_directory.iterdir()) == []


def test_a_file_url_names_a_local_lake(db, source_env, monkeypatch) -> None:
    monkeypatch.setenv("SQLGYM_LAKE_URL", f"file://{source_env}")
    partition = busiest_day(db, USERS)

    materialize_tables([USERS], partition)

    assert lake_file(source_env, "users", partition).exists()


def _url_as(database_url: str, user: str) -> str:
    return make_url(database_url).set(username=user).render_as_string(hide_password=False)


@pytest.fixture
def user_without_grants(db) -> Iterator[str]:
    """A role that may log in and read nothing: PostgreSQL answers 42501 to its SELECT."""
    role = sql.Identifier("sqlgym_no_grants")
    with db.cursor() as cursor:
        cursor.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))
        cursor.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
        cursor.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(role))
    yield "sqlgym_no_grants"
    with db.cursor() as cursor:
        cursor.execute(sql.SQL("DROP ROLE {}").format(role))


@pytest.mark.parametrize(
    ("user", "expected"),
    [("sqlgym_nobody", "refused the login"), ("sqlgym_no_grants", "permission denied")],
    ids=["unknown-role-28000", "no-select-42501"],
)
def test_a_login_or_grant_the_server_refuses_fails_once(
    user: str, expected: str, database_url, user_without_grants, monkeypatch, tmp_path
) -> None:
    lake = point_project_at(monkeypatch, _url_as(database_url, user), tmp_path / "lake")

    result = materialize_tables([USERS], "2025-03-10", raise_on_error=False, retry_policy=RETRIES)

    message = failed_once(result)
    assert expected in message
    assert not lake.exists() or not any(lake.rglob("*.parquet"))


def test_a_read_behind_a_migrations_lock_times_out_clearly_and_its_retry_succeeds(
    db, database_url, source_env
) -> None:
    """A migration holds ACCESS EXCLUSIVE on users for 4 s; each read gives up after 0.3 s."""
    partition = busiest_day(db, USERS)
    migration = psycopg2.connect(database_url)
    with migration.cursor() as cursor:
        cursor.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    released = threading.Timer(4, migration.rollback)
    released.start()
    try:
        result = materialize_tables(
            [USERS],
            partition,
            postgres=PostgresResource(lock_timeout_seconds=0.3),
            retry_policy=RetryPolicy(max_retries=4, delay=1.5),
        )
    finally:
        released.join()
        migration.close()

    assert result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries
    message = retries[0].event_specific_data.error.to_string()
    assert "lock timeout" in message and "public.users" in message
