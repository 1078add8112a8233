"""The command lines a user runs, in a subprocess from the repository root, as they run them."""

import os
from pathlib import Path

import pytest

from sqlgym_assets.catalog import TABLES_BY_NAME
from sqlgym_assets.source.plan import partition_window
from sqlgym_assets_tests.helpers import (
    busiest_day,
    by_key,
    lake_file,
    lake_rows,
    run_command,
    source_rows,
)

USERS = TABLES_BY_NAME["users"]


@pytest.mark.parametrize(
    "command",
    [
        [
            *("dagster", "asset", "materialize"),
            *("-m", "sqlgym_assets.definitions", "--select", "sqlgym/users"),
        ],
        ["dg", "launch", "--assets", "sqlgym/users"],
    ],
    ids=["dagster-asset-materialize", "dg-launch"],
)
def test_cli_materializes_one_partition_into_the_lake(
    command: list[str], db, database_url: str, tmp_path: Path
) -> None:
    partition = busiest_day(db, USERS)
    lake = tmp_path / "lake"
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "SQLGYM_DATABASE_URL": database_url,
        "SQLGYM_LAKE_URL": str(lake),
    }
    environment.pop("SQLGYM_DB_SECRET_ID", None)

    completed = run_command([*command, "--partition", partition], environment, timeout=300)

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    path = lake_file(lake, "users", partition)
    expected = source_rows(db, USERS, partition_window(partition))
    assert expected
    assert by_key(lake_rows(USERS, path)) == by_key(expected)
    output = completed.stdout + completed.stderr
    assert "RUN_SUCCESS" in output
    # The project's own definitions add no notice to a user's screen (Dagster's note that
    # `dg launch` supersedes `dagster asset materialize` is Dagster's, and may stay).
    for category in ("PreviewWarning", "BetaWarning", "DeprecationWarning"):
        assert category not in output, output[output.index(category) - 300 :][:600]
