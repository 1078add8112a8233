"""The checks on each lake partition: row count, NULLs, duplicate keys, schema drift, and for
windowed tables the reconciliation of the current state with the source's keys.

The row-count, NULL and duplicate validations run with great-expectations (``validator.py``) on
the file just written. Memory does not grow with the rows: the NULL check reads at most
NULL_CHECKED_ROWS rows at a time, the key check one bucket of keys at a time (``keys.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    PartitionsDefinition,
    PreviewWarning,
)

from sqlgym_assets.catalog import SyncMode, TableSpec
from sqlgym_assets.lake.layout import LakeSettings
from sqlgym_assets.lake.reader import local_copy
from sqlgym_assets.quality.keys import arrow_backed, key_buckets
from sqlgym_assets.quality.reconciliation import (
    KEYS_MATCH_SOURCE,
    KEYS_MATCH_SOURCE_DESCRIPTION,
    check_keys_match_source,
)
from sqlgym_assets.quality.validator import (
    MAX_REPORTED_KEYS,
    RESULT_FORMAT,
    Validator,
    shared_validator,
    unique_key_expectation,
)
from sqlgym_assets.source.plan import ContractDrift, contract_schema

# Checks partitioned like their asset keep each day's result in the UI; Dagster marks that
# preview and re-creates the specs (so the notice) on every load and run, hundreds of lines per
# CLI run. It is the design, so only that notice is ignored.
warnings.filterwarnings(
    "ignore",
    message="Specifying a partitions_def on an AssetCheckSpec",
    category=PreviewWarning,
)

ROW_COUNT_MATCHES_SOURCE = "row_count_matches_source"
NO_NULL_REQUIRED_COLUMNS = "no_null_required_columns"
NO_DUPLICATE_PRIMARY_KEYS = "no_duplicate_primary_keys"
SCHEMA_MATCHES_SOURCE = "schema_matches_source"

_DESCRIPTIONS = {
    ROW_COUNT_MATCHES_SOURCE: "The file holds as many rows as PostgreSQL counted for the same "
    "window, in the same snapshot as the extract.",
    NO_NULL_REQUIRED_COLUMNS: "No NULL in a column that is NOT NULL in the source.",
    NO_DUPLICATE_PRIMARY_KEYS: "The primary key is unique within the partition.",
    SCHEMA_MATCHES_SOURCE: "The file's columns and types equal the source table's current ones "
    "(a WARN, so a column added upstream shows before it breaks anyone).",
}
# The checks whose rows great-expectations validates; they also block downstream on ERROR.
VALIDATED_CHECKS = frozenset(
    {ROW_COUNT_MATCHES_SOURCE, NO_NULL_REQUIRED_COLUMNS, NO_DUPLICATE_PRIMARY_KEYS}
)
CHECK_NAMES = tuple(_DESCRIPTIONS)
NULL_CHECKED_ROWS = 128 * 1024


def check_names(table: TableSpec) -> tuple[str, ...]:
    """The checks of a table's partitions: a windowed table's are also reconciled by key."""
    windowed = table.sync_mode is not SyncMode.SNAPSHOT
    return (*CHECK_NAMES, KEYS_MATCH_SOURCE) if windowed else CHECK_NAMES


def build_check_specs(
    asset_key: AssetKey, table: TableSpec, partitions_def: PartitionsDefinition
) -> list[AssetCheckSpec]:
    descriptions = {**_DESCRIPTIONS, KEYS_MATCH_SOURCE: KEYS_MATCH_SOURCE_DESCRIPTION}
    return [
        AssetCheckSpec(
            name,
            asset=asset_key,
            description=descriptions[name],
            blocking=name in VALIDATED_CHECKS,
            partitions_def=partitions_def,
        )
        for name in check_names(table)
    ]


@dataclass(frozen=True)
class PartitionFacts:
    """What the checks compare the file against: the source's count and how it differs from the
    catalog."""

    source_row_count: int | None  # None: no count was recorded for this partition
    drift: ContractDrift
    live_keys: pa.Table | None = None  # a windowed table's live key set


def run_checks(
    table: TableSpec,
    asset_key: AssetKey,
    settings: LakeSettings,
    uri: str,
    facts: PartitionFacts,
    selected: Iterable[str] = CHECK_NAMES,
) -> list[AssetCheckResult]:
    selected = set(selected)
    with local_copy(settings, uri) as path:
        results = _check_file(table, asset_key, pq.ParquetFile(path), facts, selected)
    if KEYS_MATCH_SOURCE in selected and facts.live_keys is not None:
        results.append(check_keys_match_source(asset_key, table, settings, facts.live_keys))
    return results


def _check_file(
    table: TableSpec,
    asset_key: AssetKey,
    parquet: pq.ParquetFile,
    facts: PartitionFacts,
    selected: set[str],
) -> list[AssetCheckResult]:
    results = []
    if SCHEMA_MATCHES_SOURCE in selected:
        results.append(check_schema(asset_key, table, parquet.schema_arrow, facts.drift))
    data_checks = selected & VALIDATED_CHECKS
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
    validator = shared_validator()
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


def check_row_count(
    asset_key: AssetKey, validator: Validator, rows_per_bucket: list[int], expected: int | None
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
    validator: Validator,
    parquet: pq.ParquetFile,
    table: TableSpec,
    required: Sequence[str],
) -> AssetCheckResult:
    """NULL_CHECKED_ROWS rows of the NOT NULL columns per validation, whatever the file's row
    groups: memory stays at one such slice, and great-expectations' cost per validation (tens of
    milliseconds) is paid per slice, not per row group."""
    null_counts = dict.fromkeys(required, 0)
    offending_keys: dict[str, list[str]] = {}
    expectations = [
        validator.expectations.ExpectColumnValuesToNotBeNull(
            column=column, result_format=RESULT_FORMAT
        )
        for column in required
    ]
    for groups in _row_group_runs(parquet, NULL_CHECKED_ROWS):
        # One thread: decoding the columns in parallel held 40 MB more per run of 90,000 rows.
        frame = arrow_backed(
            parquet.read_row_groups(groups, columns=list(required), use_threads=False)
        )
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


def _row_group_runs(parquet: pq.ParquetFile, max_rows: int) -> Iterator[list[int]]:
    """Consecutive row groups of at most ``max_rows`` rows together (a larger group alone).

    Read group by group, not with ``iter_batches``, which read ahead and held several times the
    memory (measured on the 2 M-row bench table: a peak of 780-820 MB against 540 MB).
    """
    run: list[int] = []
    rows = 0
    for group in range(parquet.num_row_groups):
        group_rows = parquet.metadata.row_group(group).num_rows
        if run and rows + group_rows > max_rows:
            yield run
            run, rows = [], 0
        run.append(group)
        rows += group_rows
    if run:
        yield run


def _keys(frame: pd.DataFrame, rows: Sequence[int], table: TableSpec) -> list[str]:
    keys = frame.loc[list(rows)[:MAX_REPORTED_KEYS], list(table.primary_key)]
    return [", ".join(str(value) for value in key) for key in keys.itertuples(index=False)]


def check_schema(
    asset_key: AssetKey, table: TableSpec, file_schema: pa.Schema, drift: ContractDrift
) -> AssetCheckResult:
    """The file has the contract's schema, and the live source differs from the catalog in no
    column: a WARN, so a change upstream shows before it breaks anyone."""
    contract = contract_schema(table)
    return AssetCheckResult(
        asset_key=asset_key,
        check_name=SCHEMA_MATCHES_SOURCE,
        passed=file_schema.equals(contract) and not drift,
        severity=AssetCheckSeverity.WARN,
        metadata={
            **{name: MetadataValue.json(value) for name, value in drift.as_metadata().items()},
            "file_schema_differences": MetadataValue.json(_differences(contract, file_schema)),
        },
    )


def _differences(contract: pa.Schema, file_schema: pa.Schema) -> dict[str, object]:
    written = {field.name: field.type for field in file_schema}
    return {
        "missing": [name for name in contract.names if name not in written],
        "unexpected": [name for name in written if name not in contract.names],
        "mistyped": {
            field.name: {"contract": str(field.type), "file": str(written[field.name])}
            for field in contract
            if field.name in written and not written[field.name].equals(field.type)
        },
    }
