"""The run launchers' deployments (deploy/ecs/, deploy/k8s/) and the IAM policy of the runs' role.

- ECS: deploy/ecs/dagster.yaml is deploy/dagster.yaml plus its run_launcher section, and a
  DagsterInstance loads it (storage on the tests' PostgreSQL through verified TLS) with an
  EcsRunLauncher configured as the file says.
- Kubernetes: the instance that Dagster's Helm chart renders from deploy/k8s/values.yaml (the
  chart's template keys, written out below) has deploy/dagster.yaml's settings, loads with
  dagster-k8s, and its K8sRunLauncher submits, to a recording stand-in for the Kubernetes API, a
  Job whose pod gets the run ConfigMap, the runs' service account and the image pull settings.
- IAM: the project's own S3 and Secrets Manager code runs against SeaweedFS and moto through
  recording proxies. Every request, mapped to its IAM action and resource, must be allowed by
  deploy/ecs/task-role-policy.json, and every statement of the policy must be needed.
"""

from __future__ import annotations

import contextlib
import copy
import http.server
import io
import json
import os
import re
import shutil
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pytest
import yaml
from dagster import AssetSelection, DagsterInstance, DagsterRun, materialize
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.ecs.container_context import EcsContainerContext
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresRunStorage
from moto.iam.access_control import IAMPolicyStatement, PermissionResult
from sqlalchemy.engine import make_url

from sqlgym_assets.assets import LAKE_IO_MANAGER_KEY, build_lake_asset, lake_asset_key
from sqlgym_assets.catalog import TABLES_BY_NAME
from sqlgym_assets.lake import writer
from sqlgym_assets.lake.command import main as sqlgym_lake
from sqlgym_assets.lake.layout import LakeSettings, lake_settings, partition_uri
from sqlgym_assets.lake.lifecycle import apply_abort_incomplete_uploads_rule
from sqlgym_assets.lake.reader import partition_exists, read_table
from sqlgym_assets.source.pseudonymize import KEY_ENV, KEY_SECRET_ENV, PERSONAL_DATA_ENV
from sqlgym_assets.source.reader import PostgresResource
from sqlgym_assets_tests.conftest import AWS_TEST_ENV
from sqlgym_assets_tests.helpers import (
    REPOSITORY_ROOT,
    TEST_PSEUDONYMIZATION_KEY,
    FaultyProxy,
    TlsEndpoint,
    empty_database,
    env_lake,
    instance_storage_variables,
    materialize_tables,
    run_command,
    service,
    today,
)
from sqlgym_assets_tests.test_s3_and_secrets import secret_for

DEPLOY_INSTANCE_FILE = REPOSITORY_ROOT / "deploy" / "dagster.yaml"
ECS_INSTANCE_FILE = REPOSITORY_ROOT / "deploy" / "ecs" / "dagster.yaml"
TASK_ROLE_POLICY_FILE = REPOSITORY_ROOT / "deploy" / "ecs" / "task-role-policy.json"
HELM_VALUES_FILE = REPOSITORY_ROOT / "deploy" / "k8s" / "values.yaml"
RUN_CONFIGMAP_FILE = REPOSITORY_ROOT / "deploy" / "k8s" / "configmap.yaml"
RUN_SERVICE_ACCOUNT_FILE = REPOSITORY_ROOT / "deploy" / "k8s" / "run-serviceaccount.yaml"
# Both launchers' instances keep their runs in this database of the tests' server.
INSTANCE_DATABASE = "sqlgym_dagster_launchers"
CODE_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sqlgym-assets:test"


@pytest.fixture(scope="module")
def instance_database(database_url: str) -> Iterator[str]:
    with empty_database(database_url, INSTANCE_DATABASE) as url:
        yield url


def point_instance_storage_at(
    monkeypatch: pytest.MonkeyPatch, tls_server: TlsEndpoint, home: Path
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in instance_storage_variables(tls_server, INSTANCE_DATABASE).items():
        monkeypatch.setenv(name, value)


# ECS ---------------------------------------------------------------------------------------------

# What the daemon's task is started with, as deploy/ecs/README.md lists it.
ECS_DAEMON_ENVIRONMENT = {
    "SQLGYM_RUN_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/sqlgym-run",
    "SQLGYM_RUN_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/sqlgym-run-execution",
    "SQLGYM_RUN_LOG_GROUP": "/ecs/sqlgym-runs",
    "DAGSTER_PG_PASSWORD_SECRET_ARN": (
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:dagster-instance-pg-AbCdEf"
    ),
    "SQLGYM_DB_SECRET_ID": "prod/sqlgym/readonly",
    "SQLGYM_PSEUDONYMIZATION_SECRET_ID": "prod/sqlgym/pseudonymization-key",
    "SQLGYM_LAKE_URL": "s3://sqlgym-lake/postgres-sync",
}
ECS_RUN_ENVIRONMENT = (
    "SQLGYM_DB_SECRET_ID",
    "SQLGYM_PSEUDONYMIZATION_SECRET_ID",
    "SQLGYM_LAKE_URL",
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_DB",
    "DAGSTER_PG_USERNAME",
    "PGSSLROOTCERT",
)


def test_the_ecs_instance_is_the_production_one_plus_its_run_launcher() -> None:
    production = DEPLOY_INSTANCE_FILE.read_text()
    ecs = ECS_INSTANCE_FILE.read_text()

    # Word for word, comments included: a change to deploy/dagster.yaml must be made here too.
    assert ecs.startswith(production)
    assert list(yaml.safe_load(ecs.removeprefix(production))) == ["run_launcher"]


def test_the_ecs_instance_loads_with_its_ecs_run_launcher(
    aws_env, instance_database, tls_server: TlsEndpoint, tmp_path, monkeypatch
) -> None:
    # aws_env: the launcher makes its boto3 clients when it is built (no call), with a region.
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ECS_INSTANCE_FILE, home / "dagster.yaml")
    point_instance_storage_at(monkeypatch, tls_server, home)
    for name, value in ECS_DAEMON_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)

    with DagsterInstance.get() as instance:
        launcher = instance.run_launcher
        storage = instance.run_storage

    assert type(storage) is PostgresRunStorage
    assert isinstance(launcher, EcsRunLauncher)
    assert launcher.use_current_ecs_task_config
    assert launcher.task_role_arn == ECS_DAEMON_ENVIRONMENT["SQLGYM_RUN_TASK_ROLE_ARN"]
    assert launcher.execution_role_arn == ECS_DAEMON_ENVIRONMENT["SQLGYM_RUN_EXECUTION_ROLE_ARN"]
    assert launcher.task_definition_dict["log_group"] == "/ecs/sqlgym-runs"
    assert launcher.task_definition_dict["requires_compatibilities"] == ["FARGATE"]
    assert launcher.container_name == "run"
    assert launcher.run_resources == {"cpu": "1024", "memory": "2048"}
    # What a run's task gets: the launching process's values of the listed variables, and the
    # instance's password as an ECS secret; no secret by tag (that would list Secrets Manager).
    run = DagsterRun(job_name="sqlgym_hourly_incremental_job")
    container = EcsContainerContext.create_for_run(run, launcher)
    passed = {name: os.environ[name] for name in ECS_RUN_ENVIRONMENT}
    assert container.get_environment_dict() == passed
    assert container.get_secrets_dict(launcher.secrets_manager) == {
        "DAGSTER_PG_PASSWORD": ECS_DAEMON_ENVIRONMENT["DAGSTER_PG_PASSWORD_SECRET_ARN"]
    }
    assert launcher.secrets_tags == []


# Kubernetes --------------------------------------------------------------------------------------

# `helm install dagster dagster/dagster --namespace sqlgym -f deploy/k8s/values.yaml`
# (deploy/k8s/README.md): the chart names its objects after the release ("dagster" holds the
# chart's name, so its full name is "dagster" alone).
HELM_RELEASE = "dagster"
HELM_NAMESPACE = "sqlgym"
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's global.dagsterHome default


def _present(mapping: dict[str, Any], source: str, target: str | None = None) -> dict[str, Any]:
    """``{target: value}`` when the chart's ``{{- if value }}`` would write it, else nothing."""
    value = mapping.get(source)
    return {target or source: value} if value else {}


def chart_postgres_config(values: dict[str, Any]) -> dict[str, Any]:
    """helpers/instance/_postgresql.tpl, for an external database (postgresql.enabled false)."""
    postgresql = values["postgresql"]
    return {
        "postgres_db": {
            "username": postgresql["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": postgresql["postgresqlHost"],
            "db_name": postgresql["postgresqlDatabase"],
            "port": postgresql["service"]["port"],
            "params": postgresql["postgresqlParams"],
            **_present(postgresql, "postgresqlScheme", "scheme"),
        }
    }


def chart_service_account_name(values: dict[str, Any]) -> str:
    """helpers/_helpers.tpl's dagster.serviceAccountName."""
    return (
        values.get("global", {}).get("serviceAccountName")
        or values.get("serviceAccount", {}).get("name")
        or HELM_RELEASE
    )


def chart_k8s_run_launcher(values: dict[str, Any]) -> dict[str, Any]:
    """helpers/instance/_run-launcher.tpl's dagsterYaml.runLauncher.k8s."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s_config = launcher.get("runK8sConfig") or {}
    names = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    return {
        "load_incluster_config": launcher["loadInclusterConfig"],
        **_present(launcher, "kubeconfigFile", "kubeconfig_file"),
        "job_namespace": launcher.get("jobNamespace") or HELM_NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        **_present(values, "imagePullSecrets", "image_pull_secrets"),
        "service_account_name": chart_service_account_name(values),
        "dagster_home": values.get("global", {}).get("dagsterHome", CHART_DAGSTER_HOME),
        "instance_config_map": f"{HELM_RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        **(
            {"env_config_maps": [source["name"] for source in launcher["envConfigMaps"]]}
            if launcher.get("envConfigMaps")
            else {}
        ),
        **(
            {"env_secrets": [source["name"] for source in launcher["envSecrets"]]}
            if launcher.get("envSecrets")
            else {}
        ),
        **_present(launcher, "envVars", "env_vars"),
        **_present(launcher, "volumeMounts", "volume_mounts"),
        **_present(launcher, "volumes"),
        **_present(launcher, "labels"),
        **_present(launcher, "resources"),
        **({"fail_pod_on_run_failure": True} if launcher.get("failPodOnRunFailure") else {}),
        **_present(launcher, "schedulerName", "scheduler_name"),
        **_present(launcher, "securityContext", "security_context"),
        **(
            {"run_k8s_config": {names[key]: value for key, value in run_k8s_config.items()}}
            if run_k8s_config
            else {}
        ),
    }


def chart_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The dagster.yaml that templates/configmap-instance.yaml renders from ``values``, for the
    sections these values set; those left at the chart's defaults (scheduler, compute logs) are
    left out, and Dagster's own defaults apply to them here."""
    postgres = chart_postgres_config(values)
    daemon = values["dagsterDaemon"]
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert not any(queued.values())  # so the template writes no `config` (the limits are below)
    concurrency = values["concurrency"]
    assert concurrency["enabled"]
    return {
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": postgres,
        },
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": chart_k8s_run_launcher(values),
        },
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": postgres,
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": postgres,
        },
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "cancel_timeout_seconds": monitoring["cancelTimeoutSeconds"],
            "max_runtime_seconds": monitoring["maxRuntimeSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "run_retries": {
            "enabled": retries["enabled"],
            **_present(retries, "maxRetries", "max_retries"),
            "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        # helpers/instance/_concurrency.tpl
        "concurrency": {
            "pools": {"default_limit": concurrency["pools"]["defaultLimit"]},
            "runs": {
                "max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"],
                "tag_concurrency_limits": concurrency["runs"]["tagConcurrencyLimits"],
            },
        },
        **values.get("additionalInstanceConfig", {}),
    }


def helm_values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES_FILE.read_text())


def test_the_chart_renders_the_production_instances_settings() -> None:
    production = yaml.safe_load(DEPLOY_INSTANCE_FILE.read_text())
    rendered = chart_instance(helm_values())

    for section in ("concurrency", "run_retries", "telemetry", "freshness"):
        assert rendered[section] == production[section], section
    # The chart always writes these two; at Dagster's defaults they change nothing.
    assert rendered["run_monitoring"] == {
        **production["run_monitoring"],
        "max_resume_run_attempts": 0,
        "poll_interval_seconds": 120,
    }
    storage = rendered["run_storage"]["config"]["postgres_db"]
    production_storage = production["storage"]["postgres"]["postgres_db"]
    assert storage["scheme"] == production_storage["scheme"]
    # deploy/dagster.yaml names the CA bundle with $PGSSLROOTCERT, the chart's pods with a param.
    assert storage["params"] == {
        **production_storage["params"],
        "sslrootcert": "/etc/sqlgym/rds-ca/global-bundle.pem",
    }


def test_the_run_pods_configmap_and_account_are_the_ones_the_values_name() -> None:
    values = helm_values()
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    configmap = yaml.safe_load(RUN_CONFIGMAP_FILE.read_text())
    account = yaml.safe_load(RUN_SERVICE_ACCOUNT_FILE.read_text())

    assert launcher["envConfigMaps"] == [{"name": configmap["metadata"]["name"]}]
    assert set(configmap["data"]) == {
        "SQLGYM_DB_SECRET_ID",
        "SQLGYM_PSEUDONYMIZATION_SECRET_ID",
        "SQLGYM_LAKE_URL",
        "AWS_REGION",
    }
    pod_spec = launcher["runK8sConfig"]["podSpecConfig"]
    assert pod_spec["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    # The code server's own settings are not carried into runs: the launcher's are all they get.
    # It reads the ConfigMap itself: planning a run resolves SQLGYM_LAKE_URL there.
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": False}
    assert deployment["envConfigMaps"] == launcher["envConfigMaps"]


class KubernetesApiRecorder:
    """Answers the Kubernetes API's "create Job" on loopback as a cluster would (201, the Job
    back) and keeps every Job it was sent: what the K8sRunLauncher would have started."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, dict[str, Any]]] = []  # (request path, Job)
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.jobs.append((self.path, json.loads(body)))
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "recorder", "cluster": {"server": self.endpoint}}],
            "users": [{"name": "tests", "user": {"token": "tests"}}],
            "contexts": [{"name": "recorder", "context": {"cluster": "recorder", "user": "tests"}}],
            "current-context": "recorder",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def __enter__(self) -> KubernetesApiRecorder:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def operator_values(values: dict[str, Any], tls_server: TlsEndpoint, kubeconfig: Path) -> dict:
    """The values with what an operator fills in (the instance database's address, user and CA)
    set to the tests' server, and the launcher pointed at a kubeconfig instead of the cluster it
    would run in."""
    values = copy.deepcopy(values)
    through_tls = make_url(tls_server.url)
    postgresql = values["postgresql"]
    postgresql["postgresqlHost"] = through_tls.host
    postgresql["service"]["port"] = through_tls.port
    postgresql["postgresqlUsername"] = through_tls.username
    postgresql["postgresqlDatabase"] = INSTANCE_DATABASE
    postgresql["postgresqlParams"]["sslrootcert"] = str(tls_server.ca)
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher["loadInclusterConfig"] = False
    launcher["kubeconfigFile"] = str(kubeconfig)
    return values


def test_the_charts_instance_launches_runs_as_kubernetes_jobs_as_configured(
    instance_database, tls_server: TlsEndpoint, tmp_path, monkeypatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", make_url(tls_server.url).password or "")
    # Planning a run resolves the lake resource's SQLGYM_LAKE_URL, which the code server has
    # from the runs' ConfigMap.
    run_environment = yaml.safe_load(RUN_CONFIGMAP_FILE.read_text())["data"]
    monkeypatch.setenv("SQLGYM_LAKE_URL", run_environment["SQLGYM_LAKE_URL"])
    # The image the code server reports, in which the launcher starts runs.
    monkeypatch.setenv("DAGSTER_CURRENT_IMAGE", CODE_IMAGE)

    with KubernetesApiRecorder() as kubernetes:
        values = operator_values(helm_values(), tls_server, kubernetes.kubeconfig(tmp_path / "kc"))
        (home / "dagster.yaml").write_text(yaml.safe_dump(chart_instance(values)))
        # As a user launches a job: the chart's QueuedRunCoordinator queues the run, then the
        # daemon's run queue hands it to the K8sRunLauncher, which creates the Job.
        launched = run_command(
            [
                *("dagster", "job", "launch", "-w", "workspace.yaml"),
                *("-j", "sqlgym_hourly_incremental_job"),
                *("--tags", json.dumps({"dagster/partition": "2025-10-24"})),
            ],
            dict(os.environ),
        )
        assert launched.returncode == 0, launched.stderr[-3000:]
        daemon_log = tmp_path / "daemon.log"
        with service(
            ["dagster-daemon", "run", "-w", "workspace.yaml"], daemon_log, dict(os.environ)
        ):
            deadline = time.monotonic() + 120
            while not kubernetes.jobs:
                assert time.monotonic() < deadline, daemon_log.read_text()[-3000:]
                time.sleep(0.5)
        with DagsterInstance.get() as instance:
            launcher = instance.run_launcher
            (run,) = instance.get_runs()

    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.env_config_maps == ["sqlgym-run-env"]
    assert launcher.service_account_name == "sqlgym-dagster"
    assert (launcher.image_pull_policy, launcher.image_pull_secrets) == ("IfNotPresent", [])
    ((path, job),) = kubernetes.jobs
    assert path == f"/apis/batch/v1/namespaces/{HELM_NAMESPACE}/jobs"
    assert job["metadata"]["labels"]["dagster/run-id"] == run.run_id
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The runs' own account, with IRSA's role, and no token for the Kubernetes API.
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("sqlgym-run", False)
    assert not pod.get("imagePullSecrets")
    assert (container["image"], container["imagePullPolicy"]) == (CODE_IMAGE, "IfNotPresent")
    assert {"configMapRef": {"name": "sqlgym-run-env"}} in container["envFrom"]
    environment = {variable["name"]: variable for variable in container["env"]}
    assert environment["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "sqlgym-dagster-postgresql",
        "key": "postgresql-password",
    }
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["rds-ca"]["configMap"]["name"] == "sqlgym-rds-ca"
    assert environment["DAGSTER_HOME"]["value"] == CHART_DAGSTER_HOME
    assert container["resources"]["limits"] == {"memory": "2Gi"}
    assert job["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sqlgym"


# IAM ---------------------------------------------------------------------------------------------

PREFIX = "postgres-sync"
# The policy file's placeholders (deploy/ecs/README.md), each replaced by the tests' value.
POLICY_PLACEHOLDERS = ("DB_SECRET_ARN", "PSEUDONYMIZATION_SECRET_ARN", "LAKE_BUCKET", "LAKE_PREFIX")
# What the issue grants the runs' role, and what the code was found to need beyond it.
ACTIONS_THE_ISSUE_GRANTS = {
    "secretsmanager:GetSecretValue",
    "s3:PutObject",
    "s3:GetObject",
    "s3:ListBucket",
    "s3:AbortMultipartUpload",
}
# writer._S3Upload lists the unfinished uploads of the key it is about to write (to abort a
# killed writer's) before every S3 write; S3 offers no prefix condition for this listing.
ACTIONS_BEYOND_THE_ISSUE = {"s3:ListBucketMultipartUploads"}


@dataclass(frozen=True)
class AwsCall:
    """A request as IAM authorizes it: the action, the resource's ARN, the condition keys."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()


# Query parameters of ListObjects and ListObjectsV2: a bucket GET with only these is a listing.
LIST_PARAMETERS = {
    "list-type",
    "prefix",
    "delimiter",
    "max-keys",
    "continuation-token",
    "start-after",
    "marker",
    "encoding-type",
    "fetch-owner",
}
# ... and of ListMultipartUploads.
UPLOAD_LIST_PARAMETERS = {
    "uploads",
    "prefix",
    "delimiter",
    "key-marker",
    "upload-id-marker",
    "max-uploads",
    "encoding-type",
}


def s3_calls(request: FaultyProxy.Request) -> list[AwsCall]:
    """What a path-style S3 REST request needs from IAM to get the answer it got: its action, and
    for a read of a key that does not exist, the bucket's listing too, without a prefix: S3 answers
    404 only to a caller allowed to list the bucket, and 403 to others, which pyarrow and the
    project's existence checks take for a failure."""
    call = s3_call(request)
    if call.action == "s3:GetObject" and request.status == 404:
        bucket_arn = call.resource.partition("/")[0]
        return [call, AwsCall("s3:ListBucket", bucket_arn)]
    return [call]


def s3_call(request: FaultyProxy.Request) -> AwsCall:
    """The IAM action a path-style S3 REST request needs, after AWS's table of S3 API operations
    and their permissions. A request this does not know fails the test: a new kind of call must
    be looked at, not let through."""
    url = urllib.parse.urlsplit(request.path)
    bucket, _, key = urllib.parse.unquote(url.path).lstrip("/").partition("/")
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    query.pop("x-id", None)  # boto3's operation hint, no subresource
    method, bucket_arn = request.method, f"arn:aws:s3:::{bucket}"
    if not key:
        if method == "GET" and set(query) <= LIST_PARAMETERS:  # ListObjects(V2)
            prefix = query.get("prefix", [None])[0]
            return AwsCall("s3:ListBucket", bucket_arn, (("s3:prefix", prefix),) if prefix else ())
        if method == "HEAD" and not query:  # HeadBucket
            return AwsCall("s3:ListBucket", bucket_arn)
        if method == "GET" and "uploads" in query and set(query) <= UPLOAD_LIST_PARAMETERS:
            return AwsCall("s3:ListBucketMultipartUploads", bucket_arn)
        if set(query) == {"lifecycle"} and method in ("GET", "PUT"):
            action = "Get" if method == "GET" else "Put"
            return AwsCall(f"s3:{action}LifecycleConfiguration", bucket_arn)
        if method == "GET" and set(query) == {"location"}:
            return AwsCall("s3:GetBucketLocation", bucket_arn)
    else:
        object_arn = f"{bucket_arn}/{key}"
        copying = any(name.lower() == "x-amz-copy-source" for name in request.headers)
        if method in ("GET", "HEAD") and not query:  # GetObject, HeadObject
            return AwsCall("s3:GetObject", object_arn)
        if method == "PUT" and not copying and set(query) in (set(), {"partNumber", "uploadId"}):
            return AwsCall("s3:PutObject", object_arn)  # PutObject, UploadPart
        if method == "POST" and set(query) in ({"uploads"}, {"uploadId"}):
            return AwsCall("s3:PutObject", object_arn)  # Create-, CompleteMultipartUpload
        if method == "DELETE" and set(query) == {"uploadId"}:
            return AwsCall("s3:AbortMultipartUpload", object_arn)
        if method == "DELETE" and not query:
            return AwsCall("s3:DeleteObject", object_arn)
    raise AssertionError(f"no IAM action known for S3's {method} {request.path}")


def secrets_manager_call(request: FaultyProxy.Request, arns: dict[str, str]) -> AwsCall:
    """A Secrets Manager request (JSON protocol: its operation in X-Amz-Target); the resource is
    the secret's ARN, whether the request named it by name or by ARN."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    service, _, operation = headers.get("x-amz-target", "").partition(".")
    if service != "secretsmanager":
        raise AssertionError(
            f"a call to an AWS service other than S3 or Secrets Manager: {service}"
        )
    secret_id = json.loads(request.body or b"{}")["SecretId"]
    return AwsCall(f"secretsmanager:{operation}", arns.get(secret_id, secret_id))


def _wildcard(pattern: str) -> re.Pattern[str]:
    """IAM's string wildcards: * any run of characters, ? one character."""
    return re.compile("".join({"*": ".*", "?": "."}.get(c, re.escape(c)) for c in pattern))


def conditions_hold(condition: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    """A statement's Condition block as IAM evaluates it: every operator and key must hold; a key
    holds when the request's value matches one of the listed ones; a key the request lacks does
    not hold. Only the operators these policies use: another one fails the test."""
    for operator, keys in condition.items():
        assert operator in ("StringLike", "StringEquals"), f"{operator} is not evaluated here"
        for key, listed in keys.items():
            value = context.get(key)
            patterns = [listed] if isinstance(listed, str) else listed
            if value is None:
                return False
            if operator == "StringLike":
                matched = any(_wildcard(pattern).fullmatch(value) for pattern in patterns)
            else:
                matched = value in patterns
            if not matched:
                return False
    return True


def allowed(policy: dict[str, Any], call: AwsCall) -> bool:
    """Whether the identity policy allows the call. Each statement's action and resource are
    matched by moto's IAM engine (moto.iam.access_control); moto does not evaluate StringLike
    conditions (it skips them), so the Condition block is evaluated by ``conditions_hold``."""
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"  # no Deny to weigh in these policies
        verdict = IAMPolicyStatement(statement).is_action_permitted(call.action, call.resource)
        if verdict == PermissionResult.PERMITTED and conditions_hold(
            statement.get("Condition", {}), dict(call.context)
        ):
            return True
    return False


class RandomBlobs:
    """A stream of incompressible record batches, 6.4 MB each, so a file of two batches goes up
    in several parts; with ``fail_at`` it breaks before that batch, as an extract that fails."""

    schema = pa.schema([("blob", pa.binary())])

    def __init__(self, batches: int, fail_at: int | None = None) -> None:
        self._batches, self._fail_at = batches, fail_at

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for number in range(self._batches):
            if number == self._fail_at:
                raise ExtractBroke(f"the extract broke before batch {number}")
            blobs = [os.urandom(64 * 1024) for _ in range(100)]
            yield pa.record_batch([pa.array(blobs, pa.binary())], schema=self.schema)

    def close(self) -> None:
        pass


class ExtractBroke(RuntimeError):
    pass


@dataclass(frozen=True)
class RecordedCalls:
    """What each part of the code asked of AWS, mapped to IAM, and the policy filled in."""

    run: dict[str, list[AwsCall]]  # by code path: what a run's task does
    reader: list[AwsCall]  # `sqlgym-lake sql`: an analyst's or operator's command
    operator: list[AwsCall]  # `sqlgym-lake lifecycle`: set once by an operator
    policy: dict[str, Any]
    bucket: str
    secrets: tuple[str, ...]  # the ARNs of the database's and the pseudonymization key's


@pytest.fixture(scope="module")
def recorded_calls(
    database_url: str, seaweedfs_endpoint: str, moto_endpoint: str
) -> Iterator[RecordedCalls]:
    """The project's S3 and Secrets Manager code paths, run as a run's task runs them, against
    SeaweedFS's S3 and moto's Secrets Manager, each behind a recording proxy."""
    bucket, run_id = f"sqlgym-iam-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex[:12]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in AWS_TEST_ENV.items():
            patch.setenv(name, value)
        # The test's own set-up goes to the servers directly, not through the proxies.
        boto3.client("s3", endpoint_url=seaweedfs_endpoint).create_bucket(Bucket=bucket)
        secrets = boto3.client("secretsmanager", endpoint_url=moto_endpoint)
        db_secret = secrets.create_secret(
            Name=f"sqlgym/iam-{run_id}/db", SecretString=json.dumps(secret_for(database_url))
        )
        key_secret = secrets.create_secret(
            Name=f"sqlgym/iam-{run_id}/pseudonymization", SecretString=TEST_PSEUDONYMIZATION_KEY
        )
        arns = {secret["Name"]: secret["ARN"] for secret in (db_secret, key_secret)}
        lake_url = f"s3://{bucket}/{PREFIX}"
        with (
            FaultyProxy(seaweedfs_endpoint) as s3_proxy,
            FaultyProxy(moto_endpoint) as aws_proxy,
        ):
            patch.setenv("AWS_ENDPOINT_URL_S3", s3_proxy.endpoint)
            patch.setenv("AWS_ENDPOINT_URL", aws_proxy.endpoint)
            patch.setenv("SQLGYM_DB_SECRET_ID", db_secret["Name"])
            patch.setenv(KEY_SECRET_ENV, key_secret["Name"])
            patch.setenv("SQLGYM_LAKE_URL", lake_url)
            for name in ("SQLGYM_DATABASE_URL", KEY_ENV, PERSONAL_DATA_ENV):
                patch.delenv(name, raising=False)
            patch.setattr(writer, "UPLOAD_PART_BYTES", 5 * 1024 * 1024)  # S3's smallest part
            settings = lake_settings(lake_url)
            calls: dict[str, list[AwsCall]] = {}

            @contextlib.contextmanager
            def record(path: str) -> Iterator[None]:
                start_s3, start_aws = len(s3_proxy.requests), len(aws_proxy.requests)
                yield
                calls[path] = [
                    *(secrets_manager_call(r, arns) for r in aws_proxy.requests[start_aws:]),
                    *(c for r in s3_proxy.requests[start_s3:] for c in s3_calls(r)),
                ]

            run_like_a_task(record, settings)
            run_paths = list(calls)
            with record("sqlgym-lake sql"):
                sqlgym_lake_output = io.StringIO()
                with contextlib.redirect_stdout(sqlgym_lake_output):
                    sqlgym_lake(["sql", "--engine", "athena", "--lake", lake_url])
                assert "users_live_keys" in sqlgym_lake_output.getvalue()
            with record("sqlgym-lake lifecycle"):
                apply_abort_incomplete_uploads_rule(settings)

        policy_text = TASK_ROLE_POLICY_FILE.read_text()
        for placeholder in POLICY_PLACEHOLDERS:
            assert placeholder in policy_text, placeholder
        filled = {
            "DB_SECRET_ARN": db_secret["ARN"],
            "PSEUDONYMIZATION_SECRET_ARN": key_secret["ARN"],
            "LAKE_BUCKET": bucket,
            "LAKE_PREFIX": PREFIX,
        }
        for placeholder, value in filled.items():
            policy_text = policy_text.replace(placeholder, value)
        yield RecordedCalls(
            run={path: calls[path] for path in run_paths},
            reader=calls["sqlgym-lake sql"],
            operator=calls["sqlgym-lake lifecycle"],
            policy=json.loads(policy_text),
            bucket=bucket,
            secrets=(db_secret["ARN"], key_secret["ARN"]),
        )


def run_like_a_task(
    record: Callable[[str], contextlib.AbstractContextManager[None]], settings: LakeSettings
) -> None:
    """What a run's task does with AWS, one code path at a time, each recorded under its name."""
    users, badges = TABLES_BY_NAME["users"], TABLES_BY_NAME["badges"]
    partition = today()
    with DagsterInstance.ephemeral() as instance:
        # An incremental table (key set, key index) and a snapshot one, each with its checks
        # (the file read back) and sync record; then the same day again, replacing the files.
        for attempt in ("first sync", "the day synced again"):
            with record(f"materialize users and badges, {attempt}"):
                result = materialize_tables([users, badges], partition, instance=instance)
            assert result.success
        with record("the checks alone, on the day in the lake"):
            # As the sqlgym_lake_checks job runs them; the day travels as a run tag, as from the UI.
            result = materialize(
                [build_lake_asset(users)],
                selection=AssetSelection.checks_for_assets(lake_asset_key(users)),
                tags={"dagster/partition": partition},
                instance=instance,
                resources={"postgres": PostgresResource(), LAKE_IO_MANAGER_KEY: env_lake()},
            )
        assert result.success
    day_file = partition_uri(settings, "users", date.fromisoformat(partition))
    with record("a partition read back (the IO manager's load_input)"):
        assert partition_exists(settings, day_file)
        assert read_table(settings, day_file).schema.names == list(users.column_names)
    blobs = partition_uri(settings, "multipart_probe", date.fromisoformat(partition))
    with record("a multipart upload"):
        assert writer.write_partition(settings, blobs, RandomBlobs(2)).rows == 200
    with record("a multipart upload whose extract fails after a part"):
        with pytest.raises(ExtractBroke):
            writer.write_partition(settings, f"{blobs}.failed", RandomBlobs(3, fail_at=1))


def test_every_call_a_run_makes_is_allowed_by_the_task_role_policy(recorded_calls) -> None:
    denied = [
        (path, call)
        for path, calls in recorded_calls.run.items()
        for call in calls
        if not allowed(recorded_calls.policy, call)
    ]

    assert not denied
    assert all(recorded_calls.run.values())  # every path did call AWS


def test_the_calls_are_the_issues_actions_and_the_one_beyond_them(recorded_calls) -> None:
    actions = {call.action for calls in recorded_calls.run.values() for call in calls}

    assert actions == ACTIONS_THE_ISSUE_GRANTS | ACTIONS_BEYOND_THE_ISSUE
    failed_upload = recorded_calls.run["a multipart upload whose extract fails after a part"]
    assert "s3:AbortMultipartUpload" in {call.action for call in failed_upload}
    # Both secrets: the database's and, personal data being pseudonymized, the key's.
    first_sync = recorded_calls.run["materialize users and badges, first sync"]
    read = {call.resource for call in first_sync if call.action == "secretsmanager:GetSecretValue"}
    assert read == set(recorded_calls.secrets)


def test_every_statement_of_the_policy_is_needed(recorded_calls) -> None:
    calls = [call for calls in recorded_calls.run.values() for call in calls]
    statements = recorded_calls.policy["Statement"]

    # Each statement allows some call that no other statement does: without it, that call fails.
    for index, statement in enumerate(statements):
        others = {"Statement": statements[:index] + statements[index + 1 :]}
        only_it = [c for c in calls if allowed(recorded_calls.policy, c) and not allowed(others, c)]
        assert only_it, statement["Sid"]
    # A listing held to the lake's prefix (an s3:prefix condition) would not do: a read of a
    # day not written yet, which every first sync of a day makes, would be answered 403.
    held_to_prefix = json.loads(json.dumps(recorded_calls.policy))
    for statement in held_to_prefix["Statement"]:
        if statement["Action"] == "s3:ListBucket":
            statement["Condition"] = {"StringLike": {"s3:prefix": [f"{PREFIX}/*"]}}
    denied = [call for call in calls if not allowed(held_to_prefix, call)]
    assert denied and {call.action for call in denied} == {"s3:ListBucket"}


def test_reading_the_lake_needs_only_the_runs_read_permissions(recorded_calls) -> None:
    assert {call.action for call in recorded_calls.reader} == {"s3:ListBucket", "s3:GetObject"}
    assert all(allowed(recorded_calls.policy, call) for call in recorded_calls.reader)


def test_the_lifecycle_rule_is_the_operators_not_the_runs(recorded_calls) -> None:
    assert {call.action for call in recorded_calls.operator} == {
        "s3:GetLifecycleConfiguration",
        "s3:PutLifecycleConfiguration",
    }
    assert not any(allowed(recorded_calls.policy, call) for call in recorded_calls.operator)
