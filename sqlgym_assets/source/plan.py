"""The partition plan: a partition's UTC window, and the SQL that reads it into the contract.

Each column the catalog lists is read into the catalog's type: what converts without loss is
converted, anything else fails once (``ContractError``).

The SQL is composed with SQLAlchemy (identifiers quoted by the library) and carries no values: the
window bounds are bound as parameters into transaction-local settings that the query reads with
``current_setting``. That keeps every value a bound parameter while the extract itself still runs
as a parameterless query, which the ADBC driver turns into ``COPY ... (FORMAT binary)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sqlgym_assets.catalog import SyncMode, TableSpec
from sqlgym_assets.source.arrow_types import (
    ColumnPlan,
    SourceColumn,
    contract_type,
    converts_without_loss,
    plan_column,
)

WINDOW_START_SETTING = "sqlgym.window_start"
WINDOW_END_SETTING = "sqlgym.window_end"

# Reads the source's own description of each column, in the extract's transaction.
SOURCE_COLUMNS_SQL = """
SELECT a.attname::text,
       format_type(a.atttypid, a.atttypmod),
       a.attnotnull,
       t.typtype::text,
       coalesce(element.typtype::text, ''),
       coalesce(format_type(element.oid, a.atttypmod), '')  -- numeric(6,2)[] keeps (6,2)
FROM pg_attribute AS a
JOIN pg_type AS t ON t.oid = a.atttypid
LEFT JOIN pg_type AS element ON element.oid = t.typelem AND t.typcategory = 'A'
WHERE a.attrelid = to_regclass(format('%I.%I', $1::text, $2::text))
  AND a.attnum > 0
  AND NOT a.attisdropped
ORDER BY a.attnum
"""

SET_WINDOW_SQL = "SELECT set_config($1, $2, true), set_config($3, $4, true)"


class SnapshotNotAvailableError(ValueError):
    """A snapshot table was asked for a day other than today."""


class SourceSchemaError(ValueError):
    """The source cannot be read as the catalog says."""


class SourceTableAbsentError(SourceSchemaError):
    """The source has no such table (a legacy table may be absent; others may not)."""


class ContractError(SourceSchemaError):
    """A column cannot be read into the catalog's type without loss, or a required one is gone."""


@dataclass(frozen=True)
class Window:
    """The UTC day [start, end) a partition covers."""

    start: datetime
    end: datetime

    @property
    def day(self) -> date:
        return self.start.date()


def partition_window(partition_key: str) -> Window:
    day = date.fromisoformat(partition_key)
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return Window(start=start, end=start + timedelta(days=1))


def check_partition_readable(table: TableSpec, window: Window, now: datetime) -> None:
    """A snapshot describes the table as it is now, so only today's partition can hold one."""
    if table.sync_mode is not SyncMode.SNAPSHOT:
        return
    today = now.astimezone(UTC).date()
    if window.day != today:
        raise SnapshotNotAvailableError(
            f"sqlgym/{table.name} is a snapshot table: a partition holds the whole table as read "
            f"on that day, and the state of {window.day.isoformat()} cannot be read back now. "
            f"Materialize today's partition ({today.isoformat()}) instead; nothing was written."
        )


@dataclass(frozen=True)
class ContractDrift:
    """How the live source differs from the catalog (the contract) for one table."""

    added: tuple[str, ...] = ()  # in the source only: not read
    removed: tuple[str, ...] = ()  # in the catalog only: read as NULL where the contract allows
    changed: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # name: (contract, source)
    converted: tuple[str, ...] = ()  # changed columns read into the contract's type without loss

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def as_metadata(self) -> dict[str, object]:
        return {
            "added_columns": list(self.added),
            "removed_columns": list(self.removed),
            "changed_columns": {
                name: {"contract": contract, "source": source}
                for name, (contract, source) in self.changed.items()
            },
            "converted_columns": list(self.converted),
        }


def compare_with_contract(
    table: TableSpec, source_columns: Sequence[SourceColumn]
) -> ContractDrift:
    """The live columns against the catalog's; credentials count as known, never as added."""
    live = {column.name: column for column in source_columns}
    lake = {column.name: column for column in table.lake_columns}
    changed, converted = {}, []
    for name, column in lake.items():
        if name in live and live[name].pg_type != column.pg_type:
            changed[name] = (column.pg_type, live[name].pg_type)
            source_type = plan_column(live[name]).arrow_type
            if converts_without_loss(source_type, contract_type(column.pg_type)):
                converted.append(name)
    return ContractDrift(
        added=tuple(name for name in live if name not in table.all_column_names),
        removed=tuple(name for name in lake if name not in live),
        changed=changed,
        converted=tuple(converted),
    )


@dataclass(frozen=True)
class ExtractPlan:
    """The SQL and the contract's schema for one table's partition."""

    table: TableSpec
    arrow_schema: pa.Schema  # the catalog's: the same for every file of the table
    drift: ContractDrift
    select_sql: str
    count_sql: str
    null_cursor_count_sql: str | None  # only when the cursor column is nullable in the source
    key_set_sql: str | None  # the whole table's live keys, for windowed tables only


def plan_extract(
    table: TableSpec, source_columns: Sequence[SourceColumn], source_schema: str
) -> ExtractPlan:
    """The partition's SQL, reading each column the catalog lists into its contract type.

    Raises ``SourceTableAbsentError`` when the table is missing, and ``ContractError`` when a
    column cannot be read into the contract: a required column missing, or a type that does not
    convert without loss.
    """
    where = f"source table {source_schema}.{table.name} (asset sqlgym/{table.name})"
    by_name = {column.name: column for column in source_columns}
    if not by_name:
        raise SourceTableAbsentError(
            f"{where} does not exist or has no columns; check the database and the resource's "
            "source_schema"
        )
    drift = compare_with_contract(table, source_columns)
    needed = {*table.primary_key, table.cursor_column}
    missing = [
        column.name
        for column in table.lake_columns
        if column.name in drift.removed and (column.required or column.name in needed)
    ]
    if missing:
        raise ContractError(
            f"{where} has no column(s) {missing}, which the catalog requires: restore them in "
            "the source, or change the contract in sqlgym_assets/catalog.py"
        )
    for name, (contract, source) in drift.changed.items():
        if name not in drift.converted:
            raise ContractError(
                f"{where}: column {name!r} is {source} in the source, and the contract's "
                f"{contract} ({contract_type(contract)}) cannot hold every such value: change "
                "the column back in the source, or the contract in sqlgym_assets/catalog.py "
                "(a new type for every day means a new table); nothing was written"
            )
    present = [name for name in table.column_names if name in by_name]
    plans = [plan_column(by_name[name]) for name in present]
    source = sa.table(table.name, *(sa.column(name) for name in present))
    source.schema = source_schema
    selected = [
        sa.cast(source.c[plan.name], _text_type(plan)).label(plan.name)
        if plan.select_as_text
        else source.c[plan.name]
        for plan in plans
    ]
    select = sa.select(*selected).select_from(source)
    count = sa.select(sa.func.count()).select_from(source)
    null_cursor_count = None
    key_set = None
    if table.cursor_column is not None:
        # The key only, in key order: PostgreSQL answers it from the primary key's index.
        keys = [selected[present.index(name)] for name in table.primary_key]
        key_set = _compile(sa.select(*keys).select_from(source).order_by(*keys))
        cursor_source = by_name[table.cursor_column]
        cursor = source.c[table.cursor_column]
        naive = cursor_source.pg_type.startswith("timestamp without time zone")
        in_window = sa.and_(
            cursor >= _window_bound(WINDOW_START_SETTING, naive),
            cursor < _window_bound(WINDOW_END_SETTING, naive),
        )
        select = select.where(in_window)
        count = count.where(in_window)
        if not cursor_source.not_null:
            null_cursor_count = _compile(
                sa.select(sa.func.count()).select_from(source).where(cursor.is_(None))
            )
    return ExtractPlan(
        table=table,
        arrow_schema=contract_schema(table),
        drift=drift,
        select_sql=_compile(select),
        count_sql=_compile(count),
        null_cursor_count_sql=null_cursor_count,
        key_set_sql=key_set,
    )


def contract_schema(table: TableSpec) -> pa.Schema:
    """The Arrow schema of every file of ``table``, from the catalog alone."""
    return pa.schema(
        [pa.field(column.name, contract_type(column.pg_type)) for column in table.lake_columns]
    )


def key_schema(table: TableSpec) -> pa.Schema:
    """The Arrow schema of a table's key sets: its primary key's columns, as in its files."""
    contract = contract_schema(table)
    return pa.schema([contract.field(name) for name in table.primary_key])


def _text_type(plan: ColumnPlan) -> sa.types.TypeEngine:
    # An array is cast element by element (uuid[] -> text[]); text of the whole array would be
    # one string such as '{a,b}'.
    return postgresql.ARRAY(sa.Text) if pa.types.is_list(plan.arrow_type) else sa.Text()


def _window_bound(setting: str, naive: bool) -> sa.ColumnElement:
    # The settings hold ISO instants with an explicit +00:00, so the session's TimeZone never
    # shifts them; naive timestamp columns hold UTC by the app's convention.
    bound = f"current_setting('{setting}')::timestamptz"
    if naive:
        bound = f"({bound} AT TIME ZONE 'UTC')"
    return sa.literal_column(bound)


def _compile(statement: sa.Select) -> str:
    compiled = statement.compile(dialect=postgresql.dialect())
    if compiled.params:
        raise AssertionError(f"extract SQL must carry no values, found {compiled.params}")
    return str(compiled)


def window_parameters(window: Window) -> tuple[str, str, str, str]:
    return (
        WINDOW_START_SETTING,
        window.start.isoformat(),
        WINDOW_END_SETTING,
        window.end.isoformat(),
    )
