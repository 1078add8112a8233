"""The 21-table hourly run on the demo data, per executor: how much is Dagster, how much is work.

Loads the demo data (``sqlgym_assets.demo.data``) into a database of the bench's embedded
PostgreSQL, read over loopback TCP (or ``--database-url``), then runs, ``--repeat`` times each
and interleaved, the command a user runs:

    dagster asset materialize -m sqlgym_assets.definitions --select sqlgym/<all 21> \
        --partition <today UTC>

once as it is ("project default": whatever executor the code location sets), once on
bench/dagster_alone_location.py (the same 21 assets and checks doing no work: what Dagster itself
costs), then with each setting of Dagster's ``multi_or_in_process_executor`` chosen by
``--config-json``: for those the code location is bench/hourly_location.py (``-f``), the
project's own definitions with that executor. Each run gets a fresh DAGSTER_HOME (this
repository's dagster.yaml) and a fresh local lake. The run's own event log then splits the wall
time:

- start-up:  from launching the command to RUN_START (interpreter, imports, loading the code
  location, creating the run), and from RUN_SUCCESS to the command's exit;
- step workers: STEP_WORKER_STARTING to STEP_START, summed (multiprocess: one process per step,
  each importing Dagster and loading the code location again);
- in the steps, summed: extract+write (``sqlgym/write_seconds``), the four checks
  (HANDLED_OUTPUT to STEP_SUCCESS) and the rest (resources, connection, count queries);
- the run's span (RUN_START to RUN_SUCCESS), which the steps share when they run in parallel.

Writes JSON and Markdown under ``--results-dir`` beside extract_bench.py's results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
if str(REPOSITORY_ROOT) not in sys.path:  # run as a script: the project is importable
    sys.path.insert(0, str(REPOSITORY_ROOT))

from extract_bench import (  # noqa: E402  (this folder)
    embedded_server_on_loopback,
    machine,
    package_versions,
)

BENCH = Path(__file__).resolve().parent
PROJECT_LOCATION = ["-m", "sqlgym_assets.definitions"]
# The project's definitions with multi_or_in_process_executor, chosen by the run config.
SELECTABLE_LOCATION = ["-f", str(BENCH / "hourly_location.py")]
# The same 21 assets and checks doing no work: Dagster's own share of the run.
DAGSTER_ALONE_LOCATION = ["-f", str(BENCH / "dagster_alone_location.py")]
DAGSTER_ALONE = "Dagster alone (the same assets and checks doing no work)"
# Each run's code location and run config (None: the location's own executor).
EXECUTORS: dict[str, tuple[list[str], dict[str, Any] | None]] = {
    "project default": (PROJECT_LOCATION, None),
    DAGSTER_ALONE: (DAGSTER_ALONE_LOCATION, None),
    "in_process": (SELECTABLE_LOCATION, {"in_process": {}}),
    "multiprocess (max_concurrent = cores)": (SELECTABLE_LOCATION, {"multiprocess": {}}),
    "multiprocess max_concurrent=2": (
        SELECTABLE_LOCATION,
        {"multiprocess": {"max_concurrent": 2}},
    ),
    "multiprocess max_concurrent=4": (
        SELECTABLE_LOCATION,
        {"multiprocess": {"max_concurrent": 4}},
    ),
}


def demo_database(args: argparse.Namespace) -> str:
    from sqlgym_assets.demo.data import load_demo_data
    from sqlgym_assets.demo.embedded_postgres import default_data_dir, ensure_database

    url = args.database_url
    if not url:
        # Over TCP, as extract_bench.py reads it and production reads its database.
        server_url = embedded_server_on_loopback(default_data_dir("bench"))
        url = ensure_database(server_url, "sqlgym_hourly")
    counts = load_demo_data(url, datetime.now(UTC), scale=args.scale)
    print(f"loaded {sum(counts.values()):,} demo rows into {len(counts)} tables", flush=True)
    return url


def run_once(
    executor: str, url: str, partition: str, work: Path
) -> tuple[dict[str, Any], dict[str, int]]:
    from sqlgym_assets.catalog import TABLES

    home, lake = work / "dagster_home", work / "lake"
    home.mkdir(parents=True)
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    command = [
        *(sys.executable, "-m", "dagster", "asset", "materialize"),
        *("--select", ",".join(f"sqlgym/{table.name}" for table in TABLES)),
        *("--partition", partition),
    ]
    location, config = EXECUTORS[executor]
    command += location
    if config is not None:
        command += ["--config-json", json.dumps({"execution": {"config": config}})]
    environment = {k: v for k, v in os.environ.items() if k != "SQLGYM_DB_SECRET_ID"}
    environment.update(SQLGYM_DATABASE_URL=url, SQLGYM_LAKE_URL=str(lake), DAGSTER_HOME=str(home))
    # Personal data is pseudonymized, as by default in production; the demo rows are synthetic.
    environment.setdefault("SQLGYM_PSEUDONYMIZATION_KEY", "sqlgym-bench-key-synthetic-data-only")
    launched = time.time()
    with open(work / "dagster.log", "wb") as log:
        completed = subprocess.run(
            command, cwd=REPOSITORY_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    exited = time.time()
    if completed.returncode != 0:
        tail = (work / "dagster.log").read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{executor}: exit code {completed.returncode}:\n{tail}")
    split, rows = split_run(home, launched, exited)
    return {"executor": executor, "wall_seconds": exited - launched, **split}, rows


def split_run(home: Path, launched: float, exited: float) -> tuple[dict[str, float], dict]:
    """Splits one run's wall time using the timestamps of its own events."""
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        records = instance.all_logs(run.run_id)
    first: dict[tuple[str, str | None], float] = {}
    write_seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        first.setdefault((event.event_type.name, event.step_key), record.timestamp)
        if event.event_type.name == "ASSET_MATERIALIZATION":
            metadata = event.event_specific_data.materialization.metadata
            # Dagster alone writes nothing: no write time.
            write_seconds[event.step_key] = getattr(
                metadata.get("sqlgym/write_seconds"), "value", 0
            )
            rows[event.step_key] = metadata["dagster/row_count"].value
    steps = sorted({step for (_, step) in first if step})
    failed = [s for s in steps if ("STEP_SUCCESS", s) not in first]
    if failed or ("RUN_SUCCESS", None) not in first:
        raise RuntimeError(f"the run did not succeed; failed steps: {failed}")

    def span(start: str, end: str, step: str | None = None) -> float:
        return first[(end, step)] - first[(start, step)]

    step_seconds = [span("STEP_START", "STEP_SUCCESS", s) for s in steps]
    # Dagster alone hands no output to an IO manager: its checks are not timed apart.
    checks = [
        span("HANDLED_OUTPUT", "STEP_SUCCESS", s) if ("HANDLED_OUTPUT", s) in first else 0.0
        for s in steps
    ]
    workers = [
        span("STEP_WORKER_STARTING", "STEP_START", s)
        for s in steps
        if ("STEP_WORKER_STARTING", s) in first
    ]
    written = sum(write_seconds.values())
    return {
        "steps": len(steps),
        "startup_before_run_seconds": first[("RUN_START", None)] - launched,
        "after_run_seconds": exited - first[("RUN_SUCCESS", None)],
        "run_span_seconds": span("RUN_START", "RUN_SUCCESS"),
        "step_worker_startup_sum": sum(workers),
        "steps_sum": sum(step_seconds),
        "extract_write_sum": written,
        "checks_sum": sum(checks),
        "step_other_sum": sum(step_seconds) - written - sum(checks),
    }, rows


COLUMNS = (
    ("wall_seconds", "wall s"),
    ("startup_before_run_seconds", "launch -> RUN_START s"),
    ("run_span_seconds", "RUN_START -> RUN_SUCCESS s"),
    ("after_run_seconds", "RUN_SUCCESS -> exit s"),
    ("step_worker_startup_sum", "step worker start-up, sum s"),
    ("steps_sum", "steps, sum s"),
    ("extract_write_sum", "extract+write, sum s"),
    ("checks_sum", "checks, sum s"),
    ("step_other_sum", "rest of steps, sum s"),
)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    summary = []
    for executor in EXECUTORS:
        measured = [r for r in runs if r["executor"] == executor]
        if measured:
            row: dict[str, Any] = {"executor": executor, "runs": len(measured)}
            for key, _ in COLUMNS:
                row[key] = statistics.median(r[key] for r in measured)
            summary.append(row)
    return summary


def markdown_table(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| executor | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for row in summary:
        cells = " | ".join(f"{row[key]:.1f}" for key, _ in COLUMNS)
        lines.append(f"| {row['executor']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each executor")
    parser.add_argument("--database-url", help="a PostgreSQL to load the demo data into")
    parser.add_argument("--scale", type=int, default=1, help="demo data scale")
    parser.add_argument(
        "--executors",
        default=",".join(EXECUTORS),
        help=f"comma-separated subset of: {', '.join(EXECUTORS)}",
    )
    parser.add_argument("--results-dir", type=Path, default=REPOSITORY_ROOT / "bench_results")
    args = parser.parse_args(argv)
    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    unknown = sorted(set(executors) - set(EXECUTORS))
    if unknown:
        parser.error(f"unknown executor(s): {unknown}")

    started_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    machine_at_start = machine()
    url = demo_database(args)
    partition = datetime.now(UTC).date().isoformat()
    runs: list[dict[str, Any]] = []
    rows: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="sqlgym-hourly-") as scratch:
        for repeat in range(1, args.repeat + 1):
            for number, executor in enumerate(executors):
                work = Path(scratch) / f"{repeat}-{number}"
                outcome, written = run_once(executor, url, partition, work)
                if executor != DAGSTER_ALONE:  # the rows the project's runs wrote
                    rows = written
                runs.append({**outcome, "repeat": repeat})
                print(
                    f"{executor:38} #{repeat}: wall {outcome['wall_seconds']:5.1f} s, "
                    f"to RUN_START {outcome['startup_before_run_seconds']:4.1f} s, "
                    f"run {outcome['run_span_seconds']:5.1f} s, "
                    f"extract+write {outcome['extract_write_sum']:4.1f} s, "
                    f"checks {outcome['checks_sum']:5.1f} s",
                    flush=True,
                )
    summary = summarize(runs)
    report = {
        "started_at": started_at,
        "partition": partition,
        "rows_written": sum(rows.values()),
        "rows_per_table": rows,
        "repeat": args.repeat,
        "machine": {**machine_at_start, "load_average_at_end": os.getloadavg()},
        "packages": package_versions(),
        "summary": summary,
        "runs": runs,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = f"hourly-{started_at.replace(':', '')}"
    (args.results_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str))
    text = (
        f"# Hourly run, 21 tables, demo data, {started_at}\n\n"
        f"Partition {partition}, {report['rows_written']:,} rows written per run; "
        f"{machine_at_start['cores']} cores, load average at start "
        f"{machine_at_start['load_average_at_start'][0]:.2f}. Medians of {args.repeat} run(s); "
        "sums add up the steps' own times, which overlap when steps run in parallel.\n\n"
        + markdown_table(summary)
        + "\n"
    )
    (args.results_dir / f"{stem}.md").write_text(text)
    print()
    print(markdown_table(summary))
    print(f"\nwrote {args.results_dir / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
