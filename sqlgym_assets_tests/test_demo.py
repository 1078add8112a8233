"""The demo, as `make demo` runs it: every table materialized and every check passing."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from sqlgym_assets.catalog import TABLES
from sqlgym_assets.demo.embedded_postgres import stop_embedded_postgres
from sqlgym_assets_tests.helpers import lake_file


def test_demo_materializes_all_tables_and_shows_passing_checks(tmp_path: Path) -> None:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    lake = tmp_path / "lake"
    environment = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    for name in ("SQLGYM_DATABASE_URL", "SQLGYM_DB_SECRET_ID", "SQLGYM_LAKE_URL"):
        environment.pop(name, None)

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "sqlgym_assets.demo",
            "--lake",
            str(lake),
            "--pg-data",
            str(tmp_path / "pgdata"),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )

    stop_embedded_postgres(tmp_path / "pgdata")  # the demo leaves it running for `make dev`
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = completed.stdout[completed.stdout.index("SQLGym lake, partition") :]
    # The demo's own day: a run that crosses midnight UTC must not compare with the next one.
    partition = summary.splitlines()[0].split()[-1].rstrip(":")
    lines = {line.split()[0]: line.split() for line in summary.splitlines()[3:] if line.strip()}
    assert set(lines) == {table.name for table in TABLES}
    for table in TABLES:
        name, mode, rows, *checks, file = lines[table.name]
        assert mode == table.sync_mode.value
        assert checks == ["4/4", "passed"], lines[table.name]
        path = lake_file(lake, table.name, partition)
        assert file == str(path)
        assert int(rows) == pq.read_metadata(path).num_rows
