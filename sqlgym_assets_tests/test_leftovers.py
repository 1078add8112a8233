"""What a writer killed mid-write leaves (staged files, unfinished uploads) is cleaned up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import boto3
import pyarrow as pa
import pytest

from sqlgym_assets.lake import writer
from sqlgym_assets.lake.layout import lake_settings
from sqlgym_assets.lake.lifecycle import RULE_ID

ROWS = pa.table({"id": [f"row-{n}" for n in range(100)]})


def dead_pid() -> int:
    """The pid of a process that has ended (and is reaped), as a kill -9 leaves it."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_dead_writers_staged_folder_goes_with_the_next_s3_write_and_a_live_ones_stays(
    s3_server_env,
) -> None:
    root = Path(tempfile.gettempdir()) / writer.STAGING_FOLDER
    root.mkdir(exist_ok=True)
    dead = root / f"{dead_pid()}-{uuid.uuid4().hex[:8]}"
    alive = root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "partition.parquet").write_bytes(b"x" * 1024)
    bucket = f"sqlgym-leftovers-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    try:
        settings = lake_settings(f"s3://{bucket}/lake")
        writer.write_partition(settings, f"s3://{bucket}/lake/t/t.parquet", ROWS)
        assert not dead.exists()
        assert alive.exists()
    finally:
        for folder in (dead, alive):
            if folder.exists():
                (folder / "partition.parquet").unlink()
                folder.rmdir()


def test_a_dead_writers_staged_file_goes_with_the_next_local_write(tmp_path: Path) -> None:
    target = tmp_path / "t" / "t_20250101.parquet"
    target.parent.mkdir()
    dead = target.with_name(f".{target.name}.{dead_pid()}-{uuid.uuid4().hex}.tmp")
    alive = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
    dead.write_bytes(b"partial")
    alive.write_bytes(b"being written")

    writer.write_partition(lake_settings(str(tmp_path)), str(target), ROWS)

    assert sorted(p.name for p in target.parent.iterdir()) == sorted([target.name, alive.name])


def test_the_next_write_of_a_key_aborts_its_stale_unfinished_uploads(
    s3_server_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "STALE_UPLOAD_AGE", timedelta(0))
    s3 = boto3.client("s3")
    bucket = f"sqlgym-leftovers-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    key, other = "lake/t/t.parquet", "lake/u/u.parquet"
    for stale in (key, other):
        upload = s3.create_multipart_upload(Bucket=bucket, Key=stale)
        s3.upload_part(
            Bucket=bucket, Key=stale, UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
        )

    writer.write_partition(lake_settings(f"s3://{bucket}/lake"), f"s3://{bucket}/{key}", ROWS)

    left = [upload["Key"] for upload in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]]
    assert left == [other]  # another key's upload is not this writer's to judge


def test_sqlgym_lake_lifecycle_adds_the_rule_once_and_keeps_the_buckets_others(aws_env) -> None:
    s3 = boto3.client("s3")
    bucket = f"sqlgym-lifecycle-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    logs = {"ID": "expire-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}}
    logs["Expiration"] = {"Days": 30}
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [logs]})
    command = [
        str(Path(sys.executable).parent / "sqlgym-lake"),
        *("lifecycle", "--lake", f"s3://{bucket}/postgres-sync"),
    ]

    for _ in range(2):  # running it again changes nothing
        completed = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, completed.stderr

    configuration = s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    rules = {rule["ID"]: rule for rule in configuration["Rules"]}
    assert set(rules) == {"expire-logs", RULE_ID}
    assert rules[RULE_ID]["Filter"] == {"Prefix": "postgres-sync/"}
    assert rules[RULE_ID]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert json.loads(completed.stdout)["ID"] == RULE_ID
