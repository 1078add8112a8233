"""Day-to-day operation: the sync records in the lake, `sqlgym-monitor`, backfills and alerts."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    build_run_status_sensor_context,
    instance_for_test,
)

from sqlgym_assets.catalog import TABLES_BY_NAME
from sqlgym_assets.lake.history import SyncRecord, write_sync_record
from sqlgym_assets.lake.layout import lake_settings
from sqlgym_assets.operations import monitor
from sqlgym_assets.operations.alerts import Alert, notify, run_failure_alert
from sqlgym_assets_tests.helpers import busiest_day, lake_file, materialize_tables, source_count

USERS = TABLES_BY_NAME["users"]


def _records(lake, table: str) -> list[dict]:
    folder = lake / "_metadata" / table
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def test_each_materialization_leaves_a_sync_record_matching_it(db, source_env) -> None:
    partition = busiest_day(db, USERS)
    result = materialize_tables([USERS], partition)
    materialize_tables([USERS], "2025-02-01")  # a day with no rows

    (materialization,) = result.asset_materializations_for_node("sqlgym__users")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    busy, empty = _records(source_env, "users")
    assert busy == {
        "table": "users",
        "partition": partition,
        "mode": "incremental",
        "window": metadata["sqlgym/window"],
        "rows": metadata["dagster/row_count"],
        "source_row_count": metadata["sqlgym/source_row_count"],
        "bytes": lake_file(source_env, "users", partition).stat().st_size,
        "file_uri": str(lake_file(source_env, "users", partition)),
        "duration_seconds": metadata["sqlgym/write_seconds"],
        "run_id": result.run_id,
        "status": "success",
        "written_at": busy["written_at"],
        "live_keys": metadata["sqlgym/live_keys"],
        "deleted_keys": 0,
    }
    assert metadata["sqlgym/live_keys"] == source_count(db, USERS)
    assert metadata["sqlgym/sync_record"].endswith(".json")
    assert (empty["rows"], empty["status"]) == (0, "no_new_data")


def test_records_written_in_the_same_second_never_collide(tmp_path) -> None:
    settings = lake_settings(str(tmp_path))
    at = datetime(2025, 10, 24, 13, 5, 7, tzinfo=UTC)
    record = SyncRecord(
        "users", "2025-10-24", "incremental", "", 1, 1, 10, "f", 0.1, "r", "success", ""
    )

    uris = [write_sync_record(settings, record, at) for _ in range(3)]

    names = [uri.rsplit("/", 1)[-1] for uri in uris]
    assert names == [
        "20251024T130507Z.json",
        "20251024T130507Z_01.json",
        "20251024T130507Z_02.json",
    ]
    assert sorted(names) == names  # listing by name gives the order they were written in


@pytest.fixture
def persistent_instance(tmp_path, monkeypatch):
    """An instance on disk, as `make monitor` reads it through DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def test_monitor_reports_successes_failures_and_checks_from_the_instance(
    db, source_env, persistent_instance, capsys
) -> None:
    partition = busiest_day(db, USERS)
    materialize_tables([USERS], partition, instance=persistent_instance)
    failed = materialize_tables(
        ["followers"], "2025-10-24", instance=persistent_instance, raise_on_error=False
    )
    assert not failed.success

    monitor.main([])

    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    rows = _records(source_env, "users")[-1]["rows"]
    users = lines["users"].split()
    assert users[1] == partition
    assert users[4] == str(rows)
    # One day of users is in the lake: the reconciliation finds the other days' users missing.
    assert lines["users"].rstrip().endswith(f"failed: keys_match_source@{partition}")
    assert "2025-10-24 at" in lines["followers"]
    assert "snapshot table" in lines["followers"]
    assert lines["badges"].split()[1:] == ["-"] * 7
    assert lines["followers"].rstrip().endswith("not run")


def test_a_past_day_backfill_leaves_snapshot_tables_out_with_a_message(
    source_env, instance
) -> None:
    result = materialize_tables(
        ["followers", USERS], "2025-03-10", instance=instance, tags={"dagster/backfill": "b1"}
    )

    assert result.success
    materialized = [event.asset_key for event in result.get_asset_materialization_events()]
    assert materialized == [AssetKey(["sqlgym", "users"])]
    assert not lake_file(source_env, "followers", "2025-03-10").exists()
    messages = [record.user_message for record in instance.all_logs(result.run_id)]
    assert any("backfill day 2025-03-10 is left out" in message for message in messages)


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_failed_run_logs_one_alert_per_table_and_posts_it(
    source_env, instance: DagsterInstance, monkeypatch, caplog
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SQLGYM_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/")
    monkeypatch.setenv("SQLGYM_DAGSTER_URL", "http://dagster.example:3000")
    _Hook.received.clear()
    try:
        result = materialize_tables(
            ["followers", USERS], "2025-10-24", instance=instance, raise_on_error=False
        )
        run = instance.get_run_by_id(result.run_id)
        (run_failure,) = [
            event for event in result.all_events if event.event_type == DagsterEventType.RUN_FAILURE
        ]
        context = build_run_status_sensor_context(
            sensor_name="sqlgym_run_failure_alert",
            dagster_instance=instance,
            dagster_run=run,
            dagster_event=run_failure,
        ).for_run_failure()

        run_failure_alert(context)
    finally:
        server.shutdown()

    (posted,) = _Hook.received
    assert posted["table"] == "followers"
    assert posted["partition"] == "2025-10-24"
    assert "snapshot table" in posted["error"]
    assert posted["run_url"] == f"http://dagster.example:3000/runs/{result.run_id}"
    assert posted["text"] in caplog.text
    assert posted["text"].startswith("SQLGYM SYNC FAILED table=followers partition=2025-10-24")


def test_the_alert_goes_to_sns_when_a_topic_is_set(aws_env, monkeypatch) -> None:
    import boto3

    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="sqlgym-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="sqlgym-alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("SQLGYM_ALERT_SNS_TOPIC_ARN", topic)
    monkeypatch.delenv("SQLGYM_ALERT_WEBHOOK_URL", raising=False)
    alert = Alert("users", "2025-10-24", "connection reset", "http://dagster:3000/runs/r1")

    notify(alert)

    (message,) = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)["Messages"]
    assert json.loads(message["Body"])["Message"] == alert.line()


def test_monitor_keeps_the_last_checks_of_the_file_after_a_failed_run(
    db, source_env, persistent_instance, capsys, monkeypatch
) -> None:
    partition = busiest_day(db, USERS)
    materialize_tables([USERS], partition, instance=persistent_instance)
    monkeypatch.setenv("SQLGYM_LAKE_URL", "relative/lake")  # the next run fails at once
    failed = materialize_tables(
        [USERS], partition, instance=persistent_instance, raise_on_error=False
    )
    assert not failed.success

    monitor.main([])

    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert f"{partition} at" in lines["users"]  # the failure is shown
    # One day of users is in the lake: the reconciliation finds the other days' users missing.
    assert (
        lines["users"].rstrip().endswith(f"failed: keys_match_source@{partition}")
    )  # and the file's checks still are
