"""The demo, as `make demo` runs it: every table materialized and every check passing."""

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from sqlgym_assets.catalog import TABLES
from sqlgym_assets.quality.checks import check_names
from sqlgym_assets_tests.helpers import lake_file


def demo(*arguments: str) -> subprocess.CompletedProcess:
    """`python -m sqlgym_assets.demo`, as `make demo` runs it."""
    return subprocess.run(
        [sys.executable, "-m", "sqlgym_assets.demo", *arguments],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_fills_its_days_shows_passing_checks_and_stops(tmp_path: Path, monkeypatch) -> None:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    lake = tmp_path / "lake"
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    for name in ("SQLGYM_DATABASE_URL", "SQLGYM_DB_SECRET_ID", "SQLGYM_LAKE_URL"):
        monkeypatch.delenv(name, raising=False)

    completed = demo("--lake", str(lake), "--pg-data", str(tmp_path / "pgdata"))

    try:
        assert completed.returncode == 0, completed.stderr[-3000:]
        # The one line README gives for the CLI on the demo, while its database still runs.
        exports = demo("--env", "--lake", str(lake), "--pg-data", str(tmp_path / "pgdata"))
    finally:
        stopped = demo("--stop", "--remove-data", "--pg-data", str(tmp_path / "pgdata"))
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "pgdata").exists()
    variables = dict(
        line.removeprefix("export ").split("=", 1) for line in exports.stdout.splitlines()
    )
    assert {"DAGSTER_HOME", "SQLGYM_DATABASE_URL", "SQLGYM_LAKE_URL"} <= set(variables)
    assert variables["SQLGYM_LAKE_URL"] == str(lake)
    # The days before today of the incremental and append tables, as a backfill writes them.
    filled = [line.split() for line in completed.stdout.splitlines() if line.startswith("filled")]
    assert len(filled) == 7  # seven days back from now touch seven dates before today
    for _, day, rows, *_ in filled:
        day = day.rstrip(":")
        paths = [lake_file(lake, t.name, day) for t in TABLES if t.cursor_column is not None]
        assert int(rows) == sum(pq.read_metadata(path).num_rows for path in paths)
    # The oldest date holds only the hours after now - 7 days: none of the demo's rows when the
    # demo runs after about 19:30 UTC. Every later date is whole.
    assert all(int(rows) > 0 for _, _, rows, *_ in filled[1:])
    summary = completed.stdout[completed.stdout.index("SQLGym lake, partition") :]
    # The demo's own day: a run that crosses midnight UTC must not compare with the next one.
    partition = summary.splitlines()[0].split()[-1].rstrip(":")
    lines = {line.split()[0]: line.split() for line in summary.splitlines()[3:] if line.strip()}
    assert set(lines) == {table.name for table in TABLES}
    for table in TABLES:
        name, mode, rows, *checks, file = lines[table.name]
        assert mode == table.sync_mode.value
        # Windowed tables are reconciled too: with every day of the demo's rows in the lake,
        # the current state holds every live key.
        expected = len(check_names(table))
        assert checks == [f"{expected}/{expected}", "passed"], lines[table.name]
        path = lake_file(lake, table.name, partition)
        assert file == str(path)
        assert int(rows) == pq.read_metadata(path).num_rows
