"""A month's backfill as one run, against the same month as a run per day.

Two cases, each way as a user runs it from the CLI, every `dagster asset materialize` in its own
process with a fresh DAGSTER_HOME and lake:

    dagster asset materialize ... --select <tables> --partition-range <first>...<last>   one run
    dagster asset materialize ... --select <tables> --partition <day>                    a run a day

- demo data: the windowed tables (incremental and append, which have a past to backfill) of the
  demo data (``hourly_run.demo_database``), over the ``--days`` UTC days up to today;
- at scale: the bench's submissions (``--rows``, 2,000,000 by default, about 66,666 a day) as an
  append table, ``sqlgym/daily_submissions`` of bench/end_to_end_location.py, over ``--scale-days``
  of its 30 days.

It reports the wall time of each way, and the peak RSS (``wait4``) of the range run against the
largest of the single-day runs': a range is read, written and checked one day at a time, so its
memory should be that of its largest day, however many days it holds. Then it compares the two
lakes file by file and fails if any day's rows differ. Results go to ``--results-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
if str(REPOSITORY_ROOT) not in sys.path:  # run as a script: the project is importable
    sys.path.insert(0, str(REPOSITORY_ROOT))

import pyarrow.parquet as pq  # noqa: E402
from end_to_end import ensure_derived_table  # noqa: E402  (this folder)
from end_to_end_location import DAILY  # noqa: E402
from extract_bench import (  # noqa: E402
    DATA_START,
    DATA_VERSION,
    ensure_bench_table,
    machine,
    package_versions,
)
from hourly_run import demo_database  # noqa: E402

from sqlgym_assets.catalog import TABLES, SyncMode, TableSpec  # noqa: E402

WINDOWED_TABLES = tuple(table for table in TABLES if table.sync_mode is not SyncMode.SNAPSHOT)
PROJECT = ["-m", "sqlgym_assets.definitions"]
BENCH_LOCATION = ["-f", str(Path(__file__).resolve().parent / "end_to_end_location.py")]


def ensure_daily_table(database_url: str, schema: str, rows: int) -> None:
    """``<schema>.daily_submissions``: a copy of the bench's submissions (``ensure_bench_table``),
    read as an append table, a day at a time; rebuilt when those change."""
    from psycopg2 import sql

    ensure_derived_table(
        database_url,
        schema,
        DAILY.name,
        f"daily copy of {DATA_VERSION}: {rows} rows",
        sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, "submissions")),
        (),
    )


def materialize(
    target: list[str],
    tables: tuple[TableSpec, ...],
    partition_arguments: list[str],
    home: Path,
    environment: dict[str, str],
) -> dict[str, float]:
    """One `dagster asset materialize` of the tables, in its own process and instance."""
    home.mkdir(parents=True)
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    selection = ",".join(f"sqlgym/{table.name}" for table in tables)
    command = [
        *(sys.executable, "-m", "dagster", "asset", "materialize"),
        *(*target, "--select", selection, *partition_arguments),
    ]
    log = home / "dagster.log"
    launched = time.monotonic()
    with log.open("ab") as output:
        child = subprocess.Popen(
            command,
            cwd=REPOSITORY_ROOT,
            env={**environment, "DAGSTER_HOME": str(home)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    wall = time.monotonic() - launched
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(partition_arguments)} failed:\n{log.read_text()[-4000:]}")
    return {"wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def day_files(lake: Path, table: TableSpec) -> dict[str, Path]:
    return {path.name: path for path in (lake / table.name).glob("*/*/*/*.parquet")}


def compare_lakes(
    range_lake: Path, days_lake: Path, tables: tuple[TableSpec, ...], days: list[str]
) -> int:
    """The rows of every table and day, equal in both lakes; returns the rows compared."""
    compared = 0
    for table in tables:
        by_range, by_day = day_files(range_lake, table), day_files(days_lake, table)
        expected = {f"{table.name}_{day.replace('-', '')}.parquet" for day in days}
        if set(by_range) != expected or set(by_day) != expected:
            raise AssertionError(f"{table.name}: the two lakes do not hold one file per day")
        keys = [(name, "ascending") for name in table.primary_key]
        for name in sorted(expected):
            from_range = pq.read_table(by_range[name]).sort_by(keys)
            from_days = pq.read_table(by_day[name]).sort_by(keys)
            if not from_range.equals(from_days):
                raise AssertionError(f"{name}: the range run and the day's run wrote other rows")
            compared += from_range.num_rows
    return compared


def backfill_both_ways(
    case: str,
    target: list[str],
    tables: tuple[TableSpec, ...],
    days: list[str],
    environment: dict[str, str],
    scratch: Path,
) -> dict[str, Any]:
    """The range as one run, then as a run a day, each writing a lake of its own."""
    work = scratch / case.replace(" ", "_")
    range_lake, days_lake = work / "range_lake", work / "days_lake"
    ranged = materialize(
        target,
        tables,
        ["--partition-range", f"{days[0]}...{days[-1]}"],
        work / "range_home",
        {**environment, "SQLGYM_LAKE_URL": str(range_lake)},
    )
    print(f"{case}: one run of {len(days)} days, {ranged['wall_seconds']:.1f} s", flush=True)
    singles = [
        materialize(
            target,
            tables,
            ["--partition", day],
            work / f"home_{day}",
            {**environment, "SQLGYM_LAKE_URL": str(days_lake)},
        )
        for day in days
    ]
    single = {
        "wall_seconds": sum(run["wall_seconds"] for run in singles),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in singles),
        "runs": singles,
    }
    print(f"{case}: {len(days)} single-day runs, {single['wall_seconds']:.1f} s", flush=True)
    return {
        "case": case,
        "tables": [table.name for table in tables],
        "days": len(days),
        "first_day": days[0],
        "rows_compared": compare_lakes(range_lake, days_lake, tables, days),
        "range_run": ranged,
        "single_day_runs": single,
        "range_over_days": ranged["wall_seconds"] / single["wall_seconds"],
        "range_rss_over_largest_day": ranged["peak_rss_mb"] / single["peak_rss_mb"],
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# A backfill as one run and as a run a day, {report['started_at']}",
        "",
        "| case | days | rows | one run | peak RSS | a run a day | largest peak RSS | time | "
        "peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in report["cases"]:
        ranged, single = case["range_run"], case["single_day_runs"]
        lines.append(
            f"| {case['case']} | {case['days']} | {case['rows_compared']:,} | "
            f"{ranged['wall_seconds']:.1f} s | {ranged['peak_rss_mb']:.0f} MB | "
            f"{single['wall_seconds']:.1f} s | {single['peak_rss_mb']:.0f} MB | "
            f"{case['range_over_days']:.2f} | {case['range_rss_over_largest_day']:.2f} |"
        )
    lines += [
        "",
        "Rows: equal in both lakes, day by day. Time and peak: the one run's over the runs a "
        "day's (their summed wall time, their largest peak RSS).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="demo data: days up to today")
    parser.add_argument("--rows", type=int, default=2_000_000, help="at scale: the table's rows")
    parser.add_argument("--scale-days", type=int, default=30, help="at scale: days of its 30")
    parser.add_argument("--schema", default="bench", help="at scale: the table's schema")
    parser.add_argument("--database-url", help="a PostgreSQL to load the data into")
    parser.add_argument("--scale", type=int, default=1, help="demo data scale")
    parser.add_argument("--results-dir", type=Path, default=REPOSITORY_ROOT / "bench_results")
    args = parser.parse_args(argv)
    started_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    machine_at_start = machine()
    url = demo_database(args)
    ensure_bench_table(url, args.schema, args.rows)
    ensure_daily_table(url, args.schema, args.rows)
    environment = {k: v for k, v in os.environ.items() if k != "SQLGYM_DB_SECRET_ID"}
    environment.update(SQLGYM_DATABASE_URL=url, SQLGYM_BENCH_SCHEMA=args.schema)
    environment.setdefault("SQLGYM_PSEUDONYMIZATION_KEY", "sqlgym-bench-key-synthetic-data-only")
    today = datetime.now(UTC).date()
    demo_days = [
        (today - timedelta(days=back)).isoformat() for back in range(args.days - 1, -1, -1)
    ]
    scale_days = [(DATA_START + timedelta(days=n)).isoformat() for n in range(args.scale_days)]
    with tempfile.TemporaryDirectory(prefix="sqlgym-bench-backfill-") as directory:
        scratch = Path(directory)
        cases = [
            backfill_both_ways(
                "demo data", PROJECT, WINDOWED_TABLES, demo_days, environment, scratch
            ),
            backfill_both_ways(
                "at scale", BENCH_LOCATION, (DAILY,), scale_days, environment, scratch
            ),
        ]
    if date.fromisoformat(demo_days[-1]) != datetime.now(UTC).date():
        raise RuntimeError("the UTC day changed during the bench: run it again")
    report = {
        "started_at": started_at,
        "demo_scale": args.scale,
        "rows": args.rows,
        "cases": cases,
        "machine": {**machine_at_start, "load_average_at_end": os.getloadavg()},
        "packages": package_versions(),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "backfill.json").write_text(json.dumps(report, indent=2, default=str))
    text = markdown(report)
    (args.results_dir / "backfill.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
