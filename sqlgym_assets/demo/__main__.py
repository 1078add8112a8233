"""`python -m sqlgym_assets.demo` (`make demo`): the whole path on one machine, only Python.

Starts an embedded PostgreSQL, loads deterministic synthetic SQLGym data, materializes today's
partition of every lake asset with the real `dagster asset materialize` CLI into a local lake,
and prints what was written. ``--serve`` (`make dev`) runs `dagster dev` on the same database and
lake. The demo and its embedded server come with a checkout and the ``demo`` extra, never with a
production install.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg2
from dagster import (
    AssetCheckEvaluation,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
)

from sqlgym_assets.assets import lake_asset_key
from sqlgym_assets.catalog import TABLES, TableSpec
from sqlgym_assets.demo.data import load_demo_data
from sqlgym_assets.demo.embedded_postgres import (
    default_data_dir,
    ensure_database,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from sqlgym_assets.lake.layout import LAKE_URL_ENV
from sqlgym_assets.operations.console import format_table
from sqlgym_assets.quality.checks import check_names
from sqlgym_assets.source.credentials import DATABASE_URL_ENV
from sqlgym_assets.source.pseudonymize import KEY_ENV, KEY_SECRET_ENV

DEMO_DATABASE = "sqlgym"
DEMO_DAYS = 7  # the synthetic rows' updated_at and submitted_at span the last seven days
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# The demo's personal data is synthetic, so its key need not be secret; a real lake's must be.
DEMO_PSEUDONYMIZATION_KEY = "sqlgym-demo-key-synthetic-data-only-not-a-secret"


def _has_demo_data(url: str) -> bool:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('public.users') IS NOT NULL")
        return bool(cursor.fetchone()[0])


def prepare_environment(lake: Path, *, scale: int, reload: bool, data_dir: Path) -> dict[str, str]:
    """Starts the demo database, loads fresh data (always if ``reload``, else only into an empty
    database) and returns the variables that point the project at it."""
    server_url = start_embedded_postgres(data_dir)
    url = ensure_database(server_url, DEMO_DATABASE)
    if reload or not _has_demo_data(url):
        counts = load_demo_data(url, datetime.now(UTC), scale=scale)
        loaded = f"loaded {sum(counts.values())} synthetic rows into {len(counts)} tables"
        print(loaded, file=sys.stderr)  # stdout may be read by a shell (--env)
    lake.mkdir(parents=True, exist_ok=True)
    variables = {DATABASE_URL_ENV: url, LAKE_URL_ENV: str(lake.resolve())}
    if not (os.environ.get(KEY_ENV) or os.environ.get(KEY_SECRET_ENV)):
        variables[KEY_ENV] = DEMO_PSEUDONYMIZATION_KEY
    return variables


def fill_past_days(variables: dict[str, str], today: str) -> list[tuple[str, int]]:
    """The demo data's earlier days of the incremental and append tables, as a backfill writes
    them: the hourly job of those tables, one run over the range of days, in this process."""
    from sqlgym_assets.definitions import defs

    os.environ.update(variables)
    job = defs().resolve_job_def("sqlgym_hourly_incremental_job")
    # Seven days back from now touch eight dates: today (the main run) and seven before it.
    days = [
        (date.fromisoformat(today) - timedelta(days=days_ago)).isoformat()
        for days_ago in range(DEMO_DAYS, 0, -1)
    ]
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            tags={
                "dagster/backfill": "sqlgym-demo",
                "dagster/asset_partition_range_start": days[0],
                "dagster/asset_partition_range_end": days[-1],
            },
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    rows = dict.fromkeys(days, 0)
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        rows[materialization.partition] += int(materialization.metadata["dagster/row_count"].value)
    return list(rows.items())


def materialize_today(variables: dict[str, str], partition: str) -> None:
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "sqlgym_assets.definitions",
        "--select",
        ",".join(lake_asset_key(table).to_user_string() for table in TABLES),
        "--partition",
        partition,
        # The project's lines (what each table read and wrote), not Dagster's event stream.
        "--config-json",
        json.dumps(QUIET_LOGS),
    ]
    subprocess.run(command, check=True, env={**os.environ, **variables})


def _check_summary(evaluations: list[AssetCheckEvaluation], table: TableSpec) -> str:
    """The checks returned with the asset's materialization, from the events of its run."""
    asset_key = lake_asset_key(table)
    own = [evaluation for evaluation in evaluations if evaluation.asset_key == asset_key]
    failed = [evaluation.check_name for evaluation in own if not evaluation.passed]
    if failed:
        return "failed: " + ", ".join(failed)
    return f"{len(own)}/{len(check_names(table))} passed"


def _check_evaluations(instance: DagsterInstance, run_id: str) -> list[AssetCheckEvaluation]:
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    return [record.event_log_entry.dagster_event.event_specific_data for record in records]


def summary_rows(partition: str) -> list[tuple[str, str, str, str, str]]:
    rows = []
    evaluations_of_run: dict[str, list[AssetCheckEvaluation]] = {}
    with DagsterInstance.get() as instance:
        for table in TABLES:
            asset_key = lake_asset_key(table)
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
            ).records
            if not records:
                rows.append((table.name, table.sync_mode.value, "-", "-", "not materialized"))
                continue
            run_id = records[0].run_id
            if run_id not in evaluations_of_run:
                evaluations_of_run[run_id] = _check_evaluations(instance, run_id)
            metadata = records[0].asset_materialization.metadata
            rows.append(
                (
                    table.name,
                    table.sync_mode.value,
                    str(metadata["dagster/row_count"].value),
                    _check_summary(evaluations_of_run[run_id], table),
                    str(metadata["dagster/uri"].value),
                )
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sqlgym_assets.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--lake", type=Path, default=Path(".lake"), help="local lake directory")
    parser.add_argument("--scale", type=int, default=1, help="multiplies the synthetic data")
    parser.add_argument(
        "--pg-data",
        type=Path,
        default=default_data_dir("demo"),
        help="the embedded PostgreSQL's data directory (keep it outside the checkout)",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--serve",
        action="store_true",
        help="start the database (loading data if it has none) and `dagster dev` on it",
    )
    action.add_argument(
        "--env",
        action="store_true",
        help="start the database (loading data if it has none) and print the shell exports that "
        'point the dagster CLI at it: eval "$(python -m sqlgym_assets.demo --env)"',
    )
    action.add_argument(
        "--stop", action="store_true", help="stop the demo's PostgreSQL (its data stays)"
    )
    parser.add_argument("--port", type=int, default=3000, help="the UI's port with --serve")
    parser.add_argument(
        "--remove-data", action="store_true", help="with --stop, delete the data directory too"
    )
    args = parser.parse_args(argv)
    if args.stop:
        stop_embedded_postgres(args.pg_data)
        if args.remove_data:
            shutil.rmtree(args.pg_data, ignore_errors=True)
        return
    if args.serve or args.env:
        variables = prepare_environment(
            args.lake, scale=args.scale, reload=False, data_dir=args.pg_data
        )
        if args.env:
            home = Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve()
            home.mkdir(parents=True, exist_ok=True)  # Dagster refuses a home that is missing
            for name, value in {"DAGSTER_HOME": str(home), **variables}.items():
                print(f"export {name}={shlex.quote(value)}")
            return
        command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"]
        command += ["-p", str(args.port)]
        os.execve(sys.executable, command, {**os.environ, **variables})
    variables = prepare_environment(args.lake, scale=args.scale, reload=True, data_dir=args.pg_data)
    partition = datetime.now(UTC).date().isoformat()
    # The days before today first, so today's run, whose checks the summary shows, reconciles
    # each table's current state with every day of its rows in the lake.
    for day, rows in fill_past_days(variables, partition):
        print(f"filled {day}: {rows} rows of the incremental and append tables")
    materialize_today(variables, partition)
    print(f"\nSQLGym lake, partition {partition}:")
    print(format_table(("table", "mode", "rows", "checks", "file"), summary_rows(partition)))


if __name__ == "__main__":
    main()
