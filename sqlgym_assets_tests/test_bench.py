"""`make bench` at a tiny size, for correctness only: the script runs every approach it can, writes
its results, and its project path writes exactly what a normal materialization writes.

Speed is measured by `make bench`, never asserted here. dlt is a `bench` extra that `make test`
does not install: without it the bench reports dlt as unavailable, and so does this test expect.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg2
import pyarrow.parquet as pq
import pytest
from psycopg2 import sql
from sqlalchemy.engine import make_url

from sqlgym_assets.catalog import TABLES, SyncMode
from sqlgym_assets.source.reader import PostgresResource
from sqlgym_assets_tests.helpers import empty_database, lake_file, materialize_tables, today

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
BENCH_SCRIPT = REPOSITORY_ROOT / "bench" / "extract_bench.py"
BENCH_SCHEMA = "sqlgym_bench_test"
BENCH_ROWS = 2_000


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("extract_bench", BENCH_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def bench_run(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Runs the bench script as `make bench` does, at 2,000 rows and one repeat."""
    root = tmp_path_factory.mktemp("bench")
    environment = {k: v for k, v in os.environ.items() if k != "SQLGYM_DB_SECRET_ID"}
    command = [
        sys.executable,
        str(BENCH_SCRIPT),
        *("--rows", str(BENCH_ROWS), "--repeat", "1"),
        *("--database-url", database_url, "--schema", BENCH_SCHEMA),
        *("--results-dir", str(root / "results"), "--work-dir", str(root / "work")),
    ]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=environment, timeout=600, check=False
        )
        assert completed.returncode == 0, completed.stdout[-5000:] + completed.stderr[-5000:]
        yield root
    finally:
        with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(BENCH_SCHEMA))
            )
        connection.close()


def _report(root: Path) -> dict[str, Any]:
    (json_path,) = (root / "results").glob("extract-*.json")
    return json.loads(json_path.read_text())


def test_bench_writes_results_with_every_approach_and_positive_figures(bench_run: Path) -> None:
    report = _report(bench_run)
    (markdown_path,) = (bench_run / "results").glob("extract-*.md")
    markdown = markdown_path.read_text()

    assert report["data"]["rows"] == BENCH_ROWS
    day_rows = report["data"]["day_rows"]
    assert 0 < day_rows < BENCH_ROWS
    assert report["machine"]["cores"] >= 1
    assert report["packages"]["dagster"] != "not installed"
    summary = {(row["approach"], row["scope"]): row for row in report["summary"]}
    assert set(summary) == {(a, s) for a in bench.APPROACHES for s in bench.SCOPES}
    dlt_installed = importlib.util.find_spec("dlt") is not None
    for (approach, scope), row in summary.items():
        if approach == "dlt" and not dlt_installed:
            assert row["status"] == "unavailable", row
            assert "dlt" in row["reason"]
            continue
        assert row["status"] == "measured", row
        assert row["rows"] == (BENCH_ROWS if scope == "full" else day_rows), row
        for figure in ("rows_per_second", "seconds", "peak_rss_mb", "x_raw_copy", "x_old_way"):
            assert row[figure] > 0, (approach, scope, figure)
        assert row["label"] in markdown
    for approach in ("project_local", "project_s3"):
        for scope in bench.SCOPES:
            row = summary[(approach, scope)]
            assert row["materialize_seconds"] >= row["seconds"] > 0
            assert row["peak_rss_until_written_mb"] > 0
    for run in report["runs"]:
        if run["approach"].startswith("project"):
            checks = run["checks_passed"]
            # The day's table is an append table: reconciled, with its other days not in the lake.
            assert len(checks) == (4 if run["scope"] == "full" else 5), run
            assert {name for name, passed in checks.items() if not passed} <= {
                "keys_match_source"
            }, run
            assert run["source_row_count"] == run["rows"]


@pytest.mark.parametrize("scope", ["full", "day"])
def test_bench_project_path_writes_what_a_normal_materialization_writes(
    bench_run: Path, source_env: Path, scope: str
) -> None:
    (run,) = [
        r
        for r in _report(bench_run)["runs"]
        if r["approach"] == "project_local" and r["scope"] == scope
    ]
    table = bench.bench_table_spec(scope)
    partition = bench.partition_for(scope)

    materialize_tables([table], partition, postgres=PostgresResource(source_schema=BENCH_SCHEMA))

    written_by_bench = pq.read_table(run["uri"])
    written_normally = pq.read_table(lake_file(source_env, table.name, partition))
    assert written_by_bench.schema.equals(written_normally.schema)
    assert written_by_bench.num_rows == run["rows"] > 0
    assert written_by_bench.sort_by("id").equals(written_normally.sort_by("id"))


def test_bench_embedded_server_on_loopback_is_read_over_tcp() -> None:
    """`make bench` reads its embedded server over TCP, as production reads its database."""
    from sqlgym_assets.demo.embedded_postgres import stop_embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="sqlgym-bench-tcp-"))
    data_dir = root / "pgdata"
    try:
        url = bench.embedded_server_on_loopback(data_dir)
        assert bench.transport_of(url) == "TCP to 127.0.0.1"
        with psycopg2.connect(url) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT host(inet_server_addr()), inet_server_port()")
            assert cursor.fetchone() == ("127.0.0.1", make_url(url).port)
        connection.close()
    finally:
        stop_embedded_postgres(data_dir)
        stopped = not (data_dir / "postmaster.pid").exists()
        shutil.rmtree(root, ignore_errors=True)
    assert stopped


def test_reconciliation_bench_finds_what_re_reading_every_day_finds(tmp_path: Path) -> None:
    """The bench fails if the key index and a re-read of every day disagree; here at 5,000 keys."""
    report = _run_bench(
        "reconciliation_bench.py",
        ["--keys", "5000", "--days", "2,5", "--repeat", "1"],
        tmp_path,
        "reconciliation.json",
    )
    assert [row["days"] for row in report["results"]] == [2, 5]
    for row in report["results"]:
        assert row["live_keys"] == 5000 - 10 * (row["days"] - 1)
        assert (row["missing_keys"], row["surviving_keys"]) == (0, 0)
        for figure in ("index_update_seconds", "check_seconds", "reread_seconds"):
            assert row[figure] > 0
    assert "| 5 |" in (tmp_path / "reconciliation.md").read_text()


def test_end_to_end_bench_times_three_cli_materializations_with_their_checks(
    database_url: str, tmp_path: Path
) -> None:
    """bench/end_to_end.py at 3,000 rows: each partition really materialized by the CLI, its
    checks returned, its wall time split by its own events."""
    report = _run_bench(
        "end_to_end.py",
        [
            *("--rows", "3000", "--busy-rows", "1000", "--repeat", "1"),
            *("--database-url", database_url, "--schema", "sqlgym_e2e_test"),
        ],
        tmp_path,
        "end_to_end.json",
    )
    runs = {run["case"]: run for run in report["runs"]}
    assert {case: run["rows"] for case, run in runs.items()} == {
        "empty": 0,
        "whole table": 3000,
        "busy day": 1000,
    }
    assert all(runs["whole table"]["checks_passed"].values())
    assert all(runs["busy day"]["checks_passed"].values())  # its one day holds every key
    # The empty day's lake holds none of the table's 1,000 keys: only the reconciliation fails.
    empty = runs["empty"]["checks_passed"]
    assert [name for name, passed in empty.items() if not passed] == ["keys_match_source"]
    for run in runs.values():
        parts = ("startup_seconds", "extract_write_seconds", "checks_seconds", "exit_seconds")
        assert sum(run[part] for part in parts) == pytest.approx(run["wall_seconds"], abs=0.01)
        steps = ("open_seconds", "stream_seconds", "keys_seconds")
        assert all(run[step] > 0 for step in steps)
        assert sum(run[step] for step in steps) == pytest.approx(run["extract_write_seconds"])
        assert run["peak_rss_mb"] > 0 and run["raw_copy_seconds"] > 0
    assert "Targets:" in (tmp_path / "end_to_end.md").read_text()


def test_hourly_bench_runs_the_project_and_dagster_alone_on_the_same_21_assets(
    database_url: str, tmp_path: Path
) -> None:
    """bench/hourly_run.py, once each: the project's run synced every table; Dagster alone ran
    the same 21 steps with their checks and wrote nothing."""
    project, alone = "project default", "Dagster alone (the same assets and checks doing no work)"
    with empty_database(database_url, "sqlgym_hourly_bench") as url:
        report = _run_bench(
            "hourly_run.py",
            ["--repeat", "1", "--executors", f"{project},{alone}", "--database-url", url],
            tmp_path,
            "hourly-*.json",
        )
    runs = {run["executor"]: run for run in report["runs"]}
    assert runs.keys() == {project, alone}
    assert runs[project]["steps"] == runs[alone]["steps"] == len(TABLES)
    assert len(report["rows_per_table"]) == len(TABLES) and report["rows_written"] > 0
    assert runs[project]["checks_sum"] > 0
    assert runs[alone]["extract_write_sum"] == runs[alone]["checks_sum"] == 0
    assert [row["executor"] for row in report["summary"]] == [project, alone]


def test_backfill_bench_compares_a_range_run_with_a_run_per_day(
    database_url: str, tmp_path: Path
) -> None:
    """bench/backfill_bench.py over 2 days of each case: both ways really ran, on a database of
    its own, and wrote the same rows, which are the source's rows of those days."""
    arguments = ["--days", "2", "--rows", "3000", "--scale-days", "2", "--schema", BENCH_SCHEMA]
    with empty_database(database_url, "sqlgym_backfill_bench") as url:
        report = _run_bench(
            "backfill_bench.py", [*arguments, "--database-url", url], tmp_path, "backfill.json"
        )
        last_demo_day = date.fromisoformat(today())
        days = {
            "demo data": (last_demo_day - timedelta(days=1), last_demo_day),
            "at scale": (bench.DATA_START, bench.DATA_START + timedelta(days=1)),
        }
        connection = psycopg2.connect(url)
        try:
            with connection.cursor() as cursor:
                windowed = [t for t in TABLES if t.sync_mode is not SyncMode.SNAPSHOT]
                expected = {
                    "demo data": sum(
                        _rows_in(cursor, sql.Identifier(t.name), t.cursor_column, days["demo data"])
                        for t in windowed
                    ),
                    "at scale": _rows_in(
                        cursor,
                        sql.Identifier(BENCH_SCHEMA, "daily_submissions"),
                        "submitted_at",
                        days["at scale"],
                    ),
                }
        finally:
            connection.close()
    markdown = (tmp_path / "backfill.md").read_text()
    cases = {case["case"]: case for case in report["cases"]}
    assert set(cases) == set(expected)
    for name, case in cases.items():
        assert case["rows_compared"] == expected[name] > 0, name
        assert case["first_day"] == days[name][0].isoformat()
        assert len(case["single_day_runs"]["runs"]) == case["days"] == 2
        for run in (case["range_run"], *case["single_day_runs"]["runs"]):
            assert run["wall_seconds"] > 0 and run["peak_rss_mb"] > 0
        assert f"| {name} | 2 | {expected[name]:,} |" in markdown


def _rows_in(cursor, table: sql.Identifier, column: str, days: tuple[date, date]) -> int:
    """The rows whose ``column`` falls in [first day, the day after the last)."""
    query = sql.SQL("SELECT count(*) FROM {} WHERE {column} >= %s AND {column} < %s").format(
        table, column=sql.Identifier(column)
    )
    cursor.execute(query, (days[0], days[1] + timedelta(days=1)))
    return cursor.fetchone()[0]


def _run_bench(script: str, arguments: list[str], results_dir: Path, report: str) -> dict:
    """Runs bench/<script> as `make bench` does, its results in ``results_dir``; its report."""
    completed = subprocess.run(
        [
            sys.executable,
            str(REPOSITORY_ROOT / "bench" / script),
            *arguments,
            "--results-dir",
            str(results_dir),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (written,) = results_dir.glob(report)  # a name, or a pattern for a dated report
    return json.loads(written.read_text())
