"""The reconciliation check of a windowed table: its current state in the lake holds exactly the
source's live keys.

The lake's current state is what the current-state views show: the keys some data file holds
(the key index, ``lake/keys.py``) that are in the key set of the latest sync. The check reads the
index, the key set and one listing of the table's files, never the files' rows, so its cost follows
the table's key count and not the number of days in the lake (``make bench`` measures it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, MetadataValue

from sqlgym_assets.catalog import TableSpec
from sqlgym_assets.lake.keys import in_sorted, key_hashes, lake_keys, stored_key_set
from sqlgym_assets.lake.layout import LakeSettings

KEYS_MATCH_SOURCE = "keys_match_source"
KEYS_MATCH_SOURCE_DESCRIPTION = (
    "The table's current state in the lake (the latest version of each key across all days, "
    "without the keys deleted as of the latest sync) holds every live source key and no other. "
    "ERROR when a key deleted in the source survives; WARN when live keys have no row yet "
    "(days not yet synced: backfill them)."
)
MAX_EXAMPLE_KEYS = 20


def check_keys_match_source(
    asset_key: AssetKey, table: TableSpec, settings: LakeSettings, live_keys: pa.Table
) -> AssetCheckResult:
    # Sets of 64-bit key hashes (lake/keys.py, KeyIndex); examples are the keys themselves.
    current = lake_keys(settings, table.name, live_keys.schema)
    key_set = stored_key_set(settings, table.name, live_keys.column_names)
    current_hashes = current.hashes  # sorted
    if key_set is not None:
        key_set_hashes = key_hashes(key_set.keys)
        current_hashes = current_hashes[in_sorted(current_hashes, np.sort(key_set_hashes))]
    live_hashes = key_hashes(live_keys)
    missing = live_keys.filter(pa.array(~in_sorted(live_hashes, current_hashes)))
    surviving = current_hashes[~in_sorted(current_hashes, np.sort(live_hashes))]
    surviving_keys = (
        key_set.keys.filter(pa.array(in_sorted(key_set_hashes, surviving)))
        if key_set is not None
        else live_keys.slice(0, 0)  # without a key set the index has hashes only
    )
    # A deleted row that analysts still count is a wrong answer; a live row not there yet is a
    # gap that a backfill of its day closes, and every lake has it until its history is loaded.
    severity = AssetCheckSeverity.ERROR if len(surviving) else AssetCheckSeverity.WARN
    problems = []
    if len(surviving):
        problems.append(
            f"{len(surviving)} key(s) deleted in the source survive in the lake's current "
            "state: materialize today's partition to record the live key set"
        )
    if missing.num_rows:
        problems.append(
            f"{missing.num_rows} live key(s) have no row in the lake: their days were not "
            "synced (backfill them), or a file lost them"
        )
    return AssetCheckResult(
        asset_key=asset_key,
        check_name=KEYS_MATCH_SOURCE,
        passed=not problems,
        severity=severity,
        description="; ".join(problems) or None,
        metadata={
            "live_keys": live_keys.num_rows,
            "current_keys": len(current_hashes),
            "missing_keys": missing.num_rows,
            "surviving_deleted_keys": len(surviving),
            "missing_examples": MetadataValue.json(_examples(missing)),
            "surviving_examples": MetadataValue.json(_examples(surviving_keys)),
            "files_counted": current.files,
            "key_index_rebuilt": current.rebuilt,
            "key_set_read_at": MetadataValue.text(
                key_set.read_at.isoformat() if key_set else "none"
            ),
        },
    )


def _examples(keys: pa.Table) -> list[str]:
    """The first MAX_EXAMPLE_KEYS keys in order, without sorting them all."""
    order = [(name, "ascending") for name in keys.column_names]
    first = pc.select_k_unstable(keys, k=min(MAX_EXAMPLE_KEYS, keys.num_rows), sort_keys=order)
    return [
        ", ".join(f"{name}={value}" for name, value in row.items())
        for row in keys.take(first).sort_by(order).to_pylist()
    ]
