"""A partition's primary keys in buckets of bounded size, so checking them never holds them all.

Equal keys always share a bucket, so duplicates are found bucket by bucket.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sqlgym_assets.lake.keys import key_hashes

# About the most keys great-expectations' uniqueness check is given at once: a partition with
# more has its keys split by hash into buckets of this size, so memory does not grow with rows.
KEYS_PER_BUCKET = 250_000


def key_buckets(parquet: pq.ParquetFile, columns: list[str]) -> Iterator[pd.DataFrame]:
    """The file's key columns, one bucket at a time (Arrow-backed); equal keys share a bucket.

    Up to KEYS_PER_BUCKET rows there is one bucket, read whole: no hashing, no temporary file.
    Above, one pass writes each bucket's keys into one Arrow IPC file, from which each bucket is
    read back alone. A pass over the file per bucket instead would read the keys (from S3 too)
    once per bucket, at about 0.5 s per million rows each time.
    """
    buckets = math.ceil(parquet.metadata.num_rows / KEYS_PER_BUCKET)
    if buckets <= 1:
        yield arrow_backed(parquet.read(columns=columns, use_threads=False))
        return
    with tempfile.TemporaryDirectory(prefix="sqlgym-keys-") as directory:
        spill = Path(directory) / "keys.arrow"
        batches_of_bucket = _spill_by_bucket(parquet, columns, buckets, spill)
        # Read, not memory-mapped: a mapped file's pages would stay in the RSS once touched.
        with pa.OSFile(str(spill)) as file:
            reader = pa.ipc.open_file(file)
            for batches in batches_of_bucket:
                if batches:
                    keys = pa.Table.from_batches(map(reader.get_batch, batches), reader.schema)
                    yield arrow_backed(keys)


def _spill_by_bucket(
    parquet: pq.ParquetFile, columns: list[str], buckets: int, spill: Path
) -> list[list[int]]:
    """Writes each row group's keys to ``spill`` sorted by bucket; returns each bucket's batches.

    Row group by row group: ``iter_batches`` held more than one group's keys (measured).
    """
    batches_of_bucket: list[list[int]] = [[] for _ in range(buckets)]
    schema = pa.schema([parquet.schema_arrow.field(column) for column in columns])
    with pa.ipc.new_file(spill, schema) as writer:
        for group in range(parquet.num_row_groups):
            keys = parquet.read_row_group(group, columns=columns, use_threads=False)
            bucket = (key_hashes(keys) % buckets).astype(np.int64)
            by_bucket = keys.take(np.argsort(bucket, kind="stable"))
            ends = np.cumsum(np.bincount(bucket, minlength=buckets))
            for number, (start, end) in enumerate(zip([0, *ends[:-1]], ends, strict=True)):
                if end > start:
                    written = writer.stats.num_record_batches
                    writer.write_table(by_bucket.slice(start, end - start))
                    batches_of_bucket[number].extend(
                        range(written, writer.stats.num_record_batches)
                    )
    return batches_of_bucket


def arrow_backed(data: pa.Table) -> pd.DataFrame:
    return data.to_pandas(types_mapper=pd.ArrowDtype)
