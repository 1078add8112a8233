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

from sqlgym_assets.catalog import TABLES
from sqlgym_assets.local_postgres import default_data_dir, ensure_database, start_embedded_postgres

DEMO_DATABASE = "sqlgym"


def _has_demo_data(url: str) -> bool:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('public.users') IS NOT NULL")
        return bool(cursor.fetchone()[0])


def prepare_environment(lake: Path, *, scale: int, reload: bool) -> dict[str, str]:
    """Starts the demo database, loads fresh data (always if ``reload``, else only into an empty
    database) and returns the variables that point the project at it."""
    from sqlgym_assets.demo_data import load_demo_data

    server_url = start_embedded_postgres(default_data_dir("demo"))
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


def summary_rows(partition: str) -> list[tuple[str, str, str, str]]:
    from dagster import AssetKey, DagsterInstance

    rows = []
    with DagsterInstance.get() as instance:
        for table in TABLES:
            record = instance.fetch_materializations(
                AssetKey(["sqlgym", table.name]), limit=1
            ).records
            materialization = record[0].asset_materialization if record else None
            if materialization is None or materialization.partition != partition:
                rows.append((table.name, table.sync_mode.value, "-", "not materialized"))
                continue
            metadata = materialization.metadata
            rows.append(
                (
                    table.name,
                    table.sync_mode.value,
                    str(metadata["dagster/row_count"].value),
                    str(metadata["dagster/uri"].value),
                )
            )
    return rows


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sqlgym-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, default=Path(".lake"), help="local lake directory")
    parser.add_argument("--scale", type=int, default=1, help="multiplies the synthetic data")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="start the database (loading data if it has none) and `dagster dev` on it",
    )
    args = parser.parse_args(argv)
    if args.serve:
        variables = prepare_environment(args.lake, scale=args.scale, reload=False)
        command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"]
        os.execve(sys.executable, command, {**os.environ, **variables})
    variables = prepare_environment(args.lake, scale=args.scale, reload=True)
    partition = materialize_today(variables)
    print(f"\nSQLGym lake, partition {partition}:")
    print(format_table(("table", "mode", "rows", "file"), summary_rows(partition)))


if __name__ == "__main__":
    main()
