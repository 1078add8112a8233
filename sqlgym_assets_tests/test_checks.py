"""The four checks on each partition: clean data passes, each kind of damage fails with the
right counts and keys, results are kept per day, and great-expectations stays out of loading."""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    ExecuteInProcessResult,
    materialize,
)
from psycopg2 import sql

from sqlgym_assets.assets import LAKE_IO_MANAGER_KEY, build_lake_asset
from sqlgym_assets.catalog import TABLES, TABLES_BY_NAME, SyncMode, TableSpec
from sqlgym_assets.definitions import defs
from sqlgym_assets.quality import checks as checks_module
from sqlgym_assets.quality import keys as keys_module
from sqlgym_assets.quality.checks import MAX_REPORTED_KEYS
from sqlgym_assets.quality.keys import key_buckets
from sqlgym_assets.quality.reconciliation import KEYS_MATCH_SOURCE as KEYS
from sqlgym_assets.source.reader import PostgresResource
from sqlgym_assets_tests.helpers import (
    assert_checks_of_one_synced_day,
    assert_runs_in_a_fresh_interpreter,
    busiest_day,
    check_evaluations,
    env_lake,
    lake_file,
    materialize_tables,
    today,
)

USERS = TABLES_BY_NAME["users"]
USERS_KEY = AssetKey(["sqlgym", "users"])
BLOCKING_CHECKS = {
    "row_count_matches_source",
    "no_null_required_columns",
    "no_duplicate_primary_keys",
}


def evaluations(result: ExecuteInProcessResult) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def check_partition(
    partition: str, instance: DagsterInstance, table: TableSpec = USERS
) -> ExecuteInProcessResult:
    """Runs only the checks of sqlgym/users (keyed as ``table`` says) on a partition in the lake."""
    return materialize(
        [build_lake_asset(table)],
        selection=AssetSelection.checks_for_assets(USERS_KEY),
        # The partition travels as a run tag, as in a run launched from the UI: materialize's
        # partition_key argument insists on a selected asset.
        tags={"dagster/partition": partition},
        instance=instance,
        raise_on_error=False,
        resources={"postgres": PostgresResource(), LAKE_IO_MANAGER_KEY: env_lake()},
    )


@pytest.fixture
def written_day(db, source_env, instance) -> Iterator[tuple[str, pa.Table]]:
    """A clean users partition materialized into the lake, and what was written."""
    partition = busiest_day(db, USERS)
    materialize_tables([USERS], partition, instance=instance)
    yield partition, pq.read_table(lake_file(source_env, "users", partition))


# The checks' two paths: all keys in one bucket (a normal day), and keys hashed into buckets of
# two, spilled and read back a bucket at a time (as a day larger than KEYS_PER_BUCKET is).
KEYS_PER_BUCKET_CASES = pytest.mark.parametrize(
    "keys_per_bucket",
    [keys_module.KEYS_PER_BUCKET, 2],
    ids=["one_bucket", "buckets_of_two"],
    indirect=True,
)


@pytest.fixture
def keys_per_bucket(request, monkeypatch) -> int:
    monkeypatch.setattr(keys_module, "KEYS_PER_BUCKET", request.param)
    return request.param


def shuffled(table: pa.Table) -> pa.Table:
    """The rows in a fixed random order, so copies of a row land in far-apart row groups."""
    return table.take(random.Random(7).sample(range(table.num_rows), table.num_rows))


@KEYS_PER_BUCKET_CASES
def test_clean_partition_passes_every_check_with_the_counts_in_metadata(
    db, source_env, instance, keys_per_bucket
) -> None:
    partition = busiest_day(db, USERS)
    result = materialize_tables([USERS], partition, instance=instance)

    checks = evaluations(result)
    rows = pq.read_metadata(lake_file(source_env, "users", partition)).num_rows
    assert_checks_of_one_synced_day(checks, db, USERS, rows)
    count = checks["row_count_matches_source"].metadata
    assert (count["expected"].value, count["observed"].value, count["difference"].value) == (
        rows,
        rows,
        0,
    )
    assert checks["no_null_required_columns"].metadata["null_counts"].value["email"] == 0
    assert checks["no_duplicate_primary_keys"].metadata["duplicate_rows"].value == 0


@pytest.mark.parametrize("rows_per_validation", [None, 4], ids=["default", "4 rows"])
def test_nulls_in_required_columns_fail_with_counts_and_keys(
    written_day, source_env, instance, monkeypatch, rows_per_validation
) -> None:
    if rows_per_validation is not None:  # runs of two 2-row groups: the NULLs in different runs
        monkeypatch.setattr(checks_module, "NULL_CHECKED_ROWS", rows_per_validation)
    partition, clean = written_day
    assert clean.num_rows > 4  # so the last row is in a later run of 4 rows
    broken_ids = [clean["id"][0].as_py(), clean["id"][-1].as_py()]  # first and last row group
    emails = [
        None if user_id in broken_ids else email
        for user_id, email in zip(clean["id"].to_pylist(), clean["email"].to_pylist(), strict=True)
    ]
    broken = clean.set_column(
        clean.schema.get_field_index("email"), "email", pa.array(emails, pa.string())
    )
    # An all-NULL nullable column is allowed: only NOT NULL columns are checked.
    broken = broken.set_column(
        broken.schema.get_field_index("google_id"),
        "google_id",
        pa.nulls(broken.num_rows, pa.string()),
    )
    # Tiny row groups: the NULL check reads runs of them and must add the runs up.
    pq.write_table(broken, lake_file(source_env, "users", partition), row_group_size=2)

    checks = evaluations(check_partition(partition, instance))

    nulls = checks["no_null_required_columns"]
    assert not nulls.passed
    assert nulls.severity == AssetCheckSeverity.ERROR
    assert nulls.metadata["null_counts"].value["email"] == 2
    assert nulls.metadata["null_counts"].value["id"] == 0
    assert "google_id" not in nulls.metadata["null_counts"].value
    assert sorted(nulls.metadata["offending_primary_keys"].value["email"]) == sorted(broken_ids)
    assert checks["row_count_matches_source"].passed
    assert checks["no_duplicate_primary_keys"].passed


def test_duplicate_keys_fail_with_the_duplicated_values(written_day, source_env, instance) -> None:
    partition, clean = written_day
    pq.write_table(
        pa.concat_tables([clean, clean.slice(0, 3)]), lake_file(source_env, "users", partition)
    )

    checks = evaluations(check_partition(partition, instance))

    duplicates = checks["no_duplicate_primary_keys"]
    assert not duplicates.passed
    assert duplicates.metadata["duplicate_rows"].value == 6
    assert sorted(duplicates.metadata["duplicated_keys"].value) == sorted(
        clean["id"].to_pylist()[:3]
    )
    count = checks["row_count_matches_source"]
    assert not count.passed
    assert count.metadata["difference"].value == 3


@KEYS_PER_BUCKET_CASES
def test_duplicates_in_any_row_group_and_bucket_are_all_counted(
    written_day, source_env, instance, keys_per_bucket
) -> None:
    partition, clean = written_day
    ids = clean["id"].to_pylist()
    # The first key three times more, the next two once more: 4 + 2 + 2 rows share a key.
    damaged = shuffled(pa.concat_tables([clean, clean.take([0, 0, 0, 1, 2])]))
    pq.write_table(damaged, lake_file(source_env, "users", partition), row_group_size=2)

    checks = evaluations(check_partition(partition, instance))

    duplicates = checks["no_duplicate_primary_keys"]
    assert not duplicates.passed
    assert duplicates.metadata["duplicate_rows"].value == 4 + 2 + 2
    assert sorted(duplicates.metadata["duplicated_keys"].value) == sorted(ids[:3])
    count = checks["row_count_matches_source"].metadata
    assert (count["observed"].value, count["difference"].value) == (clean.num_rows + 5, 5)
    assert checks["no_null_required_columns"].passed


@KEYS_PER_BUCKET_CASES
def test_many_duplicated_keys_report_at_most_the_limit(
    written_day, source_env, instance, keys_per_bucket
) -> None:
    partition, clean = written_day
    duplicated = [f"dup-{number:02d}" for number in range(MAX_REPORTED_KEYS + 10)]
    copies = clean.take([0] * 2 * len(duplicated))
    copies = copies.set_column(
        copies.schema.get_field_index("id"), "id", pa.array(duplicated * 2, pa.string())
    )
    damaged = shuffled(pa.concat_tables([clean, copies]))
    pq.write_table(damaged, lake_file(source_env, "users", partition), row_group_size=3)

    duplicates = evaluations(check_partition(partition, instance))["no_duplicate_primary_keys"]

    assert not duplicates.passed
    assert duplicates.metadata["duplicate_rows"].value == 2 * len(duplicated)
    reported = duplicates.metadata["duplicated_keys"].value
    assert 0 < len(reported) <= MAX_REPORTED_KEYS
    assert len(set(reported)) == len(reported)
    assert set(reported) <= set(duplicated)


@KEYS_PER_BUCKET_CASES
def test_a_compound_key_is_duplicated_only_when_all_its_columns_repeat(
    written_day, source_env, instance, keys_per_bucket
) -> None:
    partition, clean = written_day
    by_id_and_name = replace(USERS, primary_key=("id", "username"))
    renamed = clean.slice(0, 1)
    renamed = renamed.set_column(
        renamed.schema.get_field_index("username"), "username", pa.array(["someone-else"])
    )
    # Row 0's id again under another username (no duplicate), row 1 twice more (3 rows).
    damaged = shuffled(pa.concat_tables([clean, renamed, clean.take([1, 1])]))
    pq.write_table(damaged, lake_file(source_env, "users", partition), row_group_size=2)

    checks = evaluations(check_partition(partition, instance, by_id_and_name))

    duplicates = checks["no_duplicate_primary_keys"]
    assert not duplicates.passed
    assert duplicates.metadata["duplicate_rows"].value == 3
    row = clean.slice(1, 1).to_pylist()[0]
    assert duplicates.metadata["duplicated_keys"].value == [f"{row['id']}, {row['username']}"]
    assert checks["row_count_matches_source"].metadata["difference"].value == 3


def test_key_buckets_hold_every_row_once_and_equal_keys_together(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(keys_module, "KEYS_PER_BUCKET", 4)
    spill_root = tmp_path / "spill"
    spill_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_root))
    # A compound key with NULL parts; each key occurs several times, in different row groups.
    rows = [(f"user-{n % 7}", None if n % 5 == 0 else n % 2) for n in range(40)]
    table = pa.table(
        {"id": [r[0] for r in rows], "attempt": pa.array([r[1] for r in rows], pa.int32())}
    )
    pq.write_table(shuffled(table), tmp_path / "keys.parquet", row_group_size=5)

    buckets = [
        [(row["id"], row["attempt"]) for row in pa.Table.from_pandas(bucket).to_pylist()]
        for bucket in key_buckets(pq.ParquetFile(tmp_path / "keys.parquet"), ["id", "attempt"])
    ]

    assert len(buckets) > 1
    assert Counter(key for bucket in buckets for key in bucket) == Counter(rows)
    bucket_of = {}
    for number, bucket in enumerate(buckets):
        for key in bucket:
            assert bucket_of.setdefault(key, number) == number
    assert list(spill_root.iterdir()) == []  # the spilled keys are gone


def test_a_file_with_fewer_rows_than_the_source_count_fails(
    written_day, source_env, instance
) -> None:
    partition, clean = written_day
    pq.write_table(clean.slice(2), lake_file(source_env, "users", partition))

    checks = evaluations(check_partition(partition, instance))

    count = checks["row_count_matches_source"]
    assert not count.passed
    assert count.metadata["expected"].value == clean.num_rows
    assert count.metadata["observed"].value == clean.num_rows - 2
    assert count.metadata["difference"].value == -2
    assert checks["no_null_required_columns"].passed


def test_a_file_missing_a_required_column_fails_the_data_checks(
    written_day, source_env, instance
) -> None:
    partition, clean = written_day
    pq.write_table(clean.drop_columns(["email"]), lake_file(source_env, "users", partition))

    checks = evaluations(check_partition(partition, instance))

    for name in ("no_null_required_columns", "no_duplicate_primary_keys"):
        assert not checks[name].passed
        assert checks[name].metadata["missing_columns"].value == ["email"]
    differences = checks["schema_matches_source"].metadata["file_schema_differences"].value
    assert differences["missing"] == ["email"]


def test_checks_on_a_partition_never_written_fail_clearly(source_env, instance) -> None:
    result = check_partition("2025-02-03", instance)

    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert "2025-02-03" in message
    assert "materialize the partition" in message


def test_a_column_added_upstream_is_a_schema_warning(db, source_env, instance) -> None:
    partition = busiest_day(db, USERS)
    with db.cursor() as cursor:
        cursor.execute("ALTER TABLE users ADD COLUMN nickname text")
    try:
        result = materialize_tables([USERS], partition, instance=instance)
    finally:
        with db.cursor() as cursor:
            cursor.execute("ALTER TABLE users DROP COLUMN nickname")

    assert result.success
    schema = evaluations(result)["schema_matches_source"]
    assert not schema.passed
    assert schema.severity == AssetCheckSeverity.WARN
    assert schema.metadata["added_columns"].value == ["nickname"]
    assert schema.metadata["removed_columns"].value == []
    assert schema.metadata["changed_columns"].value == {}
    assert schema.metadata["converted_columns"].value == []


@pytest.fixture
def auth_provider_nullable(db) -> Iterator[None]:
    """The source drops a NOT NULL the catalog relies on (and later restores it)."""
    with db.cursor() as cursor:
        cursor.execute("ALTER TABLE users ALTER COLUMN auth_provider DROP NOT NULL")
        cursor.execute("SELECT id, auth_provider FROM users")
        original = cursor.fetchall()
    yield
    with db.cursor() as cursor:
        for user_id, provider in original:
            cursor.execute("UPDATE users SET auth_provider = %s WHERE id = %s", (provider, user_id))
        cursor.execute("ALTER TABLE users ALTER COLUMN auth_provider SET NOT NULL")


def _days_with_users(db) -> list[str]:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT updated_at::date AS d FROM users GROUP BY d ORDER BY count(*) DESC LIMIT 2"
        )
        return [day.isoformat() for (day,) in cursor.fetchall()]


def test_results_are_kept_per_partition(db, source_env, instance, auth_provider_nullable) -> None:
    clean_day, bad_day = _days_with_users(db)
    with db.cursor() as cursor:
        # A raw-SQL update, as the app's own scripts do: updated_at does not move.
        cursor.execute(
            sql.SQL("UPDATE users SET auth_provider = NULL WHERE updated_at::date = %s"),
            (bad_day,),
        )

    runs = {
        clean_day: materialize_tables([USERS], clean_day, instance=instance),
        bad_day: materialize_tables([USERS], bad_day, instance=instance, raise_on_error=False),
    }

    history = {}
    for day, result in runs.items():
        # What the instance keeps of each run, read back from its storage.
        (evaluation,) = [
            evaluation
            for evaluation in check_evaluations(instance, result.run_id)
            if evaluation.check_name == "no_null_required_columns"
        ]
        history[day] = evaluation
    assert history[clean_day].passed
    assert history[clean_day].partition == clean_day
    assert not history[bad_day].passed
    assert history[bad_day].partition == bad_day
    assert history[bad_day].metadata["null_counts"].value["auth_provider"] > 0


def test_definitions_load_without_importing_great_expectations() -> None:
    assert_runs_in_a_fresh_interpreter(
        "import sys; from sqlgym_assets.definitions import defs; defs().resolve_asset_graph(); "
        "assert 'great_expectations' not in sys.modules, 'imported at load'"
    )


def test_definitions_declare_partitioned_checks_errors_blocking_windowed_tables_reconciled() -> (
    None
):
    graph = defs().resolve_asset_graph()
    windowed = [table for table in TABLES if table.sync_mode is not SyncMode.SNAPSHOT]
    assert len(graph.asset_check_keys) == 4 * len(TABLES) + len(windowed) == 84 + 11
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        assert spec.partitions_def is not None
        assert spec.blocking == (check_key.name in BLOCKING_CHECKS)
    reconciled = {key.asset_key.path[-1] for key in graph.asset_check_keys if key.name == KEYS}
    assert reconciled == {table.name for table in windowed}


def test_the_lake_checks_job_revalidates_a_day_without_extracting(db, source_env, instance) -> None:
    day = today()
    materialize_tables(TABLES, day, instance=instance)

    result = (
        defs()
        .resolve_job_def("sqlgym_lake_checks")
        .execute_in_process(tags={"dagster/partition": day}, instance=instance)
    )

    assert result.success
    assert not result.get_asset_materialization_events()
    for table in TABLES:
        checks = {
            e.check_name: e
            for e in result.get_asset_check_evaluations()
            if e.asset_key.path[-1] == table.name and e.partition == day
        }
        rows = pq.read_metadata(lake_file(source_env, table.name, day)).num_rows
        assert_checks_of_one_synced_day(checks, db, table, rows)
