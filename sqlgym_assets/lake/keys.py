"""Key sets and the key index: what makes a windowed table's deletes visible, and its mirror
checkable without re-reading its days.

- The **key set** (``layout.key_set_uri``) holds the source's live primary keys as read in the
  snapshot of the table's latest sync. The current-state views keep only rows whose key is in it,
  so a row deleted in the source leaves the current state at the next sync.
- The **key index** (``layout.key_index_uri``) holds the 64-bit hash of every key that the
  table's data files hold, with the number of files holding it, and the identity (size,
  modification time) of each file it counts. A sync updates it from the one file it replaced:
  the old file's keys out, the new one's in. Reconciling a partition therefore costs the table's
  key count, however many days the lake holds. A file that anything else changed (a day deleted
  or restored by hand, a sync killed between its file and its index) no longer matches its
  identity, and the index is rebuilt from the files, once.

Both are written atomically, like the data (``writer.write_partition``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs
import pyarrow.parquet as pq
from dagster import get_dagster_logger

from sqlgym_assets.lake.layout import (
    LakeSettings,
    key_index_uri,
    key_set_uri,
    partition_day,
    table_uri,
)
from sqlgym_assets.lake.writer import BatchStream, write_partition

READ_AT = b"sqlgym.read_at"  # key set: the instant of the snapshot it was read in
HASH = "key_hash"  # key index: the key's 64-bit hash
FILES = "files"  # key index: how many data files hold the key
KEY_COLUMNS = b"sqlgym.key_columns"  # key index: the key it hashes
HASHED_PER_SLICE = 65_536
IDENTITIES = b"sqlgym.files"  # key index: {day: [size, mtime]} of the files it counts

# Size in bytes and modification time in whole seconds: S3 gives seconds in a HEAD, and maybe
# more in a listing, so the identity of a file must not depend on which one told it.
FileIdentity = tuple[int, int]


def _identity(info: pyarrow.fs.FileInfo) -> FileIdentity:
    return info.size, (info.mtime_ns or 0) // 1_000_000_000


@dataclass(frozen=True)
class LiveKeys:
    """A windowed table's live primary keys, read in the same snapshot as its partition."""

    keys: pa.Table
    read_at: datetime


@dataclass(frozen=True)
class KeyedPartition:
    """What a windowed table's sync hands the lake: the partition's rows and the live key set."""

    rows: BatchStream
    live_keys: LiveKeys


@dataclass(frozen=True)
class KeySetChange:
    live: int  # keys in the source at the snapshot
    deleted: int  # keys of the previous key set that are gone from this one
    superseded: bool  # a key set read later was already in the lake, and was kept


class CollectedKeys:
    """Passes a stream through, keeping each batch's key columns (and nothing else)."""

    def __init__(self, stream: BatchStream, key_columns: Sequence[str]) -> None:
        self.schema = stream.schema
        self._stream = stream
        self._key_columns = list(key_columns)
        self._batches: list[pa.RecordBatch] = []

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self._stream:
            # Copied out: a column of the batch would keep the whole batch's memory (all of its
            # columns, in the driver's allocation) alive until the write ends.
            columns = [pa.concat_arrays([batch.column(name)]) for name in self._key_columns]
            self._batches.append(pa.RecordBatch.from_arrays(columns, names=self._key_columns))
            yield batch

    def close(self) -> None:
        self._stream.close()

    def keys(self) -> pa.Table:
        schema = pa.schema([self.schema.field(name) for name in self._key_columns])
        return pa.Table.from_batches(self._batches, schema=schema)


def _read_if_present(
    settings: LakeSettings, uri: str, columns: Sequence[str] | None = None
) -> pa.Table | None:
    try:
        return pq.read_table(
            settings.filesystem_path(uri), filesystem=settings.filesystem(), columns=columns
        )
    except FileNotFoundError:
        return None


def file_keys(settings: LakeSettings, uri: str, key_columns: Sequence[str]) -> pa.Table | None:
    """The key columns of a data file; None if there is no file."""
    return _read_if_present(settings, uri, key_columns)


def file_identity(settings: LakeSettings, uri: str) -> FileIdentity | None:
    info = settings.filesystem().get_file_info(settings.filesystem_path(uri))
    if info.type != pyarrow.fs.FileType.File:
        return None
    return _identity(info)


def data_files(settings: LakeSettings, table: str) -> dict[str, tuple[str, FileIdentity]]:
    """Each day's data file of a table: ``{"YYYY-MM-DD": (uri, identity)}``, from one listing."""
    filesystem = settings.filesystem()
    folder = settings.filesystem_path(table_uri(settings, table))
    selector = pyarrow.fs.FileSelector(folder, recursive=True, allow_not_found=True)
    prefix = "s3://" if settings.is_s3 else ""
    files = {}
    for info in filesystem.get_file_info(selector):
        day = partition_day(info.path, table)
        if info.type == pyarrow.fs.FileType.File and day is not None:
            files[day.isoformat()] = (prefix + info.path, _identity(info))
    return files


def stored_key_set(
    settings: LakeSettings, table: str, key_columns: Sequence[str] | None = None
) -> LiveKeys | None:
    """The key set of the table's latest sync, as the lake holds it; None if there is none, or
    it holds other columns than ``key_columns`` (the table's key changed since)."""
    keys = _read_if_present(settings, key_set_uri(settings, table))
    if keys is None or (key_columns is not None and keys.column_names != list(key_columns)):
        return None
    read_at = datetime.fromisoformat((keys.schema.metadata or {})[READ_AT].decode())
    return LiveKeys(keys.replace_schema_metadata(None), read_at)


def in_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """For each of ``values``, whether it is in ``sorted_set``: a binary search each, so memory
    is one position per value (``np.isin`` sorts both arrays together)."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    position = np.searchsorted(sorted_set, values)
    position[position == len(sorted_set)] = 0
    return sorted_set[position] == values


def write_key_set(settings: LakeSettings, table: str, live: LiveKeys) -> KeySetChange:
    """Replaces the table's key set with ``live``, unless the lake holds one read later.

    Syncs of two days of a table may finish out of order; the current state must follow the newest
    snapshot, so an older one never replaces a newer one.
    """
    previous = stored_key_set(settings, table, live.keys.column_names)
    if previous is not None and previous.read_at > live.read_at:
        return KeySetChange(live=live.keys.num_rows, deleted=0, superseded=True)
    deleted = 0
    if previous is not None:
        live_hashes = np.sort(key_hashes(live.keys))
        deleted = int(np.count_nonzero(~in_sorted(key_hashes(previous.keys), live_hashes)))
    stamped = live.keys.replace_schema_metadata({READ_AT: live.read_at.isoformat().encode()})
    write_partition(settings, key_set_uri(settings, table), stamped)
    return KeySetChange(live=live.keys.num_rows, deleted=deleted, superseded=False)


def key_hashes(keys: pa.Table) -> np.ndarray:
    """A 64-bit hash of each row's key (FNV-1a of each column's text), a compound key's columns
    combined; a NULL hashes alike in every column.

    Computed over Arrow's buffers a byte position at a time, for every key at once: no Python
    object per key, and a slice of keys at a time, so memory stays at a few arrays of a slice.
    """
    hashes = [np.empty(0, dtype=np.uint64)]
    for batch in keys.to_batches(max_chunksize=HASHED_PER_SLICE):
        combined = np.full(batch.num_rows, _FNV_OFFSET, dtype=np.uint64)
        for column in batch.columns:
            combined = (combined ^ _text_hashes(column)) * _FNV_PRIME
        hashes.append(combined)
    return np.concatenate(hashes)


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)


def _text_hashes(column: pa.Array) -> np.ndarray:
    text = pc.cast(column, pa.large_string())
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[
        text.offset : text.offset + len(text) + 1
    ]
    data = text.buffers()[2]
    data = np.empty(0, np.uint8) if data is None else np.frombuffer(data, dtype=np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(len(text), _FNV_OFFSET, dtype=np.uint64)
    if len(text) and lengths.min() == lengths.max():
        # Keys of one width (uuids): their bytes are a matrix, hashed a column at a time in place,
        # with no index arrays: four times faster, the same hashes.
        width = int(lengths[0])
        matrix = data[starts[0] : starts[0] + len(text) * width].reshape(len(text), width)
        for position in range(width):
            hashes ^= matrix[:, position]
            hashes *= _FNV_PRIME
    else:
        shortest = int(lengths.min(initial=0))
        for position in range(shortest):  # a byte every key has: in place, no index array
            hashes ^= data[starts + position]
            hashes *= _FNV_PRIME
        for position in range(shortest, int(lengths.max(initial=0))):
            rows = np.flatnonzero(lengths > position)
            hashes[rows] = (hashes[rows] ^ data[starts[rows] + position]) * _FNV_PRIME
    if text.null_count:
        hashes[text.is_null().to_numpy(zero_copy_only=False)] = _NULL_HASH
    return hashes


@dataclass(frozen=True)
class KeyIndex:
    """Each key some data file holds, as its 64-bit hash (sorted), and how many files hold it.

    Hashes, not keys: 12 bytes a key whatever the key, and set operations in sorted arrays
    instead of hash joins, which took 250 MB for a million uuid keys. Two keys share a hash with a
    chance below 1e-5 at 10 million keys, and then the check could miss one of them; what the
    views show never depends on the index.
    """

    hashes: np.ndarray  # uint64, sorted, unique
    files: np.ndarray  # int32, > 0
    key_columns: tuple[str, ...]
    identities: dict[str, FileIdentity]  # day -> identity of the file counted for it

    def as_table(self) -> pa.Table:
        metadata = {
            IDENTITIES: json.dumps(self.identities, sort_keys=True).encode(),
            KEY_COLUMNS: json.dumps(self.key_columns).encode(),
        }
        return pa.table({HASH: self.hashes, FILES: self.files}).replace_schema_metadata(metadata)


def _count_files(hashes_per_file: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each hash that some file holds, sorted, and how many files hold it."""
    hashes, files = np.unique(np.concatenate(hashes_per_file), return_counts=True)
    return hashes, files.astype(np.int32)


def _recount(
    index: KeyIndex, added: np.ndarray, removed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The index's counts with one file's hashes added and another's removed, by binary search
    in the sorted index: no sort of the whole index, and memory of a few arrays of the file's."""
    hashes, files = index.hashes, index.files.astype(np.int32, copy=True)
    new = np.empty(0, dtype=np.uint64)
    for part, sign in ((removed, -1), (added, 1)):
        position = np.searchsorted(hashes, part)
        found = position < len(hashes)
        found[found] = hashes[position[found]] == part[found]
        np.add.at(files, position[found], sign)
        if sign > 0:
            new = np.unique(part[~found])
    if len(new):
        hashes = np.concatenate([hashes, new])
        files = np.concatenate([files, np.ones(len(new), dtype=np.int32)])
        order = np.argsort(hashes, kind="stable")
        hashes, files = hashes[order], files[order]
    held = files > 0
    return hashes[held], files[held]


def read_key_index(settings: LakeSettings, table: str, key_schema: pa.Schema) -> KeyIndex | None:
    """The table's key index; None if there is none, or it counts another key than the table's."""
    stored = _read_if_present(settings, key_index_uri(settings, table))
    metadata = {} if stored is None else stored.schema.metadata or {}
    if KEY_COLUMNS not in metadata or json.loads(metadata[KEY_COLUMNS]) != key_schema.names:
        return None
    identities = json.loads(metadata[IDENTITIES])
    return KeyIndex(
        stored.column(HASH).to_numpy(),
        stored.column(FILES).to_numpy(),
        tuple(key_schema.names),
        {day: (size, mtime) for day, (size, mtime) in identities.items()},
    )


def _write_key_index(settings: LakeSettings, table: str, index: KeyIndex) -> None:
    write_partition(settings, key_index_uri(settings, table), index.as_table())


def rebuild_key_index(settings: LakeSettings, table: str, key_schema: pa.Schema) -> KeyIndex:
    """Counts every data file's keys again: for a new index, or one the files no longer match."""
    files = data_files(settings, table)
    hashes = [np.empty(0, dtype=np.uint64)]
    for uri, _ in files.values():
        keys = file_keys(settings, uri, key_schema.names)
        if keys is not None:
            hashes.append(key_hashes(keys.cast(key_schema)))
    index = KeyIndex(
        *_count_files(hashes),
        tuple(key_schema.names),
        {day: identity for day, (_, identity) in files.items()},
    )
    _write_key_index(settings, table, index)
    return index


def update_key_index(
    settings: LakeSettings,
    table: str,
    key_schema: pa.Schema,
    day: date,
    replaced: tuple[pa.Table | None, FileIdentity | None],
    written: tuple[pa.Table, FileIdentity | None],
) -> KeyIndex:
    """Counts a day's new file instead of the one it replaced (its keys and identity, read
    before the write); rebuilds instead when the index did not count that file."""
    (old_keys, old_identity), (new_keys, new_identity) = replaced, written
    index = read_key_index(settings, table, key_schema)
    counted = None if index is None else index.identities.get(day.isoformat())
    if index is None or counted != old_identity:
        get_dagster_logger().info(
            f"counting the keys of every file of {table} into its key index: "
            + ("there is none yet" if index is None else "it did not count the file replaced")
        )
        return rebuild_key_index(settings, table, key_schema)
    added = key_hashes(new_keys.cast(key_schema))
    removed = np.empty(0, np.uint64) if old_keys is None else key_hashes(old_keys.cast(key_schema))
    identities = dict(index.identities)
    if new_identity is not None:
        identities[day.isoformat()] = new_identity
    updated = KeyIndex(
        *_recount(index, added, removed),
        index.key_columns,
        identities,
    )
    _write_key_index(settings, table, updated)
    return updated


@dataclass(frozen=True)
class LakeKeys:
    hashes: np.ndarray  # the hash of every key some data file of the table holds, sorted
    files: int  # data files counted
    rebuilt: bool  # the index no longer matched the files and was counted again


def lake_keys(settings: LakeSettings, table: str, key_schema: pa.Schema) -> LakeKeys:
    """The keys the table's files hold, from the index once one listing shows it is current."""
    files = {day: identity for day, (_, identity) in data_files(settings, table).items()}
    index = read_key_index(settings, table, key_schema)
    rebuilt = index is None or index.identities != files
    if rebuilt:
        index = rebuild_key_index(settings, table, key_schema)
    return LakeKeys(index.hashes, len(index.identities), rebuilt)
