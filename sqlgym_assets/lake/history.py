"""Sync records: a small JSON file per materialization, for readers of the lake without Dagster.

Names sort by time (``layout.sync_record_uri``), and a record never overwrites another: more
materializations of a table in the same second get ``..Z_01.json``, ``..Z_02.json``, which still
sort after ``..Z.json`` (the old Lambda's files written in the same second collided, and its
monitor listed the oldest as the latest).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import botocore.exceptions

from sqlgym_assets.lake.layout import LakeSettings, sync_record_uri

MAX_SAME_SECOND = 100


@dataclass(frozen=True)
class SyncRecord:
    table: str
    partition: str
    mode: str
    window: str
    rows: int
    source_row_count: int | None
    bytes: int
    file_uri: str
    duration_seconds: float
    run_id: str
    status: str  # "success", or "no_new_data" when the window held no rows (not a failure)
    written_at: str
    live_keys: int | None = None  # windowed tables: the source's keys at the snapshot
    deleted_keys: int | None = None  # ... and how many of the previous sync's are gone


def sync_status(rows: int) -> str:
    return "success" if rows else "no_new_data"


def write_sync_record(settings: LakeSettings, record: SyncRecord, written_at: datetime) -> str:
    body = json.dumps(asdict(record), indent=2, sort_keys=True).encode()
    for attempt in range(MAX_SAME_SECOND):
        uri = sync_record_uri(settings, record.table, written_at, attempt)
        if _create_new(settings, uri, body):
            return uri
    raise FileExistsError(f"{MAX_SAME_SECOND} sync records of {record.table} in one second")


def _create_new(settings: LakeSettings, uri: str, body: bytes) -> bool:
    """Writes ``body`` only if nothing is at ``uri`` yet; False if something is."""
    if settings.is_s3:
        bucket, key = settings.s3_location(uri)
        try:
            settings.s3_client().put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                IfNoneMatch="*",
                **settings.encryption(),
            )
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") == "PreconditionFailed":
                return False
            raise
        return True
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as file:
        file.write(body)
    return True
