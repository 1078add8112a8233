"""The code location: every asset, check, job, schedule, sensor and resource of the SQLGym lake.

The data path, top to bottom, one package per layer:

    catalog.py   the 21 tables: columns, keys, sync mode, group, priority
    source/      credentials (secret or URL), the partition plan (SQL, Arrow types), the reader
                 (one read-only snapshot per partition, streamed as Arrow batches)
    lake/        layout (where each file and S3 key is), writer (atomic local rename, S3 multipart
                 upload), history (sync records), the Parquet IO manager
    quality/     the four checks on the written file (great-expectations)

``assets.py`` builds one asset per table along that path; ``operations/`` holds the schedules,
retries, failure alerts and ``sqlgym-monitor``; the local demo (``demo/``) is not part of it.
"""

from dagster import (
    AssetSelection,
    Definitions,
    EnvVar,
    define_asset_job,
    definitions,
    in_process_executor,
)

from sqlgym_assets.assets import LAKE_IO_MANAGER_KEY, build_assets, lake_asset_key
from sqlgym_assets.catalog import TABLES
from sqlgym_assets.lake.io_manager import ParquetLakeIOManager
from sqlgym_assets.lake.layout import LAKE_URL_ENV
from sqlgym_assets.operations.alerts import run_failure_alert
from sqlgym_assets.operations.schedules import ScheduleSettings, build_schedules
from sqlgym_assets.operations.shutdown import skip_the_last_collection
from sqlgym_assets.source.reader import PostgresResource

# Re-validates a day already in the lake without extracting it again: launch it for a partition.
lake_checks_job = define_asset_job(
    "sqlgym_lake_checks",
    selection=AssetSelection.checks_for_assets(*(lake_asset_key(table) for table in TABLES)),
    description="Runs the four checks of every lake asset on a partition already written.",
)


@definitions
def defs() -> Definitions:
    """Built when the code location loads: the schedule settings come from its environment, and
    the resources read theirs only when a run starts."""
    skip_the_last_collection()
    return Definitions(
        assets=build_assets(),
        jobs=[lake_checks_job],  # the schedules bring their own jobs
        schedules=build_schedules(ScheduleSettings.from_environment()),
        sensors=[run_failure_alert],
        # Measured on the 21-table hourly run (bench/hourly_run.py): a process per step spends
        # most of the run starting Python, Dagster and great-expectations 21 times; one process
        # runs the same run several times faster. Steps stay isolated: one failing table does not
        # stop the others. Revisit with more cores and a remote database (README, Performance).
        executor=in_process_executor,
        resources={
            "postgres": PostgresResource(),
            LAKE_IO_MANAGER_KEY: ParquetLakeIOManager(lake_url=EnvVar(LAKE_URL_ENV)),
        },
    )
