"""What a user sees in the Dagster UI, read from a real dagster-webserver over its GraphQL API."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import instance_for_test

from sqlgym_assets.catalog import TABLES_BY_NAME, SyncMode
from sqlgym_assets.quality.checks import check_names
from sqlgym_assets_tests.helpers import busiest_day, materialize_tables

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


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


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
            _wait_until_up(url, server, log)
            yield url, partition, rows
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_until_up(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"webserver did not start: {log.read_text()}") from None
            time.sleep(0.5)


def test_the_ui_shows_assets_lineage_checks_schedules_and_row_counts(webserver) -> None:
    url, partition, rows = webserver

    nodes = {
        tuple(node["assetKey"]["path"]): node for node in _graphql(url, ASSETS_QUERY)["assetNodes"]
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

    (entry,) = _graphql(url, SCHEDULES_QUERY)["workspaceOrError"]["locationEntries"]
    (repository,) = entry["locationOrLoadError"]["repositories"]
    assert {(s["name"], s["cronSchedule"]) for s in repository["schedules"]} == {
        ("sqlgym_hourly_incremental", "5 * * * *"),
        ("sqlgym_hourly_snapshot", "5 * * * *"),
    }
    assert [sensor["name"] for sensor in repository["sensors"]] == ["sqlgym_run_failure_alert"]

    (users,) = _graphql(url, MATERIALIZATION_QUERY)["assetNodes"]
    (latest,) = users["assetMaterializations"]
    assert latest["partition"] == partition
    metadata = {entry["label"]: entry.get("intValue") for entry in latest["metadataEntries"]}
    assert metadata["dagster/row_count"] == rows
