"""Single-run backfills: a range of days is one run, in which each day is read in its own
snapshot, written atomically, recorded and checked, and a day that fails loses no other day."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RetryPolicy,
    materialize,
)

from sqlgym_assets.assets import LAKE_IO_MANAGER_KEY, build_assets
from sqlgym_assets.catalog import TABLES_BY_NAME, TableSpec
from sqlgym_assets.quality.checks import check_names
from sqlgym_assets.quality.reconciliation import KEYS_MATCH_SOURCE
from sqlgym_assets.source.pseudonymize import KEY_ENV
from sqlgym_assets.source.reader import PostgresResource
from sqlgym_assets_tests.helpers import (
    REPOSITORY_ROOT,
    by_key,
    check_evaluations,
    env_lake,
    failed_once,
    graphql,
    lake_file,
    lake_rows,
    run_command,
    service,
    source_rows,
    today,
    wait_for_webserver,
    window_for,
)

USERS, SUBMISSIONS, BADGES = (TABLES_BY_NAME[name] for name in ("users", "submissions", "badges"))
RANGE_TABLES = (USERS, SUBMISSIONS, BADGES)
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def _days_up_to_today(count: int) -> list[str]:
    last = date.fromisoformat(today())
    return [(last - timedelta(days=back)).isoformat() for back in range(count - 1, -1, -1)]


def _selection(tables: tuple[TableSpec, ...]) -> str:
    return ",".join(f"sqlgym/{table.name}" for table in tables)


def _instance_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def _evaluations(instance: DagsterInstance, run_id: str) -> dict[tuple[str, str, str], object]:
    """Every check evaluation of the run, by (table, check, day)."""
    evaluations = {}
    for evaluation in check_evaluations(instance, run_id):
        key = (evaluation.asset_key.path[-1], evaluation.check_name, evaluation.partition)
        assert key not in evaluations, f"{key} evaluated twice"
        evaluations[key] = evaluation
    return evaluations


def _materialized_days(instance: DagsterInstance, run_id: str) -> Counter[tuple[str, str]]:
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    events = [record.event_log_entry.dagster_event for record in records]
    return Counter((event.asset_key.path[-1], event.partition) for event in events)


def _assert_day_equals_source(db, lake: Path, table: TableSpec, day: str) -> int:
    expected = source_rows(db, table, window_for(table, day))
    assert by_key(lake_rows(table, lake_file(lake, table.name, day))) == by_key(expected)
    return len(expected)


def test_a_partition_range_from_the_cli_is_one_run_that_writes_and_checks_every_day(
    db, source_env, tmp_path, monkeypatch
) -> None:
    days = _days_up_to_today(9)
    with db.cursor() as cursor:  # the range holds every row, so the last day reconciles fully
        cursor.execute("SELECT min(updated_at) FROM users")
        assert cursor.fetchone()[0].date().isoformat() >= days[0]
    _instance_home(tmp_path, monkeypatch)

    completed = run_command(
        [
            "dagster",
            "asset",
            "materialize",
            *("-m", "sqlgym_assets.definitions", "--select", _selection(RANGE_TABLES)),
            *("--partition-range", f"{days[0]}...{days[-1]}"),
        ],
        dict(os.environ),
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    with DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS
        assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == (days[0], days[-1])
        materialized = _materialized_days(instance, run.run_id)
        evaluations = _evaluations(instance, run.run_id)
        log = "\n".join(record.user_message for record in instance.all_logs(run.run_id))
    for table in (USERS, SUBMISSIONS):
        for day in days:
            rows = _assert_day_equals_source(db, source_env, table, day)
            assert materialized[(table.name, day)] == 1
            checks = {name: evaluations[(table.name, name, day)] for name in check_names(table)}
            failed = [name for name, check in checks.items() if not check.passed]
            assert set(failed) <= {KEYS_MATCH_SOURCE}, (table.name, day, failed)
            assert checks["row_count_matches_source"].metadata["observed"].value == rows
        # After the range's last day the lake holds every live key of the source.
        reconciled = evaluations[(table.name, KEYS_MATCH_SOURCE, days[-1])]
        assert reconciled.passed
        assert reconciled.metadata["missing_keys"].value == 0
    # A snapshot table is only ever taken today: its past days sit out, with a line saying so.
    assert [day for (table, day) in materialized if table == BADGES.name] == [days[-1]]
    _assert_day_equals_source(db, source_env, BADGES, days[-1])
    assert {day for (table, _, day) in evaluations if table == BADGES.name} == {days[-1]}
    for day in days[:-1]:
        assert not lake_file(source_env, BADGES.name, day).exists()
        assert f"backfill day {day} is left out" in log


def _materialize_range(
    tables: tuple[TableSpec, ...],
    days: list[str],
    instance: DagsterInstance,
    retry_policy: RetryPolicy | None = None,
):
    return materialize(
        build_assets(tables, retry_policy=retry_policy),
        selection=[AssetKey(["sqlgym", table.name]) for table in tables],
        instance=instance,
        raise_on_error=False,
        tags={RANGE_START_TAG: days[0], RANGE_END_TAG: days[-1]},
        resources={"postgres": PostgresResource(), LAKE_IO_MANAGER_KEY: env_lake()},
    )


def test_a_day_that_fails_loses_no_other_day_and_the_retry_redoes_only_that_day(
    db, source_env, instance
) -> None:
    days = _days_up_to_today(5)
    broken = days[2]
    # A file where the day's folder must go: that day's write fails, again on every attempt.
    obstacle = lake_file(source_env, USERS.name, broken).parent
    obstacle.parent.mkdir(parents=True)
    obstacle.write_text("in the way")

    result = _materialize_range((USERS,), days, instance, RetryPolicy(max_retries=1))

    assert not result.success
    kinds = Counter(event.event_type_value for event in result.all_events)
    assert kinds["STEP_UP_FOR_RETRY"] == 1
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert f"1 of 5 day(s) failed: {broken}" in message
    # Every other day was written, recorded and checked once: the retry redid the broken day only.
    materialized = _materialized_days(instance, result.run_id)
    assert materialized == Counter({(USERS.name, day): 1 for day in days if day != broken})
    evaluations = _evaluations(instance, result.run_id)
    for day in days:
        if day == broken:
            assert not any(evaluated_day == day for (_, _, evaluated_day) in evaluations)
            continue
        _assert_day_equals_source(db, source_env, USERS, day)
        assert evaluations[(USERS.name, "row_count_matches_source", day)].passed
    records = (source_env / "_metadata" / USERS.name).glob("*.json")
    assert Counter(json.loads(path.read_text())["partition"] for path in records) == Counter(
        {day: 1 for day in days if day != broken}
    )
    attempts = [
        record.user_message
        for record in instance.all_logs(result.run_id)
        if f"{broken} failed, the other days go on" in record.user_message
    ]
    assert len(attempts) == 2
    assert obstacle.read_text() == "in the way"  # the failed day left the lake as it was


def test_an_unusable_lake_fails_a_range_once_before_reading_a_day(
    source_env, instance, monkeypatch
) -> None:
    monkeypatch.setenv("SQLGYM_LAKE_URL", "relative/lake")

    result = _materialize_range((USERS,), _days_up_to_today(3), instance, RetryPolicy(1))

    assert "SQLGYM_LAKE_URL" in failed_once(result)
    assert not _materialized_days(instance, result.run_id)


def test_a_setting_that_fails_every_day_fails_the_range_once_at_its_first_day(
    source_env, instance, monkeypatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    days = _days_up_to_today(3)

    result = _materialize_range((USERS,), days, instance, RetryPolicy(1))

    message = failed_once(result)
    assert f"sqlgym/users {days[0]}: " in message and KEY_ENV in message
    assert "they would fail the same way" in message
    assert not any(day in message for day in days[1:])
    assert not (source_env / USERS.name).exists()


LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""


def test_a_ui_backfill_of_a_month_is_one_run_that_the_daemon_launches(
    db, source_env, tmp_path, monkeypatch
) -> None:
    """The UI's own request (GraphQL launchPartitionBackfill) to dagster-webserver, then the real
    dagster-daemon: its backfill daemon plans the runs, its run queue launches them. The tables
    that have a past (README: snapshot tables' past days would count as failed), then the
    backfill completes successfully."""
    days = _days_up_to_today(30)
    windowed = (USERS, SUBMISSIONS)
    home = _instance_home(tmp_path, monkeypatch)
    environment = {**os.environ, "DAGSTER_HOME": str(home)}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    webserver_log = tmp_path / "webserver.log"
    serve = ["dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with service(serve, webserver_log, environment) as webserver:
        wait_for_webserver(url, webserver, webserver_log)
        launched = graphql(
            url,
            LAUNCH_BACKFILL,
            {
                "params": {
                    "partitionNames": days,
                    "assetSelection": [{"path": ["sqlgym", table.name]} for table in windowed],
                }
            },
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        with (
            service(
                ["dagster-daemon", "run", "-w", "workspace.yaml"],
                tmp_path / "daemon.log",
                environment,
            ),
            DagsterInstance.get() as instance,
        ):
            deadline = time.monotonic() + 300
            while not (runs := instance.get_runs()) or not runs[0].is_finished:
                assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(1)
            (run,) = instance.get_runs()
            assert run.status == DagsterRunStatus.SUCCESS
            assert run.tags["dagster/backfill"] == launched["backfillId"]
            assert (run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) == (days[0], days[-1])
            materialized = _materialized_days(instance, run.run_id)
            evaluations = _evaluations(instance, run.run_id)
            # The backfill daemon's next pass (every 30 s) finds every day materialized.
            backfill_id = launched["backfillId"]
            while (backfill := instance.get_backfill(backfill_id)).status.value == "REQUESTED":
                assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(1)
            assert backfill.status.value == "COMPLETED_SUCCESS"
    assert materialized == Counter({(table.name, day): 1 for table in windowed for day in days})
    for table in windowed:
        for day in days:
            _assert_day_equals_source(db, source_env, table, day)
            assert {(table.name, name, day) for name in check_names(table)} <= set(evaluations)
