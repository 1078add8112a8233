"""A month's backfill as one run, against the same month as 30 single-day runs, on the demo data.

Loads the demo data (``hourly_run.demo_database``) and materializes the windowed tables (the
incremental and append ones, which have a past to backfill) for the ``--days`` UTC days up to
today, as a user does from the CLI, each way with a fresh DAGSTER_HOME and lake:

    dagster asset materialize -m sqlgym_assets.definitions --select <tables> \
        --partition-range <first>...<today>                    one run
    dagster asset materialize -m sqlgym_assets.definitions --select <tables> \
        --partition <day>                                      one run per day

It reports the wall time of each way, and the peak RSS (``wait4``) of the range run against the
largest of the single-day runs': a range is read, written and checked one day at a time, so its
memory should be that of its largest day. Then it compares the two lakes file by file and fails
if any day's rows differ. Results go to ``--results-dir``.
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
from extract_bench import machine, package_versions  # noqa: E402
from hourly_run import demo_database  # noqa: E402  (this folder)

from sqlgym_assets.catalog import TABLES, SyncMode, TableSpec  # noqa: E402

WINDOWED_TABLES = tuple(table for table in TABLES if table.sync_mode is not SyncMode.SNAPSHOT)


def materialize(
    url: str, partition_arguments: list[str], home: Path, lake: Path
) -> dict[str, float]:
    """One `dagster asset materialize` of the windowed tables, in its own process and instance."""
    home.mkdir(parents=True)
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    selection = ",".join(f"sqlgym/{table.name}" for table in WINDOWED_TABLES)
    command = [
        *(sys.executable, "-m", "dagster", "asset", "materialize"),
        *("-m", "sqlgym_assets.definitions", "--select", selection, *partition_arguments),
    ]
    environment = {k: v for k, v in os.environ.items() if k != "SQLGYM_DB_SECRET_ID"}
    environment.update(SQLGYM_DATABASE_URL=url, SQLGYM_LAKE_URL=str(lake), DAGSTER_HOME=str(home))
    environment.setdefault("SQLGYM_PSEUDONYMIZATION_KEY", "sqlgym-bench-key-synthetic-data-only")
    log = home / "dagster.log"
    launched = time.monotonic()
    with log.open("ab") as output:
        child = subprocess.Popen(
            command, cwd=REPOSITORY_ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    wall = time.monotonic() - launched
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(partition_arguments)} failed:\n{log.read_text()[-4000:]}")
    return {"wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def day_files(lake: Path, table: TableSpec) -> dict[str, Path]:
    return {path.name: path for path in (lake / table.name).glob("*/*/*/*.parquet")}


def compare_lakes(range_lake: Path, days_lake: Path, days: list[str]) -> int:
    """The rows of every table and day, equal in both lakes; returns the rows compared."""
    compared = 0
    for table in WINDOWED_TABLES:
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


def markdown(report: dict[str, Any]) -> str:
    ranged, single = report["range_run"], report["single_day_runs"]
    return (
        f"# Backfill of {report['days']} days, {len(WINDOWED_TABLES)} windowed tables, demo data "
        f"(scale {report['scale']}), {report['started_at']}\n\n"
        f"{report['rows_compared']:,} rows, equal in both lakes.\n\n"
        "| | runs | wall | peak RSS |\n|---|---|---|---|\n"
        f"| one run, `--partition-range` | 1 | {ranged['wall_seconds']:.1f} s | "
        f"{ranged['peak_rss_mb']:.0f} MB |\n"
        f"| a run per day, `--partition` | {report['days']} | {single['wall_seconds']:.1f} s | "
        f"{single['peak_rss_mb']:.0f} MB (largest) |\n\n"
        f"The range run took {report['range_over_days']:.2f} of the single-day runs' time; its "
        f"peak RSS was {report['range_rss_over_largest_day']:.2f} of the largest single day's.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="days up to today, today included")
    parser.add_argument("--database-url", help="a PostgreSQL to load the demo data into")
    parser.add_argument("--scale", type=int, default=1, help="demo data scale")
    parser.add_argument("--results-dir", type=Path, default=REPOSITORY_ROOT / "bench_results")
    args = parser.parse_args(argv)
    started_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    machine_at_start = machine()
    url = demo_database(args)
    last = datetime.now(UTC).date()
    days = [(last - timedelta(days=back)).isoformat() for back in range(args.days - 1, -1, -1)]
    with tempfile.TemporaryDirectory(prefix="sqlgym-bench-backfill-") as scratch:
        work = Path(scratch)
        range_lake, days_lake = work / "range_lake", work / "days_lake"
        ranged = materialize(
            url, ["--partition-range", f"{days[0]}...{days[-1]}"], work / "range_home", range_lake
        )
        print(f"one run of {len(days)} days: {ranged['wall_seconds']:.1f} s", flush=True)
        singles = [
            materialize(url, ["--partition", day], work / f"home_{day}", days_lake) for day in days
        ]
        single = {
            "wall_seconds": sum(run["wall_seconds"] for run in singles),
            "peak_rss_mb": max(run["peak_rss_mb"] for run in singles),
            "runs": singles,
        }
        print(f"{len(days)} single-day runs: {single['wall_seconds']:.1f} s", flush=True)
        rows = compare_lakes(range_lake, days_lake, days)
    if date.fromisoformat(days[-1]) != datetime.now(UTC).date():
        raise RuntimeError("the UTC day changed during the bench: run it again")
    report = {
        "started_at": started_at,
        "days": len(days),
        "scale": args.scale,
        "tables": [table.name for table in WINDOWED_TABLES],
        "rows_compared": rows,
        "range_run": ranged,
        "single_day_runs": single,
        "range_over_days": ranged["wall_seconds"] / single["wall_seconds"],
        "range_rss_over_largest_day": ranged["peak_rss_mb"] / single["peak_rss_mb"],
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
