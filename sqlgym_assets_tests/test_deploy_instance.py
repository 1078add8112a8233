"""The production instance file, deploy/dagster.yaml, on a real PostgreSQL over verified TLS.

The file is copied verbatim into a DAGSTER_HOME whose variables point it at a database of its own
on the tests' server, reached through the tests' TLS endpoint (conftest's ``tls_server``) with
the endpoint's CA as $PGSSLROOTCERT. A CLI run and `sqlgym-monitor` then go through it as they
do in production; so does the real `dagster-daemon`, which ticks the hourly schedules and runs
what they queue, on a second such database with a lake of its own. What they stored is read back
both through Dagster and straight from PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import Popen

import psycopg2
import pytest
import sqlalchemy
import yaml
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
)
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from sqlgym_assets.assets import lake_asset_key
from sqlgym_assets.catalog import TABLES_BY_NAME, TableSpec
from sqlgym_assets.operations.schedules import (
    LOOKBACK_HOURS_ENV,
    SCHEDULE_MINUTE_ENV,
    SCHEDULES_STOPPED_ENV,
)
from sqlgym_assets.quality.checks import check_names
from sqlgym_assets.quality.reconciliation import KEYS_MATCH_SOURCE
from sqlgym_assets.source.pseudonymize import KEY_ENV, KEY_SECRET_ENV, PERSONAL_DATA_ENV
from sqlgym_assets_tests.helpers import (
    REPOSITORY_ROOT,
    TEST_PSEUDONYMIZATION_KEY,
    TlsEndpoint,
    assert_checks_of_one_synced_day,
    by_key,
    empty_database,
    instance_storage_variables,
    lake_file,
    lake_rows,
    point_project_at,
    run_command,
    service,
    source_count,
    source_rows,
    today,
    window_for,
)

DEPLOY_INSTANCE_FILE = REPOSITORY_ROOT / "deploy" / "dagster.yaml"
LOCAL_INSTANCE_FILE = REPOSITORY_ROOT / "dagster.yaml"
INSTANCE_DATABASE = "sqlgym_dagster_instance"
# An incremental, the append and a snapshot table: one of each way a table is read.
SYNCED_TABLES = tuple(TABLES_BY_NAME[name] for name in ("users", "submissions", "badges"))
# The daemon's instance database: its runs' materializations stay out of the CLI run's tests.
DAEMON_INSTANCE_DATABASE = "sqlgym_dagster_instance_daemon"
SCHEDULE_TAG, PARTITION_TAG = "dagster/schedule_name", "dagster/partition"
INCREMENTAL, SNAPSHOT = "sqlgym_hourly_incremental", "sqlgym_hourly_snapshot"
DEFAULT_LOOKBACK = timedelta(hours=2)  # the schedules' documented default, which _deployed keeps
# A table of each schedule's run, whose file of the tick's day is compared with PostgreSQL.
TICK_TABLES = {INCREMENTAL: TABLES_BY_NAME["users"], SNAPSHOT: TABLES_BY_NAME["followers"]}
# A schedule RUNNING by default gets its state at the scheduler's first iteration, once the code
# location has loaded (about 5 s after the daemon starts, here), and is ticked only at cron times
# from then on: an earlier minute would be skipped, the next tick an hour away.
DAEMON_STARTUP = timedelta(seconds=20)


def test_deploy_instance_is_the_local_one_with_postgresql_storage() -> None:
    deploy = yaml.safe_load(DEPLOY_INSTANCE_FILE.read_text())
    local = yaml.safe_load(LOCAL_INSTANCE_FILE.read_text())

    assert set(deploy.pop("storage")) == {"postgres"}
    assert deploy == local


@dataclass(frozen=True)
class Deployment:
    instance: DagsterInstance  # DagsterInstance.get() on the copied deploy/dagster.yaml
    environment: dict[str, str]  # what the deployment's processes are started with
    storage_url: str  # the instance's database, for the tests' own reads (not through TLS)
    root: Path  # a temporary directory, removed afterwards: DAGSTER_HOME, the lake, logs
    lake: Path


@contextmanager
def _deployed(database_url: str, tls_server: TlsEndpoint, database: str) -> Iterator[Deployment]:
    """deploy/dagster.yaml in a DAGSTER_HOME of its own, on ``database`` (created empty) through
    the TLS endpoint, and a lake of its own; the variables are set in this process too."""
    with (
        tempfile.TemporaryDirectory(prefix="sqlgym-test-deploy-") as root,
        empty_database(database_url, database) as storage_url,
        pytest.MonkeyPatch.context() as patch,
    ):
        home = Path(root) / "dagster_home"
        home.mkdir()
        shutil.copyfile(DEPLOY_INSTANCE_FILE, home / "dagster.yaml")
        patch.setenv("DAGSTER_HOME", str(home))
        for name, value in instance_storage_variables(tls_server, database).items():
            patch.setenv(name, value)
        lake = point_project_at(patch, database_url, Path(root) / "lake")
        # Set here: conftest's per-test key comes after this module's fixtures are made.
        patch.setenv(KEY_ENV, TEST_PSEUDONYMIZATION_KEY)
        # The schedules' defaults (2 hours' lookback, RUNNING) decide a tick's runs.
        for name in (
            *(KEY_SECRET_ENV, PERSONAL_DATA_ENV),
            *(SCHEDULE_MINUTE_ENV, LOOKBACK_HOURS_ENV, SCHEDULES_STOPPED_ENV),
        ):
            patch.delenv(name, raising=False)
        with DagsterInstance.get() as instance:
            yield Deployment(instance, dict(os.environ), storage_url, Path(root), lake)


@pytest.fixture(scope="module")
def deployment(database_url: str, tls_server: TlsEndpoint) -> Iterator[Deployment]:
    with _deployed(database_url, tls_server, INSTANCE_DATABASE) as deployed:
        yield deployed


def _failures(instance: DagsterInstance, run_id: str) -> str:
    """What a failed run reported: its step and run failures, for the assertion's message."""
    return "\n".join(
        f"{record.dagster_event.event_type_value}: {record.dagster_event.message or ''} "
        f"{record.user_message}"
        for record in instance.all_logs(run_id)
        if record.dagster_event
        and record.dagster_event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE", "ENGINE_EVENT")
    )


def _stored(deployment: Deployment, query: str, parameters: tuple = ()) -> list[tuple]:
    """Rows of the instance's database, read with psycopg2 rather than through Dagster."""
    connection = psycopg2.connect(deployment.storage_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, parameters)
            return cursor.fetchall()
    finally:
        connection.close()


def test_the_instance_keeps_runs_events_and_ticks_in_postgresql_over_verified_tls(
    deployment: Deployment, tls_server: TlsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = deployment.instance

    assert type(instance.run_storage) is PostgresRunStorage
    assert type(instance.event_log_storage) is PostgresEventLogStorage
    assert type(instance.schedule_storage) is PostgresScheduleStorage
    tables = {row[0] for row in _stored(deployment, "SELECT tablename FROM pg_tables")}
    assert {"runs", "event_logs", "jobs", "job_ticks"} <= tables
    # verify-full reaches libpq: on the URL the instance connects with, the endpoint's certificate
    # is refused once $PGSSLROOTCERT names another CA. (DagsterInstance.get() would say the same
    # after five retries, 10 s.)
    monkeypatch.setenv("PGSSLROOTCERT", str(tls_server.other_ca))
    with pytest.raises(sqlalchemy.exc.OperationalError, match="certificate verify failed"):
        sqlalchemy.create_engine(instance.run_storage.postgres_url).connect()


@dataclass(frozen=True)
class CliRun:
    partition: str
    run: DagsterRun


@pytest.fixture(scope="module")
def cli_run(deployment: Deployment) -> CliRun:
    """Today's partition of SYNCED_TABLES, with their checks, materialized by the CLI."""
    partition = today()
    selection = ",".join(lake_asset_key(table).to_user_string() for table in SYNCED_TABLES)
    completed = run_command(
        [
            *("dagster", "asset", "materialize", "-m", "sqlgym_assets.definitions"),
            *("--select", selection, "--partition", partition),
        ],
        deployment.environment,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (run,) = deployment.instance.get_runs(RunsFilter(tags={PARTITION_TAG: partition}))
    return CliRun(partition, run)


def _synced_rows(deployment: Deployment, table: TableSpec, partition: str) -> list[dict]:
    return lake_rows(table, lake_file(deployment.lake, table.name, partition))


def test_a_cli_run_stores_its_materializations_and_checks_in_postgresql(
    deployment: Deployment, cli_run: CliRun, db
) -> None:
    instance, partition, run_id = deployment.instance, cli_run.partition, cli_run.run.run_id

    assert cli_run.run.status == DagsterRunStatus.SUCCESS
    assert _stored(deployment, "SELECT status FROM runs WHERE run_id = %s", (run_id,)) == [
        ("SUCCESS",)
    ]
    for table in SYNCED_TABLES:
        key = lake_asset_key(table)
        (materialized,) = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=10
        ).records
        assert materialized.run_id == run_id
        rows = _synced_rows(deployment, table, partition)
        window = window_for(table, partition)
        expected = source_rows(db, table, window)
        row_count = materialized.asset_materialization.metadata["dagster/row_count"].value
        assert row_count == len(rows) == len(expected)
        assert expected or window is not None  # early in a UTC day a window may be empty yet
        assert by_key(rows) == by_key(expected)

        checks: dict[str, AssetCheckEvaluation] = {}
        for name in check_names(table):
            evaluated = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(key, name))
            assert evaluated is not None and evaluated.run_id == run_id, name
            checks[name] = evaluated.event.dagster_event.event_specific_data
            assert checks[name].partition == partition
        assert_checks_of_one_synced_day(checks, db, table, len(rows))

    stored_events = _stored(
        deployment,
        "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s "
        "AND dagster_event_type IN ('ASSET_MATERIALIZATION', 'ASSET_CHECK_EVALUATION') "
        "GROUP BY dagster_event_type",
        (run_id,),
    )
    assert dict(stored_events) == {
        "ASSET_MATERIALIZATION": len(SYNCED_TABLES),
        "ASSET_CHECK_EVALUATION": sum(len(check_names(table)) for table in SYNCED_TABLES),
    }


def _upcoming_minute() -> datetime:
    """The first whole UTC minute at least DAEMON_STARTUP from now, but not one of a day's last
    two: a snapshot is taken on its day only, and the runs start some seconds after the tick."""
    upcoming = (datetime.now(UTC) + DAEMON_STARTUP).replace(second=0, microsecond=0)
    upcoming += timedelta(minutes=1)
    if (upcoming.hour, upcoming.minute) >= (23, 58):
        return (upcoming + timedelta(days=1)).replace(hour=0, minute=0)
    return upcoming


def _tick_partitions(tick_at: datetime) -> dict[str, list[str]]:
    """What each schedule asks for at ``tick_at``, by the rule the schedules document: the UTC
    day of the tick, and for the incremental schedule the day before while the day is younger
    than the lookback."""
    day = tick_at.date()
    incremental = [day.isoformat()]
    if tick_at - tick_at.replace(hour=0, minute=0) < DEFAULT_LOOKBACK:
        incremental.insert(0, (day - timedelta(days=1)).isoformat())
    return {INCREMENTAL: incremental, SNAPSHOT: [day.isoformat()]}


def _wait(done: Callable[[], bool], deadline: float, what: str, daemon: Popen, log: Path) -> None:
    """Polls ``done`` until it holds, while the daemon runs, up to a time.monotonic() deadline."""
    while not done():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what}; the daemon's log:\n{log.read_text()[-6000:]}")
        time.sleep(1)


def test_the_daemon_ticks_the_schedules_and_runs_what_they_queued(
    database_url: str, tls_server: TlsEndpoint, db
) -> None:
    """The real `dagster-daemon run`, on an instance database and a lake of its own (the CLI
    run's tests read theirs), with the schedules moved to an upcoming minute: its scheduler stores
    both ticks and the runs they request, its run queue launches those, and they sync the lake."""
    schedule_ticks = (
        "SELECT job_origin_id, selector_id, status, timestamp FROM job_ticks "
        "WHERE type = 'SCHEDULE'"
    )
    with _deployed(database_url, tls_server, DAEMON_INSTANCE_DATABASE) as deployment:
        instance, log = deployment.instance, deployment.root / "daemon.log"
        tick_at = _upcoming_minute()
        expected = _tick_partitions(tick_at)
        environment = {**deployment.environment, SCHEDULE_MINUTE_ENV: str(tick_at.minute)}
        command = ["dagster-daemon", "run", "-w", "workspace.yaml"]
        with service(command, log, environment) as daemon:
            _wait(
                lambda: (
                    len(_stored(deployment, f"{schedule_ticks} AND status <> 'STARTED'"))
                    >= len(expected)
                ),
                time.monotonic() + (tick_at - datetime.now(UTC)).total_seconds() + 60,
                f"no tick of each schedule at {tick_at:%H:%M} UTC",
                daemon,
                log,
            )
            ticks = {}
            for origin, selector, status, at in _stored(deployment, schedule_ticks):
                (tick,) = instance.get_ticks(origin, selector)
                ticks[tick.instigator_name] = tick
                assert tick.status.value == status == "SUCCESS", tick.error
                assert tick.timestamp == tick_at.timestamp()
                assert at == tick_at.replace(tzinfo=None)
            assert set(ticks) == set(expected)
            run_ids = [run_id for tick in ticks.values() for run_id in tick.run_ids]
            # The daemon's run queue launches them, a day's runs one at a time (the instance's
            # limit per partition), as in production.
            _wait(
                lambda: all(
                    run.is_finished for run in instance.get_runs(RunsFilter(run_ids=run_ids))
                ),
                time.monotonic() + 240,
                "the tick's runs did not finish",
                daemon,
                log,
            )
        assert daemon.returncode == 0, log.read_text()[-6000:]  # SIGTERM: a clean shutdown

        stored_tags: dict[str, dict[str, str]] = {run_id: {} for run_id in run_ids}
        for run_id, key, value in _stored(
            deployment,
            "SELECT run_id, key, value FROM run_tags WHERE run_id = ANY(%s) AND key IN %s",
            (run_ids, (SCHEDULE_TAG, PARTITION_TAG)),
        ):
            stored_tags[run_id][key] = value
        for name, tick in ticks.items():
            partitions = sorted(stored_tags[run_id][PARTITION_TAG] for run_id in tick.run_ids)
            assert partitions == expected[name]
            for run_id in tick.run_ids:
                run = instance.get_run_by_id(run_id)
                tags = {key: run.tags.get(key) for key in (SCHEDULE_TAG, PARTITION_TAG)}
                assert tags == stored_tags[run_id]
                assert tags[SCHEDULE_TAG] == name
                assert run.job_name == f"{name}_job"
                assert run.status == DagsterRunStatus.SUCCESS, _failures(instance, run_id)
        assert dict(
            _stored(
                deployment, "SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (run_ids,)
            )
        ) == dict.fromkeys(run_ids, "SUCCESS")
        # Queued by the tick, then launched by the daemon's run queue (a CLI run is neither).
        lifecycle = [
            event.value
            for event in (
                DagsterEventType.RUN_ENQUEUED,
                DagsterEventType.RUN_STARTING,
                DagsterEventType.RUN_START,
                DagsterEventType.RUN_SUCCESS,
            )
        ]
        events: dict[str, list[str]] = {run_id: [] for run_id in run_ids}
        for run_id, event_type in _stored(
            deployment,
            "SELECT run_id, dagster_event_type FROM event_logs WHERE run_id = ANY(%s) "
            "AND dagster_event_type IN %s ORDER BY id",
            (run_ids, tuple(lifecycle)),
        ):
            events[run_id].append(event_type)
        assert events == {run_id: lifecycle for run_id in run_ids}

        day = tick_at.date().isoformat()
        for name, table in TICK_TABLES.items():
            (materialized,) = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=lake_asset_key(table), asset_partitions=[day]),
                limit=10,
            ).records
            assert materialized.run_id in ticks[name].run_ids
            expected_rows = source_rows(db, table, window_for(table, day))
            assert by_key(_synced_rows(deployment, table, day)) == by_key(expected_rows)


def test_sqlgym_monitor_shows_the_runs_tables_from_the_deploy_instance(
    deployment: Deployment, cli_run: CliRun, db
) -> None:
    completed = run_command(["sqlgym-monitor"], deployment.environment, timeout=120)

    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = {line.split()[0]: line.split() for line in completed.stdout.splitlines()[2:]}
    for table in SYNCED_TABLES:
        (materialized,) = deployment.instance.fetch_materializations(
            lake_asset_key(table), limit=1
        ).records
        at = datetime.fromtimestamp(materialized.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
        synced = len(_synced_rows(deployment, table, cli_run.partition))
        # A lake of one day lacks a windowed table's keys of other days: its reconciliation
        # fails (a warning). A snapshot holds the whole table, and all its checks pass.
        names = check_names(table)
        checks = f"{len(names)}/{len(names)} passed"
        if KEYS_MATCH_SOURCE in names and source_count(db, table) > synced:
            checks = f"failed: {KEYS_MATCH_SOURCE}@{cli_run.partition}"
        cells = lines[table.name]
        assert cells[1:5] == [cli_run.partition, *at.split(), str(synced)]
        assert cells[5:8] == ["-", "-", "-"]  # in the source, never failed
        assert " ".join(cells[8:]) == checks
    # A table disabled for scheduling, which no run of this instance took, shows nothing.
    assert lines["cache_entries"][1:] == ["-"] * 7
