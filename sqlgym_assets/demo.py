"""`sqlgym-demo`: the whole path on one machine, with nothing but Python.

Starts an embedded PostgreSQL, loads deterministic synthetic SQLGym data, materializes today's
partition of every lake asset with the real `dagster asset materialize` CLI into a local lake,
and prints what was written. ``--serve`` runs `dagster dev` on the same database and lake.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
)
from dagster._core.event_api import PartitionKeyFilter

from sqlgym_assets.catalog import TABLES
from sqlgym_assets.checks import CHECK_NAMES
from sqlgym_assets.console import format_table
from sqlgym_assets.demo_data import load_demo_data
from sqlgym_assets.local_postgres import default_data_dir, ensure_database, start_embedded_postgres

DEMO_DATABASE = "sqlgym"


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
        print(f"loaded {sum(counts.values())} synthetic rows into {len(counts)} tables")
    lake.mkdir(parents=True, exist_ok=True)
    return {"SQLGYM_DATABASE_URL": url, "SQLGYM_LAKE_URL": str(lake.resolve())}


def materialize_today(variables: dict[str, str]) -> str:
    partition = datetime.now(UTC).date().isoformat()
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "sqlgym_assets",
        "--select",
        ",".join(f"sqlgym/{table.name}" for table in TABLES),
        "--partition",
        partition,
    ]
    subprocess.run(command, check=True, env={**os.environ, **variables})
    return partition


def _check_summary(instance: DagsterInstance, asset_key: AssetKey, partition: str) -> str:
    failed, evaluated = [], 0
    for name in CHECK_NAMES:
        records = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(asset_key, name),
            limit=1,
            partition_filter=PartitionKeyFilter(key=partition),
        )
        evaluation = records[0].event.dagster_event.event_specific_data if records else None
        if isinstance(evaluation, AssetCheckEvaluation) and evaluation.partition == partition:
            evaluated += 1
            if not evaluation.passed:
                failed.append(name)
    if failed:
        return "failed: " + ", ".join(failed)
    return f"{evaluated}/{len(CHECK_NAMES)} passed"


def summary_rows(partition: str) -> list[tuple[str, str, str, str, str]]:
    rows = []
    with DagsterInstance.get() as instance:
        for table in TABLES:
            asset_key = AssetKey(["sqlgym", table.name])
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
            ).records
            if not records:
                rows.append((table.name, table.sync_mode.value, "-", "-", "not materialized"))
                continue
            metadata = records[0].asset_materialization.metadata
            rows.append(
                (
                    table.name,
                    table.sync_mode.value,
                    str(metadata["dagster/row_count"].value),
                    _check_summary(instance, asset_key, partition),
                    str(metadata["dagster/uri"].value),
                )
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sqlgym-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, default=Path(".lake"), help="local lake directory")
    parser.add_argument("--scale", type=int, default=1, help="multiplies the synthetic data")
    parser.add_argument(
        "--pg-data",
        type=Path,
        default=default_data_dir("demo"),
        help="the embedded PostgreSQL's data directory (keep it outside the checkout)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="start the database (loading data if it has none) and `dagster dev` on it",
    )
    args = parser.parse_args(argv)
    if args.serve:
        variables = prepare_environment(
            args.lake, scale=args.scale, reload=False, data_dir=args.pg_data
        )
        command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"]
        os.execve(sys.executable, command, {**os.environ, **variables})
    variables = prepare_environment(args.lake, scale=args.scale, reload=True, data_dir=args.pg_data)
    partition = materialize_today(variables)
    print(f"\nSQLGym lake, partition {partition}:")
    print(format_table(("table", "mode", "rows", "checks", "file"), summary_rows(partition)))


if __name__ == "__main__":
    main()
