"""The hourly schedules: which partitions each tick asks for, and the midnight hand-over."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DefaultScheduleStatus, build_schedule_context

from sqlgym_assets.catalog import TABLES, SyncMode
from sqlgym_assets.definitions import defs as load_definitions
from sqlgym_assets.operations.schedules import ScheduleSettingsError
from sqlgym_assets_tests.helpers import lake_file

INCREMENTAL = "sqlgym_hourly_incremental"
SNAPSHOT = "sqlgym_hourly_snapshot"


def _schedule(name: str, definitions=None):
    definitions = definitions or load_definitions()
    return next(schedule for schedule in definitions.schedules if schedule.name == name)


def _tick(name: str, at: datetime, definitions=None) -> list:
    context = build_schedule_context(scheduled_execution_time=at)
    return list(_schedule(name, definitions)(context))


@pytest.mark.parametrize(
    ("hour", "partitions"),
    [
        (13, ["2025-10-24"]),
        (0, ["2025-10-24", "2025-10-23"]),
        (1, ["2025-10-24", "2025-10-23"]),
        (2, ["2025-10-24"]),
        (23, ["2025-10-24"]),
    ],
)
def test_incremental_ticks_refresh_today_and_yesterday_within_the_lookback(
    hour: int, partitions: list[str]
) -> None:
    requests = _tick(INCREMENTAL, datetime(2025, 10, 24, hour, 5, tzinfo=UTC))

    assert [request.partition_key for request in requests] == partitions
    run_keys = [request.run_key for request in requests]
    assert len(set(run_keys)) == len(run_keys)


@pytest.mark.parametrize("hour", [0, 1, 13])
def test_snapshot_ticks_only_ever_ask_for_today(hour: int) -> None:
    requests = _tick(SNAPSHOT, datetime(2025, 10, 24, hour, 5, tzinfo=UTC))

    assert [request.partition_key for request in requests] == ["2025-10-24"]


def test_run_keys_differ_from_tick_to_tick_and_partition_to_partition() -> None:
    keys = [
        request.run_key
        for hour in range(24)
        for request in _tick(INCREMENTAL, datetime(2025, 10, 24, hour, 5, tzinfo=UTC))
    ]
    assert len(keys) == 24 + 2  # yesterday again at 00:05 and 01:05
    assert len(set(keys)) == len(keys)


def test_each_schedule_targets_its_enabled_tables_and_never_the_disabled_ones() -> None:
    definitions = load_definitions()
    targeted = {}
    for name in (INCREMENTAL, SNAPSHOT):
        job = definitions.resolve_job_def(_schedule(name, definitions).job_name)
        targeted[name] = {key.path[-1] for key in job.asset_layer.selected_asset_keys}

    enabled = {table.name: table for table in TABLES if table.enabled}
    assert targeted[INCREMENTAL] == {
        name for name, table in enabled.items() if table.sync_mode is not SyncMode.SNAPSHOT
    }
    assert targeted[SNAPSHOT] == {
        name for name, table in enabled.items() if table.sync_mode is SyncMode.SNAPSHOT
    }
    assert not (
        {"cache_entries", "fallback_submissions"} & (targeted[INCREMENTAL] | targeted[SNAPSHOT])
    )


def test_schedules_run_hourly_in_utc_and_start_running_by_default() -> None:
    for name in (INCREMENTAL, SNAPSHOT):
        schedule = _schedule(name)
        assert schedule.cron_schedule == "5 * * * *"
        assert schedule.execution_timezone == "UTC"
        assert schedule.default_status == DefaultScheduleStatus.RUNNING


def test_environment_sets_minute_lookback_and_stopped_start(monkeypatch) -> None:
    monkeypatch.setenv("SQLGYM_SCHEDULE_MINUTE", "17")
    monkeypatch.setenv("SQLGYM_LOOKBACK_HOURS", "0")
    monkeypatch.setenv("SQLGYM_SCHEDULES_STOPPED", "true")
    definitions = load_definitions()

    schedule = _schedule(INCREMENTAL, definitions)
    assert schedule.cron_schedule == "17 * * * *"
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    # With no lookback the first tick of the day still takes yesterday, the second does not.
    first = _tick(INCREMENTAL, datetime(2025, 10, 24, 0, 17, tzinfo=UTC), definitions)
    second = _tick(INCREMENTAL, datetime(2025, 10, 24, 1, 17, tzinfo=UTC), definitions)
    assert [r.partition_key for r in first] == ["2025-10-24", "2025-10-23"]
    assert [r.partition_key for r in second] == ["2025-10-24"]


def test_a_bad_schedule_setting_fails_loading_naming_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("SQLGYM_SCHEDULE_MINUTE", "75")
    with pytest.raises(ScheduleSettingsError, match="SQLGYM_SCHEDULE_MINUTE"):
        load_definitions()


def test_a_row_changed_just_before_midnight_lands_in_yesterdays_file(
    db, source_env, instance
) -> None:
    """The 23:05 tick has run; a user changes at 23:59:30; the 00:05 tick must pick it up."""
    definitions = load_definitions()
    job = definitions.resolve_job_def("sqlgym_hourly_incremental_job")
    job.execute_in_process(partition_key="2025-03-20", instance=instance)
    assert "late-user" not in _ids(source_env, "2025-03-20")

    with db.cursor() as cursor:
        cursor.execute(
            "INSERT INTO users (id, username, email, created_at, updated_at) "
            "VALUES ('late-user', 'late-user', 'late@example.test', %s, %s)",
            (datetime(2025, 3, 20, 23, 59, 30), datetime(2025, 3, 20, 23, 59, 30)),
        )
    try:
        requests = _tick(INCREMENTAL, datetime(2025, 3, 21, 0, 5, tzinfo=UTC), definitions)
        for request in requests:
            job.execute_in_process(
                partition_key=request.partition_key, instance=instance, tags=request.tags
            )
    finally:
        with db.cursor() as cursor:
            cursor.execute("DELETE FROM users WHERE id = 'late-user'")

    assert [request.partition_key for request in requests] == ["2025-03-21", "2025-03-20"]
    assert "late-user" in _ids(source_env, "2025-03-20")
    assert "late-user" not in _ids(source_env, "2025-03-21")
    latest = instance.fetch_materializations(AssetKey(["sqlgym", "users"]), limit=1).records
    assert latest[0].asset_materialization.partition == "2025-03-20"


def _ids(lake, partition: str) -> set[str]:
    path = lake_file(lake, "users", partition)
    return set(pq.read_table(path, columns=["id"])["id"].to_pylist()) if path.exists() else set()
