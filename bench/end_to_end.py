"""What a user waits for: `dagster asset materialize` of one partition, checks included.

One run, one PostgreSQL (the embedded one over loopback TCP unless ``--database-url``), and, each
in a process of its own, ``--repeat`` times and interleaved, the command a user runs:

    dagster asset materialize -f bench/end_to_end_location.py --select sqlgym/<t> --partition <p>

for three partitions of the bench's tables (bench/end_to_end_location.py, built by the project's
own factory, checks included):

- ``empty``: a day of the append table that holds no row: the fixed cost of one materialization;
- ``whole table``: the ``--rows``-row snapshot table (extract_bench.py's submissions);
- ``busy day``: a day of ``--busy-rows`` rows of an append table (with its key set and
  reconciliation).

Each is set beside raw ``COPY (<the project's own SELECT>) TO STDOUT (FORMAT binary)`` of the same
rows, timed in this process in the same run. A partition's net time is its wall time less the
empty partition's; the ratio is raw COPY's time over that. Each run's own event log splits its
wall time: start-up (launch to STEP_START), extract and write (STEP_START to HANDLED_OUTPUT: the
snapshot, counts, key set, stream, file, key index), checks (HANDLED_OUTPUT to STEP_SUCCESS) and
exit; extract and write split again into opening the snapshot (to the step's "reading" line:
counts and live keys), streaming into the file (the materialization's ``sqlgym/write_seconds``)
and the rest (key index, key set, sync record). Peak RSS is the command's own (``wait4``).
Results go to ``--results-dir``.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
if str(REPOSITORY_ROOT) not in sys.path:  # run as a script: the project is importable
    sys.path.insert(0, str(REPOSITORY_ROOT))

from end_to_end_location import BUSY_DAY, WHOLE_TABLE  # noqa: E402  (this folder)
from extract_bench import (  # noqa: E402  (this folder)
    DATA_START,
    MEASURED_DAY,
    NullSink,
    embedded_server_on_loopback,
    ensure_bench_table,
    machine,
    package_versions,
)

LOCATION = Path(__file__).resolve().parent / "end_to_end_location.py"
BUSY_TABLE = BUSY_DAY.name
EMPTY_DAY = DATA_START - timedelta(days=30)
# The targets of issue 14, for the report to say which are met.
TARGETS = {"whole table": 0.6, "busy day": 0.5}
FIXED_COST_TARGET_SECONDS = 3.0
PEAK_RSS_TARGET_MB = 400


def ensure_busy_table(database_url: str, schema: str, rows: int) -> None:
    """``<schema>.busy_submissions``: ``rows`` of the bench's submissions, all on MEASURED_DAY."""
    from psycopg2 import sql

    ensure_derived_table(
        database_url,
        schema,
        BUSY_TABLE,
        f"busy day v1: {rows} rows",
        sql.SQL(
            "SELECT id, user_id, problem_id, query, is_correct, execution_time, "
            "%s::timestamp + (row_number() OVER (ORDER BY id) - 1) * (interval '1 day' / %s) "
            "AS submitted_at, query_result, memory_used_mb FROM {source} ORDER BY id LIMIT %s"
        ).format(source=sql.Identifier(schema, "submissions")),
        (MEASURED_DAY, rows, rows),
    )


def ensure_derived_table(
    database_url: str, schema: str, name: str, tag: str, query: Any, parameters: tuple
) -> None:
    """``<schema>.<name>`` made by ``query`` from the bench's submissions, keyed and indexed as
    they are, unless its comment already says it is ``tag``: built once, not at every run."""
    import psycopg2
    from psycopg2 import sql

    table = sql.Identifier(schema, name)
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT obj_description(to_regclass(format('%%I.%%I', %s::text, %s::text)))",
            (schema, name),
        )
        if cursor.fetchone()[0] == tag:
            return
        print(f"building {schema}.{name} ({tag}) ...", flush=True)
        cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        cursor.execute(sql.SQL("CREATE TABLE {} AS ").format(table) + query, parameters)
        cursor.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(table))
        cursor.execute(sql.SQL("CREATE INDEX ON {} (submitted_at)").format(table))
        cursor.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(tag)))
    connection = psycopg2.connect(database_url)
    connection.autocommit = True  # VACUUM runs outside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("VACUUM (FREEZE, ANALYZE) {}").format(table))
    finally:
        connection.close()


def cases() -> dict[str, tuple[str, str]]:
    today = datetime.now(UTC).date().isoformat()
    return {
        "empty": (BUSY_TABLE, EMPTY_DAY.isoformat()),
        "whole table": (WHOLE_TABLE.name, today),
        "busy day": (BUSY_TABLE, MEASURED_DAY.isoformat()),
    }


def raw_copy_seconds(database_url: str, schema: str, table: str, partition: str) -> float:
    """COPY of the project's own SELECT for the partition, in its transaction and window."""
    import psycopg2

    from sqlgym_assets.source.plan import partition_window, plan_extract, window_parameters
    from sqlgym_assets.source.reader import PostgresResource

    spec = WHOLE_TABLE if table == WHOLE_TABLE.name else BUSY_DAY
    os.environ["SQLGYM_DATABASE_URL"] = database_url
    plan = plan_extract(spec, PostgresResource(source_schema=schema).source_columns(spec), schema)
    window = None if spec.cursor_column is None else partition_window(partition)
    started = time.perf_counter()
    connection = psycopg2.connect(database_url)
    try:
        connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with connection.cursor() as cursor:
            if window is not None:
                cursor.execute(
                    "SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
                    window_parameters(window),
                )
            cursor.copy_expert(f"COPY ({plan.select_sql}) TO STDOUT (FORMAT binary)", NullSink())
        connection.rollback()
    finally:
        connection.close()
    return time.perf_counter() - started


def materialize(database_url: str, schema: str, table: str, partition: str, work: Path) -> dict:
    home, lake = work / "dagster_home", work / "lake"
    home.mkdir(parents=True)
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    command = [
        *(sys.executable, "-m", "dagster", "asset", "materialize", "-f", str(LOCATION)),
        *("--select", f"sqlgym/{table}", "--partition", partition),
    ]
    environment = {k: v for k, v in os.environ.items() if k != "SQLGYM_DB_SECRET_ID"}
    environment.update(
        SQLGYM_DATABASE_URL=database_url,
        SQLGYM_LAKE_URL=str(lake),
        SQLGYM_BENCH_SCHEMA=schema,
        DAGSTER_HOME=str(home),
    )
    launched = time.time()
    with open(work / "dagster.log", "wb") as log:
        child = subprocess.Popen(
            command, cwd=REPOSITORY_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
        child.returncode = os.waitstatus_to_exitcode(status)
    exited = time.time()
    if child.returncode != 0:
        tail = (work / "dagster.log").read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{table} {partition}: exit code {child.returncode}:\n{tail}")
    return {
        "wall_seconds": exited - launched,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        **split_run(home, launched, exited),
    }


def split_run(home: Path, launched: float, exited: float) -> dict[str, Any]:
    from dagster import DagsterInstance

    os.environ["DAGSTER_HOME"] = str(home)
    with DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        records = instance.all_logs(run.run_id)
    first: dict[str, float] = {}
    checks: dict[str, bool] = {}
    rows = write_seconds = None
    for record in records:
        event = record.dagster_event
        if event is None:
            if record.user_message.startswith("reading "):  # the snapshot is open and counted
                first.setdefault("READING", record.timestamp)
            continue
        first.setdefault(event.event_type.name, record.timestamp)
        if event.event_type.name == "ASSET_MATERIALIZATION":
            metadata = event.event_specific_data.materialization.metadata
            rows = metadata["dagster/row_count"].value
            write_seconds = metadata["sqlgym/write_seconds"].value
        if event.event_type.name == "ASSET_CHECK_EVALUATION":
            checks[event.event_specific_data.check_name] = event.event_specific_data.passed
    if "RUN_SUCCESS" not in first:
        raise RuntimeError(f"the run in {home} did not succeed")
    return {
        "rows": rows,
        "checks_passed": checks,
        "startup_seconds": first["STEP_START"] - launched,
        "extract_write_seconds": first["HANDLED_OUTPUT"] - first["STEP_START"],
        # extract + write, split: opening the snapshot (counts and live keys), streaming the rows
        # into the file (the extract and the encoding overlap), and the rest (key index, key
        # set, sync record).
        "open_seconds": first["READING"] - first["STEP_START"],
        "stream_seconds": write_seconds,
        "keys_seconds": first["HANDLED_OUTPUT"] - first["READING"] - write_seconds,
        "checks_seconds": first["STEP_SUCCESS"] - first["HANDLED_OUTPUT"],
        "exit_seconds": exited - first["STEP_SUCCESS"],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    figures = (
        "wall_seconds",
        "peak_rss_mb",
        "startup_seconds",
        "extract_write_seconds",
        "open_seconds",
        "stream_seconds",
        "keys_seconds",
        "checks_seconds",
        "exit_seconds",
        "raw_copy_seconds",
    )
    summary = {}
    for case in cases():
        mine = [run for run in runs if run["case"] == case]
        summary[case] = {f: statistics.median(run[f] for run in mine) for f in figures}
        summary[case]["rows"] = mine[0]["rows"]
    empty = summary["empty"]["wall_seconds"]
    for case in TARGETS:
        net = summary[case]["wall_seconds"] - empty
        summary[case]["net_seconds"] = net
        summary[case]["x_raw_copy"] = summary[case]["raw_copy_seconds"] / net
    return summary


def markdown(summary: dict[str, dict[str, float]]) -> str:
    lines = [
        "| partition | rows | wall | net of empty | x raw COPY | start-up | extract + write "
        "| checks | exit | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, row in summary.items():
        net = f"{row['net_seconds']:.2f} s" if "net_seconds" in row else "-"
        ratio = f"{row['x_raw_copy']:.2f}" if "x_raw_copy" in row else "-"
        lines.append(
            f"| {case} | {row['rows']:,} | {row['wall_seconds']:.2f} s | {net} | {ratio} "
            f"| {row['startup_seconds']:.2f} s | {row['extract_write_seconds']:.2f} s "
            f"| {row['checks_seconds']:.2f} s | {row['exit_seconds']:.2f} s "
            f"| {row['peak_rss_mb']:.0f} MB |"
        )
    lines += [
        "",
        "| partition | open: snapshot, counts, live keys | stream into the file "
        "| key index, key set, sync record | checks |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, row in summary.items():
        lines.append(
            f"| {case} | {row['open_seconds']:.2f} s | {row['stream_seconds']:.2f} s "
            f"| {row['keys_seconds']:.2f} s | {row['checks_seconds']:.2f} s |"
        )
    lines += ["", "Targets:"]
    for case, target in TARGETS.items():
        value = summary[case]["x_raw_copy"]
        lines.append(f"- {case}: {value:.2f} of raw COPY, target {target}: {_met(value >= target)}")
    fixed = summary["empty"]["wall_seconds"]
    lines.append(
        f"- fixed cost (empty partition): {fixed:.2f} s, target {FIXED_COST_TARGET_SECONDS} s: "
        f"{_met(fixed <= FIXED_COST_TARGET_SECONDS)}"
    )
    peak = max(row["peak_rss_mb"] for row in summary.values())
    lines.append(
        f"- peak RSS: {peak:.0f} MB, target {PEAK_RSS_TARGET_MB} MB: "
        f"{_met(peak <= PEAK_RSS_TARGET_MB)}"
    )
    return "\n".join(lines) + "\n"


def _met(met: bool) -> str:
    return "met" if met else "NOT met"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the whole table")
    parser.add_argument("--busy-rows", type=int, default=1_000_000, help="rows of the busy day")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="a PostgreSQL to use instead of the embedded one")
    parser.add_argument("--schema", default="bench")
    parser.add_argument("--results-dir", type=Path, default=REPOSITORY_ROOT / "bench_results")
    args = parser.parse_args(argv)
    if args.busy_rows > args.rows:
        parser.error("--busy-rows cannot exceed --rows: the busy day is taken from the table")
    url = args.database_url
    if not url:
        from sqlgym_assets.demo.embedded_postgres import default_data_dir

        url = embedded_server_on_loopback(default_data_dir("bench"))
    ensure_bench_table(url, args.schema, args.rows)
    ensure_busy_table(url, args.schema, args.busy_rows)

    runs = []
    with tempfile.TemporaryDirectory(prefix="sqlgym-bench-e2e-") as directory:
        for repeat in range(args.repeat):
            for case, (table, partition) in cases().items():
                work = Path(directory) / f"{case.replace(' ', '_')}-{repeat}"
                run = materialize(url, args.schema, table, partition, work)
                run["raw_copy_seconds"] = raw_copy_seconds(url, args.schema, table, partition)
                runs.append({"case": case, "repeat": repeat, **run})
                print(f"{case} #{repeat + 1}: {run['wall_seconds']:.2f} s", flush=True)
    summary = summarize(runs)
    table = markdown(summary)
    report = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "packages": package_versions(),
        "rows": args.rows,
        "busy_rows": args.busy_rows,
        "runs": runs,
        "summary": summary,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "end_to_end.json").write_text(json.dumps(report, indent=2, default=str))
    (args.results_dir / "end_to_end.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
