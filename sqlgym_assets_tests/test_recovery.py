"""A run whose worker is killed (kill -9) is marked failed, retried, and its partition written.

Everything runs as in `make dev`: the daemon, the local run launcher and its code server, and
dagster.yaml's run retries and monitoring; the worker is killed while it waits for a lock on users.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import psycopg2
import yaml
from dagster import DagsterEventType, DagsterRunStatus, instance_for_test

from sqlgym_assets.catalog import TABLES_BY_NAME
from sqlgym_assets_tests.helpers import BIN, REPOSITORY_ROOT, busiest_day, lake_file, run_command

USERS = TABLES_BY_NAME["users"]


def worker_pid(instance, run_id: str) -> int | None:
    """The pid of the process the run launcher started for the run, from its engine events."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if (event.message or "").startswith("Started process for run"):
            return int(event.engine_event_data.metadata["pid"].value)
    return None


def _wait_for(what: str, condition, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)
    return value


def test_a_killed_run_worker_is_failed_retried_and_its_partition_written(
    db, database_url, tmp_path
) -> None:
    home, lake = tmp_path / "dagster_home", tmp_path / "lake"
    home.mkdir()
    settings = yaml.safe_load((REPOSITORY_ROOT / "dagster.yaml").read_text())
    # One slot: the retry can only read the source once the dead run's slot is given back.
    settings["concurrency"]["pools"]["default_limit"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    environment = {
        **{k: v for k, v in os.environ.items() if k != "SQLGYM_DB_SECRET_ID"},
        "DAGSTER_HOME": str(home),
        "SQLGYM_DATABASE_URL": database_url,
        "SQLGYM_LAKE_URL": str(lake),
        "SQLGYM_SCHEDULES_STOPPED": "true",
    }
    partition = busiest_day(db, USERS)
    # The instance's storage is made here, before the daemon and the CLI would race to make it.
    with instance_for_test(temp_dir=str(home), overrides=settings):
        pass
    migration = psycopg2.connect(database_url)  # holds users until the worker is dead
    with migration.cursor() as cursor:
        cursor.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    with open(tmp_path / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=REPOSITORY_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        launched = run_command(
            [
                *("dagster", "job", "launch", "-w", "workspace.yaml"),
                *("-j", "sqlgym_hourly_incremental_job"),
                *("--tags", json.dumps({"dagster/partition": partition})),
            ],
            environment,
            timeout=120,
        )
        assert launched.returncode == 0, launched.stderr[-3000:]
        os.environ["DAGSTER_HOME"] = str(home)
        with instance_for_test(temp_dir=str(home), overrides=settings) as instance:
            (run,) = instance.get_runs()
            pid = _wait_for("the run's worker", lambda: worker_pid(instance, run.run_id))
            os.kill(pid, signal.SIGKILL)
            migration.rollback()  # the retry finds users free
            _wait_for(
                "the killed run to be marked failed",
                lambda: instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE,
            )
            retry = _wait_for(
                "a retry",
                lambda: [r for r in instance.get_runs() if r.parent_run_id == run.run_id],
            )[0]
            _wait_for(
                "the retry to finish",
                lambda: instance.get_run_by_id(retry.run_id).is_finished,
            )
            assert instance.get_run_by_id(retry.run_id).status == DagsterRunStatus.SUCCESS
            # The code server that launched the run saw its process die (SIGKILL), not a step fail.
            crashes = [
                record.event_log_entry.dagster_event.message
                for record in instance.get_records_for_run(
                    run.run_id, of_type=DagsterEventType.ENGINE_EVENT
                ).records
            ]
            assert any("Run execution process" in message for message in crashes), crashes
            assert retry.tags.get("dagster/partition") == partition
        assert lake_file(lake, "users", partition).exists()
    finally:
        migration.close()
        daemon.terminate()
        daemon.wait(timeout=60)
        os.environ.pop("DAGSTER_HOME", None)
        shutil.rmtree(home, ignore_errors=True)
