"""The Dagster IO manager that stores each asset partition as one Parquet file in the lake."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
from dagster import (
    AssetKey,
    ConfigurableIOManager,
    InitResourceContext,
    InputContext,
    OutputContext,
    TableColumn,
    TableSchema,
)
from pydantic import Field

from sqlgym_assets.lake.history import SyncRecord, sync_status, write_sync_record
from sqlgym_assets.lake.keys import (
    CollectedKeys,
    KeyedPartition,
    KeySetChange,
    file_identity,
    file_keys,
    update_key_index,
    write_key_set,
)
from sqlgym_assets.lake.layout import LakeSettings, key_set_uri, lake_settings, partition_uri
from sqlgym_assets.lake.reader import read_table
from sqlgym_assets.lake.writer import (
    BatchStream,
    WrittenFile,
    use_jemalloc_for_arrow,
    write_partition,
)

# Output metadata the asset attaches and the sync record repeats.
SOURCE_ROW_COUNT = "sqlgym/source_row_count"
LIVE_KEYS = "sqlgym/live_keys"
DELETED_KEYS = "sqlgym/deleted_keys"


@dataclass(frozen=True)
class SyncFacts:
    """What a day's sync record repeats besides the file: the run, the table's sync mode, and the
    metadata of the read (the source's count and window)."""

    run_id: str
    sync_mode: str
    read_metadata: Mapping[str, Any]


class ParquetLakeIOManager(ConfigurableIOManager):
    """Writes a stream of Arrow batches (or a Table or DataFrame) to
    ``<lake>/<table>/YYYY/MM/DD/<table>_YYYYMMDD.parquet``, atomically, on S3 or a local disk.

    A stream is written while whatever it reads from is still open, and closed by the write.
    """

    lake_url: str = Field(description="s3://bucket/prefix or a local directory.")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint; defaults to $AWS_ENDPOINT_URL, else AWS."
    )
    kms_key_id: str | None = Field(
        default=None, description="Encrypt objects with this KMS key (SSE-KMS) instead of AES256."
    )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # Before the step's asset body starts the extract, whose batches this allocator holds.
        use_jemalloc_for_arrow()

    def settings(self) -> LakeSettings:
        return lake_settings(
            self.lake_url, s3_endpoint_url=self.s3_endpoint_url, kms_key_id=self.kms_key_id
        )

    def file_uri(self, asset_key: AssetKey, partition_key: str) -> str:
        """Where the asset's partition lives: its table's file of that day."""
        return partition_uri(self.settings(), asset_key.path[-1], date.fromisoformat(partition_key))

    def handle_output(
        self, context: OutputContext, obj: KeyedPartition | BatchStream | pa.Table | pd.DataFrame
    ) -> None:
        context.add_output_metadata(
            self.write_day(
                context.asset_key,
                context.asset_partition_key,
                obj,
                SyncFacts(
                    run_id=context.run_id,
                    sync_mode=str(_value(context.definition_metadata, "sqlgym/sync_mode") or ""),
                    read_metadata=context.output_metadata,
                ),
                context.log,
            )
        )

    def write_day(
        self,
        asset_key: AssetKey,
        partition: str,
        obj: KeyedPartition | BatchStream | pa.Table | pd.DataFrame,
        facts: SyncFacts,
        log: logging.Logger,
    ) -> dict[str, Any]:
        """Writes one day's file (with its keys and sync record); returns the metadata of its
        materialization. A run of one day calls it through ``handle_output``; a run of a range of
        days, once per day."""
        settings = self.settings()
        uri = self.file_uri(asset_key, partition)
        table = asset_key.path[-1]
        if isinstance(obj, KeyedPartition):
            written, keys = self._write_keyed(settings, uri, table, partition, obj)
            log.info(
                f"recorded {keys.live} live keys ({keys.deleted} deleted since the previous sync)"
                + (", kept the newer key set already in the lake" if keys.superseded else "")
            )
        else:
            written, keys = write_partition(settings, uri, obj), None
        # The extract's batches are freed; hand their pages back before the checks allocate.
        pa.default_memory_pool().release_unused()
        log.info(f"wrote {written.rows} rows ({written.bytes} bytes) to {uri}")
        record_uri = _record_sync(settings, table, partition, written, keys, facts)
        key_metadata = (
            {}
            if keys is None
            else {
                LIVE_KEYS: keys.live,
                DELETED_KEYS: keys.deleted,
                "sqlgym/key_set": key_set_uri(settings, table),
            }
        )
        return {
            **key_metadata,
            "dagster/row_count": written.rows,
            "dagster/partition_row_count": written.rows,
            "dagster/uri": uri,
            # The schema as written, so the UI shows what readers of the file will get.
            "dagster/column_schema": TableSchema(
                columns=[TableColumn(field.name, str(field.type)) for field in written.schema]
            ),
            "sqlgym/file_bytes": written.bytes,
            "sqlgym/write_seconds": round(written.seconds, 3),
            "sqlgym/rows_per_second": round(written.rows / written.seconds)
            if written.seconds > 0
            else 0,
            "sqlgym/sync_record": record_uri,
        }

    def _write_keyed(
        self, settings: LakeSettings, uri: str, table: str, partition: str, data: KeyedPartition
    ) -> tuple[WrittenFile, KeySetChange]:
        """Writes the file, then counts its keys in the key index and replaces the key set."""
        key_schema = data.live_keys.keys.schema
        replaced = (file_keys(settings, uri, key_schema.names), file_identity(settings, uri))
        rows = CollectedKeys(data.rows, key_schema.names)
        written = write_partition(settings, uri, rows)
        update_key_index(
            settings,
            table,
            key_schema,
            date.fromisoformat(partition),
            replaced,
            (rows.keys(), file_identity(settings, uri)),
        )
        return written, write_key_set(settings, table, data.live_keys)

    def load_input(self, context: InputContext) -> pa.Table:
        uri = self.file_uri(context.asset_key, context.asset_partition_key)
        return read_table(self.settings(), uri)


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _record_sync(
    settings: LakeSettings,
    table: str,
    partition: str,
    written: WrittenFile,
    keys: KeySetChange | None,
    facts: SyncFacts,
) -> str:
    written_at = datetime.now(UTC)
    source_count = _value(facts.read_metadata, SOURCE_ROW_COUNT)
    record = SyncRecord(
        table=table,
        partition=partition,
        mode=facts.sync_mode,
        window=str(_value(facts.read_metadata, "sqlgym/window") or ""),
        rows=written.rows,
        source_row_count=None if source_count is None else int(source_count),
        bytes=written.bytes,
        file_uri=written.uri,
        duration_seconds=round(written.seconds, 3),
        run_id=facts.run_id,
        status=sync_status(written.rows),
        written_at=written_at.isoformat(),
        live_keys=None if keys is None else keys.live,
        deleted_keys=None if keys is None else keys.deleted,
    )
    return write_sync_record(settings, record, written_at)
