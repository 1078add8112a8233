"""Writing a partition's file, atomically: a local rename, or one S3 multipart upload.

The file is encoded into a temporary file, then renamed into place (local) or, part by part while
it is encoded, uploaded as one object that appears only when complete (S3), so a failed run
leaves the previous file as it was. A write consumes its stream and closes it when the file is
written or the write fails: whatever the stream holds open (the source's snapshot transaction)
ends with the write.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import get_dagster_logger

from sqlgym_assets.lake.layout import LakeSettings

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


@dataclass(frozen=True)
class WrittenFile:
    uri: str
    schema: pa.Schema
    rows: int
    bytes: int
    seconds: float


@runtime_checkable
class BatchStream(Protocol):
    """Record batches of one schema, read once, then closed; a pyarrow RecordBatchReader is one,
    and so is the source's partition stream."""

    schema: pa.Schema

    def __iter__(self) -> Iterator[pa.RecordBatch]: ...

    def close(self) -> None: ...


def as_batch_stream(data: BatchStream | pa.Table | pd.DataFrame) -> BatchStream:
    if isinstance(data, pd.DataFrame):
        data = pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, pa.Table):
        return data.to_reader()
    if isinstance(data, BatchStream):
        return data
    raise TypeError(
        f"the Parquet lake stores a stream of Arrow record batches (a pyarrow RecordBatchReader), "
        f"a pyarrow Table or a pandas DataFrame, not {type(data).__name__}"
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


def _encode(stream: BatchStream, path: Path, after_batch: Callable[[], None] | None = None) -> int:
    """Streams batches into a Snappy Parquet file; memory stays at about one row group.

    ``after_batch`` runs once each batch is in the file, so the file can be shipped as it grows.
    """
    batches = iter(stream)
    first = next(batches, None)
    if first is None:
        pq.ParquetWriter(path, stream.schema, compression=PARQUET_COMPRESSION).close()
        return 0
    rows = 0
    with pq.ParquetWriter(
        path,
        stream.schema,
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
    settings: LakeSettings, uri: str, data: BatchStream | pa.Table | pd.DataFrame
) -> WrittenFile:
    """Writes ``data`` to ``uri`` atomically, then closes the stream, whether the write succeeded
    or not: what the stream holds open (the source's snapshot) ends with the write."""
    stream = as_batch_stream(data)
    started = time.perf_counter()
    try:
        if settings.is_s3:
            rows, size = _upload(settings, uri, stream)
        else:
            rows, size = _replace_local(Path(uri), stream)
    finally:
        stream.close()
    return WrittenFile(
        uri=uri,
        schema=stream.schema,
        rows=rows,
        bytes=size,
        seconds=time.perf_counter() - started,
    )


def _upload(settings: LakeSettings, uri: str, stream: BatchStream) -> tuple[int, int]:
    root = Path(tempfile.gettempdir()) / STAGING_FOLDER
    root.mkdir(exist_ok=True)
    _remove_if_writer_died(root.iterdir())
    with tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-", dir=root) as staging:
        staged = Path(staging) / "partition.parquet"
        with _S3Upload(settings, staged, uri) as upload:
            rows = _encode(stream, staged, after_batch=upload.send_whole_parts)
            upload.complete()
        return rows, staged.stat().st_size


def _replace_local(target: Path, stream: BatchStream) -> tuple[int, int]:
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_if_writer_died(target.parent.glob(f".{target.name}.*.tmp"))
    staged = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
    try:
        rows = _encode(stream, staged)
        with open(staged, "rb") as staged_file:
            os.fsync(staged_file.fileno())
        size = staged.stat().st_size
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    return rows, size


# Files being written to S3 are staged here, in a folder of their own, each under the writer's pid.
STAGING_FOLDER = "sqlgym-staging"


def _remove_if_writer_died(staged: Iterable[Path]) -> None:
    """Removes what a writer killed mid-write (kill -9, out of memory) left: staged files and
    folders named after a pid that no longer runs on this machine."""
    for path in staged:
        pid = _writer_pid(path)
        if pid is not None and not _running(pid):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _writer_pid(path: Path) -> int | None:
    """The pid in a staged name: ``<pid>-<random>`` (a folder) or ``.<file>.<pid>-<random>.tmp``."""
    tag = path.name if path.is_dir() else path.name.removesuffix(".tmp").rsplit(".", 1)[-1]
    pid = tag.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


# S3 takes parts of 5 MiB and more (the last may be smaller).
UPLOAD_PART_BYTES = 8 * 1024 * 1024
UPLOAD_CHECKSUM = "CRC32"  # what boto3's own managed uploads send
# An unfinished upload of the key being written, started this long ago, is a dead writer's.
STALE_UPLOAD_AGE = timedelta(minutes=15)


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
        self._abort_stale_uploads()
        return self

    def _abort_stale_uploads(self) -> None:
        """Aborts unfinished uploads of this very key that a killed writer left (their parts are
        billed until then); one run per partition means none of them is still being written."""
        stale_before = datetime.now(UTC) - STALE_UPLOAD_AGE
        listing = self._client.list_multipart_uploads(Bucket=self._bucket, Prefix=self._key)
        for upload in listing.get("Uploads", []):
            if upload["Key"] == self._key and upload["Initiated"] < stale_before:
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=upload["UploadId"]
                )

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        if error_type is not None:
            for part in self._parts:
                part.cancel()
        self._uploader.shutdown(wait=True)
        if error_type is not None and self._upload_id is not None:
            try:
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )
            except Exception as abort_error:  # the write's own error is the one to raise
                get_dagster_logger().warning(
                    f"could not abort the failed upload {self._upload_id} of "
                    f"s3://{self._bucket}/{self._key} ({abort_error}); its parts stay until the "
                    "bucket's lifecycle rule removes them"
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
