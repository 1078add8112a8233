"""Personal data in the lake: pseudonymized with a keyed hash by default, joinable, never raw."""

from __future__ import annotations

import uuid

import boto3
import pyarrow.parquet as pq
import pytest
from dagster import RetryPolicy

from sqlgym_assets.catalog import TABLES_BY_NAME, ColumnPolicy
from sqlgym_assets.source.pseudonymize import KEY_ENV, KEY_SECRET_ENV, PERSONAL_DATA_ENV
from sqlgym_assets_tests.helpers import (
    busiest_day,
    by_key,
    failed_once,
    keyed_hash,
    lake_file,
    lake_rows,
    materialize_tables,
    source_rows,
    window_for,
)

USERS = TABLES_BY_NAME["users"]
PERSONAL = [c.name for c in USERS.columns if c.policy is ColumnPolicy.PERSONAL]


def test_personal_columns_hold_the_keyed_hash_of_the_source_value_and_nothing_raw(
    db, source_env
) -> None:
    partition = busiest_day(db, USERS)
    result = materialize_tables([USERS], partition)

    path = lake_file(source_env, "users", partition)
    raw = by_key(source_rows(db, USERS, window_for(USERS, partition), pseudonymized=False))
    lake = by_key(lake_rows(USERS, path))
    assert raw and set(lake) == set(raw)
    assert PERSONAL == [
        "email", "first_name", "last_name", "linkedin_url", "profile_image_url", "google_id",
    ]  # fmt: skip
    for user_id, row in raw.items():
        for column in PERSONAL:
            expected = None if row[column] is None else keyed_hash(row[column])
            assert lake[user_id][column] == expected, (user_id, column)
    blob = path.read_bytes()
    assert not any(row["email"].encode() in blob for row in raw.values())
    (materialization,) = result.asset_materializations_for_node("sqlgym__users")
    assert materialization.metadata["sqlgym/pseudonymized_columns"].value == PERSONAL
    schema = materialization.metadata["dagster/column_schema"].value
    assert {c.name: c.type for c in schema.columns}["email"] == "string"


def test_keep_copies_personal_data_as_it_is(db, source_env, monkeypatch) -> None:
    monkeypatch.setenv(PERSONAL_DATA_ENV, "keep")
    monkeypatch.delenv(KEY_ENV)
    partition = busiest_day(db, USERS)

    materialize_tables([USERS], partition)

    expected = source_rows(db, USERS, window_for(USERS, partition), pseudonymized=False)
    actual = lake_rows(USERS, lake_file(source_env, "users", partition))
    assert by_key(actual) == by_key(expected)


@pytest.mark.parametrize(
    ("key", "named"),
    [(None, [KEY_SECRET_ENV, KEY_ENV, PERSONAL_DATA_ENV]), ("short", ["32", KEY_ENV])],
    ids=["no-key", "short-key"],
)
def test_pseudonymizing_without_a_usable_key_fails_once_and_writes_nothing(
    key, named, source_env, monkeypatch
) -> None:
    if key is None:
        monkeypatch.delenv(KEY_ENV)
    else:
        monkeypatch.setenv(KEY_ENV, key)

    result = materialize_tables(
        [USERS], "2025-03-10", raise_on_error=False, retry_policy=RetryPolicy(max_retries=2)
    )

    message = failed_once(result)
    for part in named:
        assert part in message
    if key is not None:
        assert key not in message.replace(KEY_ENV, "")
    assert not source_env.exists() or not any(source_env.rglob("*.parquet"))


def test_the_key_can_come_from_secrets_manager(db, source_env, aws_env, monkeypatch) -> None:
    key = f"secret-key-{uuid.uuid4().hex}"
    secret_id = f"sqlgym/pseudonymization-{uuid.uuid4().hex[:8]}"
    boto3.client("secretsmanager").create_secret(Name=secret_id, SecretString=key)
    monkeypatch.setenv(KEY_SECRET_ENV, secret_id)
    monkeypatch.delenv(KEY_ENV)
    partition = busiest_day(db, USERS)

    materialize_tables([USERS], partition)

    raw = by_key(source_rows(db, USERS, window_for(USERS, partition), pseudonymized=False))
    emails = pq.read_table(lake_file(source_env, "users", partition), columns=["id", "email"])
    for user_id, email in zip(emails["id"].to_pylist(), emails["email"].to_pylist(), strict=True):
        assert email == keyed_hash(raw[user_id]["email"], key)
