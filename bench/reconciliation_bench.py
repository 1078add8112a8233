"""The reconciliation check's cost as a lake grows: the key index against re-reading every day.

An incremental table of ``--keys`` rows is loaded on its first day, then each later day updates
``--changed`` of its rows (their new versions land in that day's file, the old ones stay in older
files) and deletes a few. At each of ``--days`` the lake holds that many days of files, and the
bench times, medians of ``--repeat``:

- ``index update``: what a sync adds to its step: the day's file counted into the key index
  (``lake.keys.update_key_index``) and the key set replaced (``write_key_set``);
- ``check (key index)``: the reconciliation check as a step runs it
  (``quality.reconciliation.check_keys_match_source``): one listing, the index, the key set;
- ``check (re-read every day)``: the same answer computed the way an index spares: every day's
  key column read again.

Both checks must find the same missing and surviving keys, or the bench fails. Writes JSON and
Markdown under ``--results-dir``. No database: the files are written here, as the lake's writer
writes them.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetKey

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
if str(REPOSITORY_ROOT) not in sys.path:  # run as a script: the project is importable
    sys.path.insert(0, str(REPOSITORY_ROOT))

from extract_bench import machine, package_versions  # noqa: E402  (this folder)

from sqlgym_assets.catalog import Column, SyncMode, TableSpec  # noqa: E402
from sqlgym_assets.lake.keys import (  # noqa: E402
    LiveKeys,
    file_identity,
    file_keys,
    rebuild_key_index,
    stored_key_set,
    update_key_index,
    write_key_set,
)
from sqlgym_assets.lake.layout import lake_settings, partition_uri  # noqa: E402
from sqlgym_assets.lake.writer import write_partition  # noqa: E402
from sqlgym_assets.quality.reconciliation import check_keys_match_source  # noqa: E402

TABLE = TableSpec(
    name="bench_versions",
    description="Rows updated day after day.",
    group="bench",
    sync_mode=SyncMode.INCREMENTAL,
    priority=1,
    cursor_column="updated_at",
    columns=(
        Column("id", "bigint", required=True),
        Column("payload", "text"),
        Column("updated_at", "timestamp without time zone", required=True),
    ),
)
KEY_SCHEMA = pa.schema([pa.field("id", pa.int64())])
FIRST_DAY = date(2025, 1, 1)
DELETES_PER_DAY = 10


def day_file(ids: list[int], day: date) -> pa.Table:
    stamp = datetime.combine(day, datetime.min.time())
    return pa.table(
        {
            "id": pa.array(sorted(ids), pa.int64()),
            "payload": pa.array([f"version of {day}"] * len(ids)),
            "updated_at": pa.array([stamp] * len(ids), pa.timestamp("us")),
        }
    )


def timed(action: Any, repeat: int) -> tuple[float, Any]:
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def reread_every_day(lake: Path, days: int, live: pa.Table) -> tuple[int, int]:
    """Missing and surviving keys, from every day's key column read again (and the key set)."""
    settings = lake_settings(str(lake))
    parts = [
        file_keys(settings, partition_uri(settings, TABLE.name, FIRST_DAY + timedelta(n)), ["id"])
        for n in range(days)
    ]
    in_files = pa.concat_tables(parts).group_by(["id"]).aggregate([])
    # Exact joins of the keys themselves: the check compares key hashes, this does not.
    current = in_files.join(stored_key_set(settings, TABLE.name).keys, "id", join_type="left semi")
    missing = live.join(current, "id", join_type="left anti").num_rows
    return missing, current.join(live, "id", join_type="left anti").num_rows


def grow_lake(lake: Path, keys: int, changed: float, checkpoints: list[int]):
    """Writes the table's days one by one; yields the day count and live keys at each checkpoint."""
    rng = random.Random(7)
    settings = lake_settings(str(lake))
    live_ids = set(range(keys))
    for day_count in range(1, max(checkpoints) + 1):
        day = FIRST_DAY + timedelta(day_count - 1)
        if day_count == 1:
            ids = sorted(live_ids)
        else:
            population = sorted(live_ids)
            ids = rng.sample(population, int(len(population) * changed))
            live_ids -= set(rng.sample(population, DELETES_PER_DAY))
        write_partition(settings, partition_uri(settings, TABLE.name, day), day_file(ids, day))
        if day_count in checkpoints:
            yield day_count, pa.table({"id": pa.array(sorted(live_ids), pa.int64())})


def measure(lake: Path, day_count: int, live: pa.Table, repeat: int) -> dict[str, Any]:
    settings = lake_settings(str(lake))
    # The steady state a sync leaves: the index counts every file, the key set is live.
    rebuild_key_index(settings, TABLE.name, KEY_SCHEMA)
    read_at = datetime.now(UTC)
    last_day = FIRST_DAY + timedelta(day_count - 1)
    last_uri = partition_uri(settings, TABLE.name, last_day)

    def sync_bookkeeping() -> None:
        # A step re-writing the day's file reads the keys of the file it replaces, counts the
        # new one instead, and replaces the key set.
        replaced = (file_keys(settings, last_uri, ["id"]), file_identity(settings, last_uri))
        update_key_index(settings, TABLE.name, KEY_SCHEMA, last_day, replaced, replaced)
        write_key_set(settings, TABLE.name, LiveKeys(live, read_at))

    asset_key = AssetKey(["sqlgym", TABLE.name])
    update_seconds, _ = timed(sync_bookkeeping, repeat)
    check_seconds, check = timed(
        lambda: check_keys_match_source(asset_key, TABLE, settings, live), repeat
    )
    reread_seconds, reread = timed(lambda: reread_every_day(lake, day_count, live), repeat)
    found = (
        check.metadata["missing_keys"].value,
        check.metadata["surviving_deleted_keys"].value,
    )
    if found != reread or check.metadata["key_index_rebuilt"].value:
        raise AssertionError(f"at {day_count} days the index found {found}, re-reading {reread}")
    files = list((lake / TABLE.name).rglob("*.parquet"))
    return {
        "days": day_count,
        "live_keys": live.num_rows,
        "row_versions": sum(pq.read_metadata(path).num_rows for path in files),
        "data_mb": sum(path.stat().st_size for path in files) / 2**20,
        "index_update_seconds": update_seconds,
        "check_seconds": check_seconds,
        "reread_seconds": reread_seconds,
        "missing_keys": found[0],
        "surviving_keys": found[1],
    }


def run(keys: int, changed: float, checkpoints: list[int], repeat: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="sqlgym-bench-keys-") as directory:
        lake = Path(directory)
        return [
            measure(lake, day_count, live, repeat)
            for day_count, live in grow_lake(lake, keys, changed, checkpoints)
        ]


def markdown(results: list[dict[str, Any]], keys: int, changed: float) -> str:
    lines = [
        f"Reconciliation of an incremental table of {keys:,} keys, {changed:.0%} of them updated "
        f"and {DELETES_PER_DAY} deleted each day (medians):",
        "",
        "| days in the lake | row versions | sync's index update | check (key index) "
        "| check (re-read every day) | re-read / index |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        lines.append(
            f"| {row['days']} | {row['row_versions']:,} | {row['index_update_seconds']:.3f} s "
            f"| {row['check_seconds']:.3f} s | {row['reread_seconds']:.3f} s "
            f"| {row['reread_seconds'] / row['check_seconds']:.1f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.02, help="share updated each day")
    parser.add_argument("--days", default="30,120,365", help="lake sizes to measure, in days")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=REPOSITORY_ROOT / "bench_results")
    args = parser.parse_args(argv)
    checkpoints = sorted(int(days) for days in args.days.split(","))
    results = run(args.keys, args.changed, checkpoints, args.repeat)
    report = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "packages": package_versions(),
        "keys": args.keys,
        "changed": args.changed,
        "results": results,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "reconciliation.json").write_text(json.dumps(report, indent=2))
    table = markdown(results, args.keys, args.changed)
    (args.results_dir / "reconciliation.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
