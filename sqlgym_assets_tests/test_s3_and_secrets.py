"""The production path: credentials from Secrets Manager and the lake on S3, against moto's server.

moto runs as a real HTTP server (the ``aws_env`` fixture points ``AWS_ENDPOINT_URL`` at it), the
database is the tests' embedded PostgreSQL, and every run is a real ``materialize``.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
from dagster import (
    AssetIn,
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    RetryPolicy,
    asset,
    materialize,
)
from sqlalchemy.engine import make_url

from sqlgym_assets.assets import DAILY_PARTITIONS, LAKE_IO_MANAGER_KEY, build_assets
from sqlgym_assets.catalog import TABLES_BY_NAME
from sqlgym_assets.lake.layout import lake_settings
from sqlgym_assets.lake.reader import read_table
from sqlgym_assets.source.reader import PostgresResource
from sqlgym_assets_tests.helpers import (
    by_key,
    env_lake,
    failed_once,
    lake_rows,
    materialize_tables,
    source_rows,
    window_for,
)

USERS = TABLES_BY_NAME["users"]
PASSWORD = "pw-SHOULD-NEVER-APPEAR-7f3a"
PREFIX = "postgres-sync"


def unique(name: str) -> str:
    """Bucket and secret names are unique per test: the resource caches secrets per process."""
    return f"{name}-{uuid.uuid4().hex[:12]}"


def busiest_users_day(connection) -> str:
    """The UTC day holding most users rows (``updated_at`` is a naive UTC timestamp)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT updated_at::date AS d FROM users GROUP BY d ORDER BY count(*) DESC, d LIMIT 1"
        )
        return cursor.fetchone()[0].isoformat()


def secret_for(database_url: str) -> dict[str, object]:
    """The test database as a Secrets Manager secret; libpq takes a socket directory as host."""
    url = make_url(database_url)
    return {
        "host": url.query.get("host") or url.host,
        "port": url.port or 5432,
        "database": url.database,
        "username": url.username,
        "password": url.password or PASSWORD,  # the embedded server trusts any password
    }


def create_secret(secret_string: str) -> str:
    name = unique("sqlgym/test-db")
    boto3.client("secretsmanager").create_secret(Name=name, SecretString=secret_string)
    return name


def create_bucket() -> str:
    bucket = unique("sqlgym-lake")
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket


def bucket_keys(bucket: str) -> list[str]:
    response = boto3.client("s3").list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in response.get("Contents", [])]


def use_secret_and_bucket(monkeypatch: pytest.MonkeyPatch, secret_id: str, bucket: str) -> None:
    monkeypatch.setenv("SQLGYM_DB_SECRET_ID", secret_id)
    monkeypatch.delenv("SQLGYM_DATABASE_URL", raising=False)
    monkeypatch.setenv("SQLGYM_LAKE_URL", f"s3://{bucket}/{PREFIX}")


def users_key(partition: str) -> str:
    day = partition.replace("-", "")
    return f"{PREFIX}/users/{day[:4]}/{day[4:6]}/{day[6:]}/users_{day}.parquet"


def download(bucket: str, key: str, tmp_path: Path) -> Path:
    path = tmp_path / "downloaded.parquet"
    boto3.client("s3").download_file(bucket, key, str(path))
    return path


def failure_messages(result: ExecuteInProcessResult) -> str:
    failures = [event for event in result.all_events if event.is_step_failure]
    return "\n".join(event.step_failure_data.error.to_string() for event in failures)


def everything_logged(
    instance: DagsterInstance,
    result: ExecuteInProcessResult,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> str:
    """All the text a run left behind: failures, the event log, stdout/stderr, log records."""
    texts = [failure_messages(result)]
    for record in instance.all_logs(result.run_id):
        texts.append(record.user_message)
        texts.append(repr(record.dagster_event))
    captured = capsys.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    return "\n".join(texts)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Values no message may carry; the host and port of the closed-port case may show.
DISTINCT_SECRET = {
    "host": "db-host-never-shown.invalid",
    "port": 6543,
    "database": "db-name-never-shown",
    "username": "db-user-never-shown",
    "password": PASSWORD,
}


def without(key: str) -> str:
    return json.dumps({name: value for name, value in DISTINCT_SECRET.items() if name != key})


BAD_SECRETS = {
    "missing-password": (without("password"), ["lacks", "'password'"]),
    "missing-host": (without("host"), ["lacks", "'host'"]),
    "not-json": (f"postgresql://db-user-never-shown:{PASSWORD}@db/x", ["not a JSON object"]),
}


def test_s3_end_to_end_with_credentials_from_secrets_manager(
    s3_server_env, database_url, db, monkeypatch, tmp_path
) -> None:
    bucket = create_bucket()
    secret_id = create_secret(json.dumps(secret_for(database_url)))
    use_secret_and_bucket(monkeypatch, secret_id, bucket)
    partition = busiest_users_day(db)

    result = materialize_tables([USERS], partition, raise_on_error=False)

    assert result.success, failure_messages(result)
    key = users_key(partition)
    keys = bucket_keys(bucket)
    (record_key,) = [k for k in keys if k.startswith(f"{PREFIX}/_metadata/users/")]
    key_set = f"{PREFIX}/_keys/users/users_keys.parquet"
    key_index = f"{PREFIX}/_key_index/users/users_index.parquet"
    assert sorted(keys) == sorted([key, record_key, key_set, key_index])
    s3 = boto3.client("s3")
    for written in keys:
        assert s3.head_object(Bucket=bucket, Key=written)["ServerSideEncryption"] == "AES256"
    expected = source_rows(db, USERS, window_for(USERS, partition))
    actual = lake_rows(USERS, download(bucket, key, tmp_path))
    assert expected, f"the demo data has no users on {partition}"
    assert len(actual) == len(expected)
    assert by_key(actual) == by_key(expected)
    (materialization,) = result.asset_materializations_for_node("sqlgym__users")
    assert materialization.metadata["dagster/uri"].value == f"s3://{bucket}/{key}"
    record = json.loads(s3.get_object(Bucket=bucket, Key=record_key)["Body"].read())
    assert record["file_uri"] == f"s3://{bucket}/{key}"
    assert (record["rows"], record["source_row_count"]) == (len(expected), len(expected))
    assert (record["partition"], record["status"], record["mode"]) == (
        partition,
        "success",
        "incremental",
    )


def test_s3_objects_use_the_configured_kms_key(aws_env, source_env, db, monkeypatch) -> None:
    bucket = create_bucket()
    monkeypatch.setenv("SQLGYM_LAKE_URL", f"s3://{bucket}/{PREFIX}")
    key_id = boto3.client("kms").create_key(Description="sqlgym lake")["KeyMetadata"]["KeyId"]
    partition = busiest_users_day(db)

    materialize_tables([USERS], partition, lake=env_lake(kms_key_id=key_id))

    head = boto3.client("s3").head_object(Bucket=bucket, Key=users_key(partition))
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].split("/")[-1] == key_id


def test_the_lake_reads_partitions_back_from_s3(s3_server_env, source_env, db, monkeypatch) -> None:
    bucket = create_bucket()
    lake_url = f"s3://{bucket}/{PREFIX}"
    monkeypatch.setenv("SQLGYM_LAKE_URL", lake_url)
    partition = busiest_users_day(db)
    materialize_tables([USERS], partition)
    expected_ids = {row["id"] for row in source_rows(db, USERS, window_for(USERS, partition))}

    table = read_table(lake_settings(lake_url), f"s3://{bucket}/{users_key(partition)}")

    assert set(table.column("id").to_pylist()) == expected_ids
    assert table.schema.names == list(USERS.column_names)


def test_a_downstream_asset_loads_the_partition_from_s3(
    s3_server_env, source_env, db, monkeypatch
) -> None:
    bucket = create_bucket()
    monkeypatch.setenv("SQLGYM_LAKE_URL", f"s3://{bucket}/{PREFIX}")
    partition = busiest_users_day(db)
    materialize_tables([USERS], partition)

    @asset(
        ins={"users": AssetIn(key=AssetKey(["sqlgym", "users"]))},
        partitions_def=DAILY_PARTITIONS,
    )
    def user_ids(users: pa.Table) -> list[str]:
        return sorted(users.column("id").to_pylist())

    result = materialize(
        [*build_assets((USERS,)), user_ids],
        selection=[user_ids.key],
        partition_key=partition,
        resources={"postgres": PostgresResource(), LAKE_IO_MANAGER_KEY: env_lake()},
    )

    expected = sorted(row["id"] for row in source_rows(db, USERS, window_for(USERS, partition)))
    assert result.output_for_node("user_ids") == expected


def assert_nothing_leaks(text: str, secret_string: str, values: list[str]) -> None:
    for value in [secret_string, *values]:
        at = text.find(value)
        assert at < 0, f"{value!r} leaked: ...{text[max(0, at - 300) : at + 100]}..."


@pytest.mark.parametrize("case", list(BAD_SECRETS))
def test_a_bad_secret_fails_naming_the_secret_and_never_a_value(
    case: str, aws_env, instance, monkeypatch, capsys, caplog
) -> None:
    caplog.set_level(logging.DEBUG)  # botocore logs response bodies at DEBUG
    secret_string, expected_words = BAD_SECRETS[case]
    secret_id = create_secret(secret_string)
    bucket = create_bucket()
    use_secret_and_bucket(monkeypatch, secret_id, bucket)
    capsys.readouterr()
    caplog.clear()  # only what the run leaves behind counts, not this test's own set-up

    result = materialize_tables([USERS], "2025-03-10", instance=instance, raise_on_error=False)

    assert not result.success
    message = failure_messages(result)
    assert repr(secret_id) in message
    for word in expected_words:
        assert word in message
    values = [str(value) for name, value in DISTINCT_SECRET.items() if name != "port"]
    assert_nothing_leaks(everything_logged(instance, result, capsys, caplog), secret_string, values)
    assert bucket_keys(bucket) == []


def test_a_secret_that_does_not_exist_fails_naming_it(aws_env, instance, monkeypatch) -> None:
    secret_id = unique("sqlgym/no-such-secret")
    bucket = create_bucket()
    use_secret_and_bucket(monkeypatch, secret_id, bucket)

    result = materialize_tables([USERS], "2025-03-10", instance=instance, raise_on_error=False)

    assert not result.success
    message = failure_messages(result)
    assert repr(secret_id) in message
    assert "ResourceNotFoundException" in message
    assert bucket_keys(bucket) == []


def test_a_refused_connection_names_the_secret_and_never_the_password(
    aws_env, instance, monkeypatch, capsys, caplog
) -> None:
    caplog.set_level(logging.DEBUG)  # botocore logs response bodies at DEBUG
    secret_string = json.dumps({**DISTINCT_SECRET, "host": "127.0.0.1", "port": closed_port()})
    secret_id = create_secret(secret_string)
    bucket = create_bucket()
    use_secret_and_bucket(monkeypatch, secret_id, bucket)
    capsys.readouterr()
    caplog.clear()

    result = materialize_tables([USERS], "2025-03-10", instance=instance, raise_on_error=False)

    assert not result.success
    message = failure_messages(result)
    assert "could not connect" in message
    assert repr(secret_id) in message
    assert_nothing_leaks(
        everything_logged(instance, result, capsys, caplog), secret_string, [PASSWORD]
    )
    assert bucket_keys(bucket) == []


def test_no_database_configured_names_both_variables(instance, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("SQLGYM_DB_SECRET_ID", raising=False)
    monkeypatch.delenv("SQLGYM_DATABASE_URL", raising=False)
    monkeypatch.setenv("SQLGYM_LAKE_URL", str(tmp_path / "lake"))

    result = materialize_tables([USERS], "2025-03-10", instance=instance, raise_on_error=False)

    assert not result.success
    message = failure_messages(result)
    assert "SQLGYM_DB_SECRET_ID" in message
    assert "SQLGYM_DATABASE_URL" in message
    assert not (tmp_path / "lake").exists() or not any((tmp_path / "lake").rglob("*.parquet"))


def test_the_secret_wins_over_the_database_url(
    s3_server_env, database_url, db, monkeypatch, tmp_path
) -> None:
    bucket = create_bucket()
    secret_id = create_secret(json.dumps(secret_for(database_url)))
    use_secret_and_bucket(monkeypatch, secret_id, bucket)
    nowhere = tmp_path / "no-server-here"
    monkeypatch.setenv("SQLGYM_DATABASE_URL", f"postgresql://postgres@/sqlgym_test?host={nowhere}")
    partition = busiest_users_day(db)

    result = materialize_tables([USERS], partition, raise_on_error=False)

    assert result.success, failure_messages(result)
    (materialization,) = result.asset_materializations_for_node("sqlgym__users")
    expected = source_rows(db, USERS, window_for(USERS, partition))
    assert materialization.metadata["dagster/row_count"].value == len(expected)
    assert users_key(partition) in bucket_keys(bucket)


def test_a_bad_secret_fails_once_without_retry(aws_env, instance, monkeypatch) -> None:
    secret_id = create_secret(without("password"))
    use_secret_and_bucket(monkeypatch, secret_id, create_bucket())

    result = materialize_tables(
        [USERS],
        "2025-03-10",
        instance=instance,
        raise_on_error=False,
        retry_policy=RetryPolicy(max_retries=3, delay=0.1),
    )

    failed_once(result)


def test_an_rds_managed_secret_is_accepted_as_aws_writes_it(
    s3_server_env, database_url, db, monkeypatch
) -> None:
    """RDS writes "dbname", may give the port as text, and adds "engine" and other keys."""
    ours = secret_for(database_url)
    rds = {
        "engine": "postgres",
        "host": ours["host"],
        "username": ours["username"],
        "password": ours["password"],
        "dbname": ours["database"],
        "port": str(ours["port"]),
        "dbInstanceIdentifier": "sqlgym-prod",
    }
    bucket = create_bucket()
    use_secret_and_bucket(monkeypatch, create_secret(json.dumps(rds)), bucket)
    partition = busiest_users_day(db)

    result = materialize_tables([USERS], partition, raise_on_error=False)

    assert result.success, failure_messages(result)
    (materialization,) = result.asset_materializations_for_node("sqlgym__users")
    expected = source_rows(db, USERS, window_for(USERS, partition))
    assert materialization.metadata["dagster/row_count"].value == len(expected) > 0
    assert users_key(partition) in bucket_keys(bucket)
