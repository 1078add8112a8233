"""The code location: every asset, resource and (later) check and schedule of the SQLGym lake."""

from dagster import Definitions

from sqlgym_assets.assets import LAKE_IO_MANAGER_KEY, build_assets
from sqlgym_assets.parquet_io_manager import ParquetLakeIOManager
from sqlgym_assets.postgres_resource import PostgresResource

# Resources read their environment variables when a run starts, never here at import.
defs = Definitions(
    assets=build_assets(),
    resources={
        "postgres": PostgresResource(),
        LAKE_IO_MANAGER_KEY: ParquetLakeIOManager(),
    },
)
