"""The lake as tables an analyst queries: SQL for DuckDB, Athena and Spark, from the catalog.

Each table gets two views:

- ``<table>_history``: every row of every file, with ``partition_date`` (the day in the file's
  path, a DATE);
- ``<table>``: the current state as of the latest sync. A snapshot table's is its latest day's
  file. An incremental or append table's is the latest version of each key across all days,
  without the keys that the latest sync's key set (``keys.py``) no longer holds: rows deleted in
  the source.

Naive timestamp columns hold UTC, so DuckDB reads them as UTC instants and Spark runs with its
session time zone at UTC, whatever the reader's own time zone is. One function per engine writes
its SQL; the table list, columns and types all come from the catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from sqlgym_assets.catalog import SyncMode, TableSpec
from sqlgym_assets.lake.keys import data_files, file_identity
from sqlgym_assets.lake.layout import (
    LakeConfigurationError,
    LakeSettings,
    key_set_folder_uri,
    key_set_uri,
    table_uri,
)
from sqlgym_assets.source.plan import contract_schema

ENGINES = ("duckdb", "athena", "spark")
PARTITION_DATE = "partition_date"
DAY_PATH_PATTERN = "([0-9]{4}/[0-9]{2}/[0-9]{2})/[^/]+$"  # the YYYY/MM/DD of a file's path
FIRST_DAY = "2025/01/01"  # the first partition (assets.DAILY_PARTITIONS)


@dataclass(frozen=True)
class LakeContents:
    """What the lake holds now: engines cannot read a glob that matches no file."""

    with_files: frozenset[str]
    with_key_sets: frozenset[str]


def lake_contents(settings: LakeSettings, tables: Iterable[TableSpec]) -> LakeContents:
    tables = list(tables)
    return LakeContents(
        with_files=frozenset(t.name for t in tables if data_files(settings, t.name)),
        with_key_sets=frozenset(
            t.name
            for t in tables
            # Its existence only: reading a key set of millions of keys to learn that is waste.
            if t.sync_mode is not SyncMode.SNAPSHOT
            and file_identity(settings, key_set_uri(settings, t.name)) is not None
        ),
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quoted(name: str, quote: str = '"') -> str:
    return quote + name.replace(quote, quote * 2) + quote


def _is_naive_timestamp(data_type: pa.DataType) -> bool:
    return pa.types.is_timestamp(data_type) and data_type.tz is None


def _sql_type(data_type: pa.DataType, engine: str) -> str:
    """The engine's type for a contract type; ``timestamp`` as each engine exposes it."""
    if pa.types.is_list(data_type):
        element = _sql_type(data_type.value_type, engine)
        return f"{element}[]" if engine == "duckdb" else f"array<{element}>"
    if pa.types.is_decimal(data_type):
        return f"decimal({data_type.precision},{data_type.scale})"
    if pa.types.is_timestamp(data_type):
        return "timestamptz" if engine == "duckdb" else "timestamp"
    names = {
        pa.string(): ("varchar", "string"),
        pa.int32(): ("integer", "int"),
        pa.int64(): ("bigint", "bigint"),
        pa.bool_(): ("boolean", "boolean"),
        pa.float64(): ("double", "double"),
        pa.date32(): ("date", "date"),
    }
    duckdb, other = names[data_type]
    return duckdb if engine == "duckdb" else other


def _current_state(table: TableSpec, history: str, live_keys: str | None, quote: str = '"') -> str:
    """The SELECT of a table's current state, over its history view (same SQL in all engines)."""
    columns = ", ".join(_quoted(name, quote) for name in table.column_names)
    if table.sync_mode is SyncMode.SNAPSHOT:
        return (
            f"SELECT {columns} FROM {history}\n"
            f"WHERE {PARTITION_DATE} = (SELECT max({PARTITION_DATE}) FROM {history})"
        )
    key = ", ".join(_quoted(name, quote) for name in table.primary_key)
    live = ""
    if live_keys is not None:
        matches = " AND ".join(
            f"k.{_quoted(name, quote)} = h.{_quoted(name, quote)}" for name in table.primary_key
        )
        live = f"\n  WHERE EXISTS (SELECT 1 FROM {live_keys} AS k WHERE {matches})"
    return (
        f"SELECT {columns} FROM (\n"
        f"  SELECT h.*, row_number() OVER (PARTITION BY {key} ORDER BY {PARTITION_DATE} DESC)"
        f" AS sqlgym_version\n"
        f"  FROM {history} AS h{live}\n"
        f") AS versions WHERE sqlgym_version = 1"
    )


def _files_glob(settings: LakeSettings, table: TableSpec) -> str:
    return f"{table_uri(settings, table.name)}/*/*/*/*.parquet"


def _file_columns(table: TableSpec, quote: str, naive_timestamp: str) -> list[str]:
    """The contract's columns as read from the files; ``naive_timestamp`` (a format of one
    column) reads a naive timestamp column, which holds UTC, as the instant it is."""
    columns = []
    for field in contract_schema(table):
        name = _quoted(field.name, quote)
        naive = _is_naive_timestamp(field.type)
        columns.append(f"{naive_timestamp.format(name)} AS {name}" if naive else name)
    return columns


def _empty_select(table: TableSpec, engine: str, quote: str) -> str:
    """A typed empty result for a table with no file yet."""
    columns = [
        f"CAST(NULL AS {_sql_type(field.type, engine)}) AS {_quoted(field.name, quote)}"
        for field in contract_schema(table)
    ]
    columns.append(f"CAST(NULL AS date) AS {PARTITION_DATE}")
    return f"SELECT {', '.join(columns)} WHERE false"


def _note(table: TableSpec, contents: LakeContents) -> str:
    if table.name not in contents.with_files:
        return f"-- {table.name}: no file in the lake yet; the views are empty, with its columns\n"
    if table.sync_mode is not SyncMode.SNAPSHOT and table.name not in contents.with_key_sets:
        return (
            f"-- {table.name}: no key set in the lake yet (none was recorded before its next "
            "sync), so rows deleted in the source still show\n"
        )
    return ""


def duckdb_sql(settings: LakeSettings, tables: Iterable[TableSpec], contents: LakeContents) -> str:
    statements = [
        "-- The SQLGym lake in DuckDB: <table> is the current state, <table>_history every "
        f"file.\n-- Lake: {settings.url}"
    ]
    if settings.is_s3:
        statements.append(
            "INSTALL httpfs;\nLOAD httpfs;\n"
            "CREATE OR REPLACE SECRET sqlgym_lake (TYPE s3, PROVIDER credential_chain);"
        )
    for table in tables:
        history = _quoted(f"{table.name}_history")
        if table.name in contents.with_files:
            columns = _file_columns(table, '"', "timezone('UTC', {})")
            files = _literal(_files_glob(settings, table))
            read = f"FROM read_parquet({files}, filename = true)"
            day = f"regexp_extract(filename, {_literal(DAY_PATH_PATTERN)}, 1)"
            date_column = f"CAST(strptime({day}, '%Y/%m/%d') AS date) AS {PARTITION_DATE}"
            select = f"SELECT {', '.join([*columns, date_column])}\n{read}"
        else:
            select = _empty_select(table, "duckdb", '"')
        live_keys = None
        if table.name in contents.with_key_sets:
            live_keys = f"read_parquet({_literal(key_set_uri(settings, table.name))})"
        if table.sync_mode is SyncMode.SNAPSHOT and table.name in contents.with_files:
            # The latest file by name (YYYY/MM/DD sorts by date): DuckDB then opens that file
            # alone, where a filter on partition_date would read every day's.
            current = f"SELECT {', '.join(columns)}\n{read}\n" + (
                f"WHERE filename = (SELECT max(file) FROM glob({files}))"
            )
        else:
            current = _current_state(table, history, live_keys)
        statements.append(
            _note(table, contents)
            + f"CREATE OR REPLACE VIEW {history} AS\n{select};\n"
            + f"CREATE OR REPLACE VIEW {_quoted(table.name)} AS\n{current};"
        )
    return "\n\n".join(statements) + "\n"


def spark_sql(settings: LakeSettings, tables: Iterable[TableSpec], contents: LakeContents) -> str:
    statements = [
        "-- The SQLGym lake in Spark SQL: <table> is the current state, <table>_history every "
        f"file.\n-- Lake: {settings.url}\n"
        "-- Naive timestamp columns hold UTC: read them in a UTC session.\n"
        "SET spark.sql.session.timeZone = UTC;"
    ]
    for table in tables:
        history = _quoted(f"{table.name}_history", "`")
        if table.name in contents.with_files:
            # Spark 3.4+ reads a naive column as TIMESTAMP_NTZ and 3.3 as TIMESTAMP: the cast
            # gives both the same instant, in the UTC session.
            columns = _file_columns(table, "`", "CAST({} AS timestamp)")
            day = f"regexp_extract(input_file_name(), {_literal(DAY_PATH_PATTERN)}, 1)"
            columns.append(f"to_date({day}, 'yyyy/MM/dd') AS {PARTITION_DATE}")
            files = _quoted(_files_glob(settings, table), "`")
            select = f"SELECT {', '.join(columns)}\nFROM parquet.{files}"
        else:
            select = _empty_select(table, "spark", "`")
        live_keys = None
        if table.name in contents.with_key_sets:
            live_keys = f"parquet.{_quoted(key_set_folder_uri(settings, table.name), '`')}"
        statements.append(
            _note(table, contents)
            + f"CREATE OR REPLACE TEMPORARY VIEW {history} AS\n{select};\n"
            + f"CREATE OR REPLACE TEMPORARY VIEW {_quoted(table.name, '`')} AS\n"
            + _current_state(table, history, live_keys, "`")
            + ";"
        )
    return "\n\n".join(statements) + "\n"


def athena_sql(
    settings: LakeSettings, tables: Iterable[TableSpec], contents: LakeContents, database: str
) -> str:
    """Athena DDL: per table an external table of its files, partitioned by the day of their
    path through partition projection (no crawler, no MSCK REPAIR), and the two views."""
    if not settings.is_s3:
        raise LakeConfigurationError(
            f"Athena reads S3 only: give the lake as s3://bucket/prefix, not {settings.url!r}"
        )
    db = _quoted(database)
    statements = [
        "-- The SQLGym lake in Athena: <table> is the current state, <table>_history every "
        f"file,\n-- <table>_files the files themselves (filter on day = 'YYYY/MM/DD' to read "
        f"fewer).\n-- Lake: {settings.url}\nCREATE DATABASE IF NOT EXISTS `{database}`;"
    ]
    for table in tables:
        files = f"`{database}`.`{table.name}_files`"
        location = f"{table_uri(settings, table.name)}/"
        columns = ",\n".join(
            f"  `{field.name}` {_sql_type(field.type, 'athena')}"
            for field in contract_schema(table)
        )
        properties = {
            "projection.enabled": "true",
            "projection.day.type": "date",
            "projection.day.format": "yyyy/MM/dd",
            "projection.day.range": f"{FIRST_DAY},NOW",
            "projection.day.interval": "1",
            "projection.day.interval.unit": "DAYS",
            "storage.location.template": location + "${day}/",
        }
        ddl = [
            f"CREATE EXTERNAL TABLE IF NOT EXISTS {files} (\n{columns}\n)\n"
            "PARTITIONED BY (`day` string)\nSTORED AS PARQUET\n"
            f"LOCATION {_literal(location)}\nTBLPROPERTIES (\n"
            + ",\n".join(f"  {_literal(k)} = {_literal(v)}" for k, v in properties.items())
            + "\n);"
        ]
        live_keys = None
        if table.sync_mode is not SyncMode.SNAPSHOT:
            keys_table = f"`{database}`.`{table.name}_live_keys`"
            key_columns = ",\n".join(
                f"  `{name}` {_sql_type(contract_schema(table).field(name).type, 'athena')}"
                for name in table.primary_key
            )
            ddl.append(
                f"CREATE EXTERNAL TABLE IF NOT EXISTS {keys_table} (\n{key_columns}\n)\n"
                "STORED AS PARQUET\n"
                f"LOCATION {_literal(key_set_folder_uri(settings, table.name) + '/')};"
            )
            if table.name in contents.with_key_sets:
                live_keys = f'{db}."{table.name}_live_keys"'
        history = f'{db}."{table.name}_history"'
        names = ", ".join(_quoted(name) for name in table.column_names)
        ddl.append(
            f"CREATE OR REPLACE VIEW {history} AS\n"
            f"SELECT {names}, CAST(date_parse(day, '%Y/%m/%d') AS date) AS {PARTITION_DATE}\n"
            f'FROM {db}."{table.name}_files";'
        )
        ddl.append(
            f'CREATE OR REPLACE VIEW {db}."{table.name}" AS\n'
            + _current_state(table, history, live_keys)
            + ";"
        )
        statements.append(_note(table, contents) + "\n".join(ddl))
    return "\n\n".join(statements) + "\n"
