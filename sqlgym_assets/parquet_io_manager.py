"""The IO manager that stores each asset partition as one Parquet file in the lake."""

from __future__ import annotations

import os
from datetime import date

import pandas as pd
import pyarrow as pa
from dagster import (
    AssetKey,
    ConfigurableIOManager,
    InputContext,
    OutputContext,
)
from pydantic import Field

from sqlgym_assets.lake import LakeSettings, lake_settings, read_partition, write_partition

LAKE_URL_ENV = "SQLGYM_LAKE_URL"


class ParquetLakeIOManager(ConfigurableIOManager):
    """Writes a stream of Arrow batches (or a Table or DataFrame) to
    ``<lake>/<table>/YYYY/MM/DD/<table>_YYYYMMDD.parquet``, atomically, on S3 or a local disk.
    """

    lake_url: str | None = Field(
        default=None,
        description=f"s3://bucket/prefix or a local directory; defaults to ${LAKE_URL_ENV}.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint; defaults to $AWS_ENDPOINT_URL, else AWS."
    )
    kms_key_id: str | None = Field(
        default=None, description="Encrypt objects with this KMS key (SSE-KMS) instead of AES256."
    )

    def settings(self) -> LakeSettings:
        return lake_settings(
            self.lake_url or os.environ.get(LAKE_URL_ENV),
            s3_endpoint_url=self.s3_endpoint_url,
            kms_key_id=self.kms_key_id,
        )

    def partition_uri(self, asset_key: AssetKey, partition_key: str) -> str:
        return self.settings().partition_uri(asset_key.path[-1], date.fromisoformat(partition_key))

    def handle_output(
        self, context: OutputContext, obj: pa.RecordBatchReader | pa.Table | pd.DataFrame
    ) -> None:
        uri = self.partition_uri(context.asset_key, context.asset_partition_key)
        written = write_partition(self.settings(), uri, obj)
        context.log.info(f"wrote {written.rows} rows ({written.bytes} bytes) to {uri}")
        context.add_output_metadata(
            {
                "dagster/row_count": written.rows,
                "dagster/partition_row_count": written.rows,
                "dagster/uri": uri,
                "sqlgym/file_bytes": written.bytes,
                "sqlgym/write_seconds": round(written.seconds, 3),
                "sqlgym/rows_per_second": round(written.rows / written.seconds)
                if written.seconds > 0
                else 0,
            }
        )

    def load_input(self, context: InputContext) -> pa.Table:
        uri = self.partition_uri(context.asset_key, context.asset_partition_key)
        return read_partition(self.settings(), uri)
