"""Where the lake is and where each file lives in it: the one place a file's S3 key is chosen.

Data: ``<lake>/<table>/YYYY/MM/DD/<table>_YYYYMMDD.parquet``. The lake's bookkeeping lives
under ``<lake>/_...`` prefixes, outside every table's folder, so a glob of a table's data never
picks it up: sync records in ``_metadata/<table>/<YYYYMMDD>T<HHMMSS>Z.json``, the live key set of
the latest sync in ``_keys/<table>/<table>_keys.parquet`` (a folder of its own, which Athena and
Spark read as a table), and the key index in ``_key_index/<table>/<table>_index.parquet``.
``<lake>`` is ``s3://bucket/prefix`` or a local directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow.fs

from sqlgym_assets.aws import region_from_environment, s3_endpoint_from_environment

LAKE_URL_ENV = "SQLGYM_LAKE_URL"
HISTORY_FOLDER = "_metadata"
KEY_SETS_FOLDER = "_keys"
KEY_INDEX_FOLDER = "_key_index"


class LakeConfigurationError(ValueError):
    """The lake URL cannot be used."""


@dataclass(frozen=True)
class LakeSettings:
    """Where the lake is and how S3 objects are written."""

    url: str
    s3_endpoint_url: str | None = None  # default: AWS_ENDPOINT_URL(_S3)
    kms_key_id: str | None = None  # SSE-KMS with this key; default SSE-S3 (AES256)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def s3_location(self, uri: str) -> tuple[str, str]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return bucket, key

    def endpoint(self) -> str | None:
        return self.s3_endpoint_url or s3_endpoint_from_environment()

    def encryption(self) -> dict[str, str]:
        """Server-side encryption arguments for every object the lake writes."""
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {"ServerSideEncryption": "AES256"}

    def s3_client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint(), region_name=region_from_environment()
        )

    def filesystem(self) -> pyarrow.fs.FileSystem:
        if self.is_s3:
            endpoint = self.endpoint()
            options: dict[str, object] = {"region": region_from_environment()}
            if endpoint:
                scheme, _, address = endpoint.partition("://")
                options.update(endpoint_override=address, scheme=scheme)
            return pyarrow.fs.S3FileSystem(**options)
        return pyarrow.fs.LocalFileSystem()

    def filesystem_path(self, uri: str) -> str:
        """A lake URI as a path inside ``filesystem()``."""
        return uri.removeprefix("s3://") if self.is_s3 else uri


def lake_settings(url: str | None, **options: str | None) -> LakeSettings:
    """The lake at ``url``: ``s3://bucket/prefix``, ``file:///absolute/path`` or an absolute path.

    Anything else fails: a relative path (or a mistyped ``s3:/bucket``, which is one) would write
    the lake into whatever directory the run happens to start in.
    """
    accepted = "use s3://bucket/prefix, file:///absolute/path or an absolute path"
    if not url:
        raise LakeConfigurationError(f"no lake configured: set {LAKE_URL_ENV}; {accepted}")
    if url.startswith("s3://"):
        if not url.removeprefix("s3://").split("/")[0]:
            raise LakeConfigurationError(f"{LAKE_URL_ENV} {url!r} names no bucket; {accepted}")
        return LakeSettings(url=url.rstrip("/"), **options)
    local = url.removeprefix("file://")
    path = Path(local).expanduser()
    if ":" in local.split("/")[0] or "://" in local or not path.is_absolute():
        raise LakeConfigurationError(f"{LAKE_URL_ENV} {url!r} is not a lake URL; {accepted}")
    return LakeSettings(url=str(path.resolve()), **options)


def table_uri(settings: LakeSettings, table: str) -> str:
    """The folder of a table's data files, one sub-folder per day."""
    return f"{settings.url}/{table}"


def partition_uri(settings: LakeSettings, table: str, day: date) -> str:
    """The file of one table's day: ``<lake>/<table>/YYYY/MM/DD/<table>_YYYYMMDD.parquet``."""
    return f"{table_uri(settings, table)}/{day:%Y/%m/%d}/{table}_{day:%Y%m%d}.parquet"


def partition_day(uri: str, table: str) -> date | None:
    """The day of a table's data file from its path; None for anything else in its folder."""
    match = re.search(rf"/(\d{{4}})/(\d{{2}})/(\d{{2}})/{re.escape(table)}_\1\2\3\.parquet$", uri)
    return None if match is None else date(*map(int, match.groups()))


def key_set_folder_uri(settings: LakeSettings, table: str) -> str:
    return f"{settings.url}/{KEY_SETS_FOLDER}/{table}"


def key_set_uri(settings: LakeSettings, table: str) -> str:
    """The live key set of the table's latest sync, alone in its folder."""
    return f"{key_set_folder_uri(settings, table)}/{table}_keys.parquet"


def key_index_uri(settings: LakeSettings, table: str) -> str:
    return f"{settings.url}/{KEY_INDEX_FOLDER}/{table}/{table}_index.parquet"


def sync_record_uri(settings: LakeSettings, table: str, written_at: datetime, attempt: int) -> str:
    """``..Z.json``, then ``..Z_01.json``...: "_" sorts after ".", so names stay in time order."""
    suffix = f"_{attempt:02d}" if attempt else ""
    name = f"{written_at:%Y%m%dT%H%M%S}Z{suffix}.json"
    return f"{settings.url.rstrip('/')}/{HISTORY_FOLDER}/{table}/{name}"
