"""What a user sees in the Dagster UI, read from a real dagster-webserver over its GraphQL API."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import instance_for_test

from sqlgym_assets.catalog import TABLES_BY_NAME, SyncMode
from sqlgym_assets.quality.checks import check_names
from sqlgym_assets_tests.helpers import busiest_day, graphql, materialize_tables, wait_for_webserver

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
USERS = TABLES_BY_NAME["users"]

ASSETS_QUERY = """
{
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    groupName
    isPartitioned
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
}
"""
SCHEDULES_QUERY = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          ... on RepositoryLocation {
            repositories { schedules { name cronSchedule } sensors { name } }
          }
          ... on PythonError { message }
        }
      }
    }
  }
}
"""
MATERIALIZATION_QUERY = """
{
  assetNodes(assetKeys: [{path: ["sqlgym", "users"]}]) {
    assetMaterializations(limit: 1) {
      partition
      metadataEntries { label ... on IntMetadataEntry { intValue } }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def webserver(db, source_env, tmp_path, monkeypatch) -> Iterator[tuple[str, str, int]]:
    """dagster-webserver on the project, over an instance holding one users materialization."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    partition = busiest_day(db, USERS)
    with instance_for_test(temp_dir=str(home)) as instance:
        result = materialize_tables([USERS], partition, instance=instance)
    (materialization,) = result.asset_materializations_for_node("sqlgym__users")
    rows = materialization.metadata["dagster/row_count"].value

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "webserver.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-webserver"),
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=REPOSITORY_ROOT,
            env={**os.environ, "DAGSTER_HOME": str(home)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_webserver(url, server, log)
            yield url, partition, rows
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_the_ui_shows_assets_lineage_checks_schedules_and_row_counts(webserver) -> None:
    url, partition, rows = webserver

    nodes = {
        tuple(node["assetKey"]["path"]): node for node in graphql(url, ASSETS_QUERY)["assetNodes"]
    }
    lake = {key: node for key, node in nodes.items() if key[0] == "sqlgym"}
    assert len(lake) == 21
    assert {key for key in nodes if key[0] == "postgres"} == {("postgres", k[1]) for k in lake}
    for key, node in lake.items():
        assert node["isPartitioned"]
        assert node["dependencyKeys"] == [{"path": ["postgres", key[1]]}]
        checks = {check["name"] for check in node["assetChecksOrError"]["checks"]}
        assert checks == set(check_names(TABLES_BY_NAME[key[1]]))
        assert len(checks) == (4 if TABLES_BY_NAME[key[1]].sync_mode is SyncMode.SNAPSHOT else 5)

    (entry,) = graphql(url, SCHEDULES_QUERY)["workspaceOrError"]["locationEntries"]
    (repository,) = entry["locationOrLoadError"]["repositories"]
    assert {(s["name"], s["cronSchedule"]) for s in repository["schedules"]} == {
        ("sqlgym_hourly_incremental", "5 * * * *"),
        ("sqlgym_hourly_snapshot", "5 * * * *"),
    }
    assert [sensor["name"] for sensor in repository["sensors"]] == ["sqlgym_run_failure_alert"]

    (users,) = graphql(url, MATERIALIZATION_QUERY)["assetNodes"]
    (latest,) = users["assetMaterializations"]
    assert latest["partition"] == partition
    metadata = {entry["label"]: entry.get("intValue") for entry in latest["metadataEntries"]}
    assert metadata["dagster/row_count"] == rows
