"""sqlgym_assets: the SQLGym PostgreSQL database as a daily-partitioned Parquet lake on Dagster."""

from sqlgym_assets.definitions import defs as defs
