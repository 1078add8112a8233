"""The lake: where a partition's Parquet file lives, and how it is written and read.

Layout: ``<lake>/<table>/YYYY/MM/DD/<table>_YYYYMMDD.parquet``; ``<lake>`` is ``s3://bucket/prefix``
or a local directory. A write is atomic: the file is encoded into a temporary file, then renamed
into place (local) or, part by part while it is encoded, uploaded as one object that appears only
when complete (S3), so a failed run leaves the previous file as it was.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from sqlgym_assets.aws import region_from_environment, s3_endpoint_from_environment

PARQUET_COMPRESSION = "snappy"
ROW_GROUP_ROWS = 128 * 1024


ARROW_MEMORY_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def use_jemalloc_for_arrow() -> None:
    """Makes jemalloc Arrow's default allocator in this process, where pyarrow has it.

    pyarrow's default, mimalloc, keeps the batches freed by the encoding thread after the fetch
    thread allocated them: ``make bench`` measured about 30 MB more peak memory and 5% more CPU for
    a 2 M-row extract than with jemalloc. A pool chosen with ARROW_DEFAULT_MEMORY_POOL is kept.
    """
    if os.environ.get(ARROW_MEMORY_POOL_ENV):
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc (macOS, Windows wheels)
        pass


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

    def partition_uri(self, table: str, day: date) -> str:
        relative = f"{table}/{day:%Y/%m/%d}/{table}_{day:%Y%m%d}.parquet"
        return f"{self.url.rstrip('/')}/{relative}"

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


def lake_settings(url: str | None, **options: str | None) -> LakeSettings:
    if not url:
        raise LakeConfigurationError(
            "no lake configured: set SQLGYM_LAKE_URL to s3://bucket/prefix or a local directory"
        )
    if "://" in url and not url.startswith("s3://"):
        raise LakeConfigurationError(
            f"SQLGYM_LAKE_URL {url!r} is neither s3://bucket/prefix nor a local directory"
        )
    if url.startswith("s3://") and not url.removeprefix("s3://").split("/")[0]:
        raise LakeConfigurationError(f"SQLGYM_LAKE_URL {url!r} names no bucket")
    if not url.startswith("s3://"):
        url = str(Path(url).expanduser().resolve())
    return LakeSettings(url=url, **options)


@dataclass(frozen=True)
class WrittenFile:
    uri: str
    rows: int
    bytes: int
    seconds: float


def as_batch_reader(data: pa.RecordBatchReader | pa.Table | pd.DataFrame) -> pa.RecordBatchReader:
    if isinstance(data, pa.RecordBatchReader):
        return data
    if isinstance(data, pd.DataFrame):
        data = pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, pa.Table):
        return data.to_reader()
    raise TypeError(
        f"the Parquet lake stores a pyarrow RecordBatchReader, Table or pandas DataFrame, "
        f"not {type(data).__name__}"
    )


DICTIONARY_SAMPLE_ROWS = 1024


def dictionary_columns(batch: pa.RecordBatch) -> list[str]:
    """The flat columns whose values repeat: at most half of their first 1,024 are distinct.

    Only those are dictionary-encoded. For keys, free text and JSON the dictionary is work thrown
    away when the writer falls back to plain encoding: skipping it cut the encoding's CPU time by
    about a quarter on the bench's submissions, and the file by 4%. The sample is looked at in
    Python: a hash kernel's first call costs more time and memory than a whole small partition.
    """
    sample = batch.slice(0, DICTIONARY_SAMPLE_ROWS)
    return [
        field.name
        for field, column in zip(sample.schema, sample.columns, strict=True)
        if not pa.types.is_nested(field.type)
        and len(set(column.to_pylist())) <= max(sample.num_rows // 2, 1)
    ]


def _encode(
    reader: pa.RecordBatchReader, path: Path, after_batch: Callable[[], None] | None = None
) -> int:
    """Streams batches into a Snappy Parquet file; memory stays at about one row group.

    ``after_batch`` runs once each batch is in the file, so the file can be shipped as it grows.
    """
    batches = iter(reader)
    first = next(batches, None)
    if first is None:
        pq.ParquetWriter(path, reader.schema, compression=PARQUET_COMPRESSION).close()
        return 0
    rows = 0
    with pq.ParquetWriter(
        path,
        reader.schema,
        compression=PARQUET_COMPRESSION,
        use_dictionary=dictionary_columns(first),
    ) as writer:
        for batch in itertools.chain([first], batches):
            writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
            rows += batch.num_rows
            if after_batch is not None:
                after_batch()
    return rows


def write_partition(
    settings: LakeSettings, uri: str, data: pa.RecordBatchReader | pa.Table | pd.DataFrame
) -> WrittenFile:
    reader = as_batch_reader(data)
    started = time.perf_counter()
    if settings.is_s3:
        with tempfile.TemporaryDirectory(prefix="sqlgym-") as staging:
            staged = Path(staging) / "partition.parquet"
            with _S3Upload(settings, staged, uri) as upload:
                rows = _encode(reader, staged, after_batch=upload.send_whole_parts)
                upload.complete()
            size = staged.stat().st_size
    else:
        target = Path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            rows = _encode(reader, staged)
            with open(staged, "rb") as staged_file:
                os.fsync(staged_file.fileno())
            size = staged.stat().st_size
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
    return WrittenFile(uri=uri, rows=rows, bytes=size, seconds=time.perf_counter() - started)


# S3 takes parts of 5 MiB and more (the last may be smaller).
UPLOAD_PART_BYTES = 8 * 1024 * 1024
UPLOAD_CHECKSUM = "CRC32"  # what boto3's own managed uploads send
COPY_BUFFER_BYTES = 1024 * 1024


class _S3Upload:
    """Uploads a file while it is still being encoded, one whole part at a time, in a thread.

    The object appears only when ``complete`` succeeds; on any failure the multipart upload is
    aborted, so no object and no parts are left and the previous object stays as it was. A file
    smaller than one part goes up in a single PUT. boto3 does the requests, not pyarrow's S3
    filesystem: that cannot ask for SSE-S3 or SSE-KMS.
    """

    def __init__(self, settings: LakeSettings, path: Path, uri: str) -> None:
        self._settings = settings
        self._path = path
        self._bucket, self._key = settings.s3_location(uri)
        self._client = settings.s3_client()
        self._uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlgym-upload")
        self._parts: list[Future[dict[str, Any]]] = []
        self._queued_bytes = 0
        self._upload_id: str | None = None

    def __enter__(self) -> _S3Upload:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        if error_type is not None:
            for part in self._parts:
                part.cancel()
        self._uploader.shutdown(wait=True)
        if error_type is not None and self._upload_id is not None:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )

    def send_whole_parts(self) -> None:
        """Queues each whole part the encoder has written since the last call."""
        for part in self._parts:
            if part.done():
                part.result()  # a failed part stops the encoding now, not at the end
        while self._path.stat().st_size - self._queued_bytes >= UPLOAD_PART_BYTES:
            self._queue_part(UPLOAD_PART_BYTES)

    def complete(self) -> None:
        """Sends the rest of the finished file and makes the object appear."""
        rest = self._path.stat().st_size - self._queued_bytes
        if self._upload_id is None:
            with open(self._path, "rb") as body:
                self._client.put_object(
                    Bucket=self._bucket, Key=self._key, Body=body, **self._settings.encryption()
                )
            return
        if rest:
            self._queue_part(rest)
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": [part.result() for part in self._parts]},
        )

    def _queue_part(self, length: int) -> None:
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                ChecksumAlgorithm=UPLOAD_CHECKSUM,
                **self._settings.encryption(),
            )["UploadId"]
        number = len(self._parts) + 1
        self._parts.append(
            self._uploader.submit(self._upload_part, number, self._queued_bytes, length)
        )
        self._queued_bytes += length

    def _upload_part(self, number: int, offset: int, length: int) -> dict[str, Any]:
        from s3transfer.utils import ReadFileChunk

        # The part is streamed from the staged file (as boto3's managed uploads do), not read
        # into memory first.
        with ReadFileChunk.from_filename(str(self._path), offset, length) as body:
            response = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm=UPLOAD_CHECKSUM,
            )
        checksum = f"Checksum{UPLOAD_CHECKSUM}"
        return {"PartNumber": number, "ETag": response["ETag"], checksum: response[checksum]}


def filesystem(settings: LakeSettings) -> pyarrow.fs.FileSystem:
    if settings.is_s3:
        endpoint = settings.endpoint()
        options: dict[str, object] = {"region": region_from_environment()}
        if endpoint:
            scheme, _, address = endpoint.partition("://")
            options.update(endpoint_override=address, scheme=scheme)
        return pyarrow.fs.S3FileSystem(**options)
    return pyarrow.fs.LocalFileSystem()


def lake_path(settings: LakeSettings, uri: str) -> str:
    """A lake URI as a path inside ``filesystem(settings)``."""
    return uri.removeprefix("s3://") if settings.is_s3 else uri


@contextmanager
def local_copy(settings: LakeSettings, uri: str) -> Iterator[Path]:
    """The partition as a local file; an S3 object is downloaded once, into a temporary directory.

    The checks read a file row group by row group, column by column: straight from S3 that is a
    ranged request per read, and the checks of a 2 M-row partition took 112 s on moto, against
    23 s after one streamed GET.
    """
    if not settings.is_s3:
        yield Path(uri)
        return
    bucket, key = settings.s3_location(uri)
    with tempfile.TemporaryDirectory(prefix="sqlgym-") as directory:
        path = Path(directory) / "partition.parquet"
        body = settings.s3_client().get_object(Bucket=bucket, Key=key)["Body"]
        with open(path, "wb") as file:
            shutil.copyfileobj(body, file, COPY_BUFFER_BYTES)  # one request, streamed
        yield path


def read_partition(
    settings: LakeSettings, uri: str, columns: Sequence[str] | None = None
) -> pa.Table:
    return pq.read_table(lake_path(settings, uri), filesystem=filesystem(settings), columns=columns)


def partition_exists(settings: LakeSettings, uri: str) -> bool:
    info = filesystem(settings).get_file_info(lake_path(settings, uri))
    return info.type == pyarrow.fs.FileType.File
