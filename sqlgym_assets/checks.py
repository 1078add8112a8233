"""Quality checks on each lake partition: row count, NULLs, duplicate keys, schema drift.

The row-count, NULL and duplicate validations run with great-expectations in an ephemeral
context. great-expectations is imported inside the check, never at module import: it costs
seconds per process and definitions must load without it. Memory does not grow with the rows:
the NULL check reads one row group at a time, the key check one bucket of keys at a time.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    PartitionsDefinition,
)

from sqlgym_assets.catalog import TableSpec
from sqlgym_assets.extraction import SourceColumn, plan_column
from sqlgym_assets.lake import LakeSettings, local_copy

ROW_COUNT_MATCHES_SOURCE = "row_count_matches_source"
NO_NULL_REQUIRED_COLUMNS = "no_null_required_columns"
NO_DUPLICATE_PRIMARY_KEYS = "no_duplicate_primary_keys"
SCHEMA_MATCHES_SOURCE = "schema_matches_source"
MAX_REPORTED_KEYS = 20
# About the most keys great-expectations' uniqueness check is given at once: a partition with
# more has its keys split by hash into buckets of this size, so memory does not grow with rows.
KEYS_PER_BUCKET = 250_000
# SUMMARY keeps at most MAX_REPORTED_KEYS offending values and row positions, whatever the size.
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_REPORTED_KEYS}

_DESCRIPTIONS = {
    ROW_COUNT_MATCHES_SOURCE: "The file holds as many rows as PostgreSQL counted for the same "
    "window, in the same snapshot as the extract.",
    NO_NULL_REQUIRED_COLUMNS: "No NULL in a column that is NOT NULL in the source.",
    NO_DUPLICATE_PRIMARY_KEYS: "The primary key is unique within the partition.",
    SCHEMA_MATCHES_SOURCE: "The file's columns and types equal the source table's current ones "
    "(a WARN, so a column added upstream shows before it breaks anyone).",
}
_BLOCKING = {ROW_COUNT_MATCHES_SOURCE, NO_NULL_REQUIRED_COLUMNS, NO_DUPLICATE_PRIMARY_KEYS}
CHECK_NAMES = tuple(_DESCRIPTIONS)


def build_check_specs(
    asset_key: AssetKey, partitions_def: PartitionsDefinition
) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            name,
            asset=asset_key,
            description=description,
            blocking=name in _BLOCKING,
            partitions_def=partitions_def,
        )
        for name, description in _DESCRIPTIONS.items()
    ]


@dataclass(frozen=True)
class PartitionFacts:
    """What the checks compare the file against, all from the source."""

    source_row_count: int | None  # None: no count was recorded for this partition
    source_columns: Sequence[SourceColumn]


def run_checks(
    table: TableSpec,
    asset_key: AssetKey,
    settings: LakeSettings,
    uri: str,
    facts: PartitionFacts,
    selected: Iterable[str] = CHECK_NAMES,
) -> list[AssetCheckResult]:
    with local_copy(settings, uri) as path:
        return _check_file(table, asset_key, pq.ParquetFile(path), facts, set(selected))


def _check_file(
    table: TableSpec,
    asset_key: AssetKey,
    parquet: pq.ParquetFile,
    facts: PartitionFacts,
    selected: set[str],
) -> list[AssetCheckResult]:
    results = []
    if SCHEMA_MATCHES_SOURCE in selected:
        results.append(check_schema(asset_key, parquet.schema_arrow, facts.source_columns))
    data_checks = selected & _BLOCKING
    if not data_checks:
        return results
    # Only the key and NOT NULL columns are read: never the JSON and text payloads.
    required = list(
        dict.fromkeys([*table.primary_key, *(c.name for c in table.columns if c.required)])
    )
    missing = [name for name in required if name not in parquet.schema_arrow.names]
    if missing:
        # Without them the NULL and key checks cannot look; the file itself is damaged.
        return results + [
            AssetCheckResult(
                asset_key=asset_key,
                check_name=name,
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                description=f"The file lacks column(s) {missing}: materialize it again.",
                metadata={"missing_columns": MetadataValue.json(missing)},
            )
            for name in sorted(data_checks)
        ]
    validator = _Validator()
    unique_key = unique_key_expectation(validator, table)
    rows_per_bucket: list[int] = []
    key_validations: list[Any] = []
    for keys in key_buckets(parquet, list(table.primary_key)):
        rows_per_bucket.append(len(keys))
        if NO_DUPLICATE_PRIMARY_KEYS in data_checks:
            key_validations.append(validator.validate(keys, unique_key))
    if ROW_COUNT_MATCHES_SOURCE in data_checks:
        results.append(
            check_row_count(asset_key, validator, rows_per_bucket, facts.source_row_count)
        )
    if NO_DUPLICATE_PRIMARY_KEYS in data_checks:
        results.append(check_no_duplicates(asset_key, key_validations))
    if NO_NULL_REQUIRED_COLUMNS in data_checks:
        results.append(check_no_nulls(asset_key, validator, parquet, table, required))
    return results


class _Validator:
    """great-expectations in an ephemeral context, imported on first use, progress bars off."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        asset = context.data_sources.add_pandas("lake").add_dataframe_asset("partition")
        self._batches = asset.add_batch_definition_whole_dataframe("frame")
        self._suite = gx.ExpectationSuite
        self.expectations = gx.expectations

    def validate(self, frame: pd.DataFrame, expectation: Any) -> Any:
        return self._batches.get_batch(batch_parameters={"dataframe": frame}).validate(expectation)

    def validate_all(self, frame: pd.DataFrame, expectations: list[Any]) -> list[Any]:
        """Several expectations in one pass; results in the same order."""
        suite = self._suite(name="partition", expectations=expectations)
        return list(self.validate(frame, suite).results)


def key_buckets(parquet: pq.ParquetFile, columns: list[str]) -> Iterator[pd.DataFrame]:
    """The file's key columns, one bucket at a time (Arrow-backed); equal keys share a bucket.

    Up to KEYS_PER_BUCKET rows there is one bucket, read whole: no hashing, no temporary file.
    Above, one pass writes each bucket's keys into one Arrow IPC file, from which each bucket is
    read back alone. A pass over the file per bucket instead would read the keys (from S3 too)
    once per bucket, at about 0.5 s per million rows each time.
    """
    buckets = math.ceil(parquet.metadata.num_rows / KEYS_PER_BUCKET)
    if buckets <= 1:
        yield _arrow_backed(parquet.read(columns=columns))
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
                    yield _arrow_backed(keys)


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
            keys = parquet.read_row_group(group, columns=columns)
            bucket = (_key_hashes(keys) % buckets).astype(np.int64)
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


def _key_hashes(keys: pa.Table) -> np.ndarray:
    """A 64-bit hash of each row's key, a compound key's columns combined.

    Integer and boolean columns are hashed as text: pandas hashes them as other types in a row
    group where they hold a NULL, so one key would get two hashes and land in two buckets.
    """
    columns = [
        pc.cast(column, pa.string())
        if pa.types.is_integer(column.type) or pa.types.is_boolean(column.type)
        else column
        for column in keys.columns
    ]
    frame = _arrow_backed(pa.table(columns, names=keys.column_names))
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _arrow_backed(data: pa.Table) -> pd.DataFrame:
    return data.to_pandas(types_mapper=pd.ArrowDtype)


def check_row_count(
    asset_key: AssetKey, validator: _Validator, rows_per_bucket: list[int], expected: int | None
) -> AssetCheckResult:
    observed = sum(rows_per_bucket)
    if expected is None:
        return AssetCheckResult(
            asset_key=asset_key,
            check_name=ROW_COUNT_MATCHES_SOURCE,
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description="No source count was recorded for this partition: materialize it again.",
            metadata={"observed": observed},
        )
    # The rows read, counted per bucket of keys and added up by great-expectations. Counting a
    # frame as long as the file would cost memory per row even without columns: great-expectations
    # hashes every row of a frame it is given, its index included.
    validation = validator.validate(
        pd.DataFrame({"rows": rows_per_bucket}),
        validator.expectations.ExpectColumnSumToBeBetween(
            column="rows", min_value=expected, max_value=expected
        ),
    )
    return AssetCheckResult(
        asset_key=asset_key,
        check_name=ROW_COUNT_MATCHES_SOURCE,
        passed=bool(validation.success),
        severity=AssetCheckSeverity.ERROR,
        metadata={"expected": expected, "observed": observed, "difference": observed - expected},
    )


def unique_key_expectation(validator: _Validator, table: TableSpec) -> Any:
    expectations = validator.expectations
    if len(table.primary_key) == 1:
        return expectations.ExpectColumnValuesToBeUnique(
            column=table.primary_key[0], result_format=_RESULT_FORMAT
        )
    return expectations.ExpectCompoundColumnsToBeUnique(
        column_list=list(table.primary_key), result_format=_RESULT_FORMAT
    )


def check_no_duplicates(asset_key: AssetKey, validations: Sequence[Any]) -> AssetCheckResult:
    """Adds up the buckets' validations: a key's duplicates are all in its own bucket."""
    duplicated: list[str] = []
    for validation in validations:
        for entry in validation.result.get("partial_unexpected_counts") or []:
            value = entry["value"]
            key = value if isinstance(value, list | tuple) else [value]
            duplicated.append(", ".join(str(part) for part in key))
    return AssetCheckResult(
        asset_key=asset_key,
        check_name=NO_DUPLICATE_PRIMARY_KEYS,
        passed=all(validation.success for validation in validations),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "duplicate_rows": sum(
                int(validation.result.get("unexpected_count") or 0) for validation in validations
            ),
            "duplicated_keys": MetadataValue.json(duplicated[:MAX_REPORTED_KEYS]),
        },
    )


def check_no_nulls(
    asset_key: AssetKey,
    validator: _Validator,
    parquet: pq.ParquetFile,
    table: TableSpec,
    required: Sequence[str],
) -> AssetCheckResult:
    """Row group by row group, so memory stays at one group of the NOT NULL columns."""
    null_counts = dict.fromkeys(required, 0)
    offending_keys: dict[str, list[str]] = {}
    expectations = [
        validator.expectations.ExpectColumnValuesToNotBeNull(
            column=column, result_format=_RESULT_FORMAT
        )
        for column in required
    ]
    for group in range(parquet.num_row_groups):
        frame = _arrow_backed(parquet.read_row_group(group, columns=list(required)))
        for column, validation in zip(
            required, validator.validate_all(frame, expectations), strict=True
        ):
            null_counts[column] += int(validation.result.get("unexpected_count") or 0)
            rows = validation.result.get("partial_unexpected_index_list") or []
            if rows:
                reported = offending_keys.setdefault(column, [])
                reported.extend(_keys(frame, rows, table)[: MAX_REPORTED_KEYS - len(reported)])
    return AssetCheckResult(
        asset_key=asset_key,
        check_name=NO_NULL_REQUIRED_COLUMNS,
        passed=not any(null_counts.values()),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "null_counts": MetadataValue.json(null_counts),
            "offending_primary_keys": MetadataValue.json(offending_keys),
            "columns_checked": len(required),
        },
    )


def _keys(frame: pd.DataFrame, rows: Sequence[int], table: TableSpec) -> list[str]:
    keys = frame.loc[list(rows)[:MAX_REPORTED_KEYS], list(table.primary_key)]
    return [", ".join(str(value) for value in key) for key in keys.itertuples(index=False)]


def check_schema(
    asset_key: AssetKey, file_schema: pa.Schema, source_columns: Sequence[SourceColumn]
) -> AssetCheckResult:
    source = {column.name: plan_column(column).arrow_type for column in source_columns}
    written = {field.name: field.type for field in file_schema}
    added = [name for name in source if name not in written]
    removed = [name for name in written if name not in source]
    changed = {
        name: {"file": str(written[name]), "source": str(source[name])}
        for name in written
        if name in source and not written[name].equals(source[name])
    }
    return AssetCheckResult(
        asset_key=asset_key,
        check_name=SCHEMA_MATCHES_SOURCE,
        passed=not (added or removed or changed),
        severity=AssetCheckSeverity.WARN,
        metadata={
            "added_columns": MetadataValue.json(added),
            "removed_columns": MetadataValue.json(removed),
            "changed_columns": MetadataValue.json(changed),
        },
    )
