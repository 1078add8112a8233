"""The partition plan: the UTC window a partition covers, and the SQL that reads it.

The SQL is composed with SQLAlchemy (identifiers quoted by the library) and carries no values: the
window bounds are bound as parameters into transaction-local settings that the query reads with
``current_setting``. That keeps every value a bound parameter while the extract itself still runs
as a parameterless query, which the ADBC driver turns into ``COPY ... (FORMAT binary)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sqlgym_assets.catalog import SyncMode, TableSpec
from sqlgym_assets.source.arrow_types import ColumnPlan, SourceColumn, plan_column

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
    """The source table is missing, or lacks a column the catalog lists."""


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
class ExtractPlan:
    """The SQL and target schema for one table's partition."""

    table: TableSpec
    columns: tuple[ColumnPlan, ...]
    select_sql: str
    count_sql: str
    null_cursor_count_sql: str | None  # only when the cursor column is nullable in the source

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(plan.name, plan.arrow_type) for plan in self.columns])


def plan_extract(
    table: TableSpec, source_columns: Sequence[SourceColumn], source_schema: str
) -> ExtractPlan:
    by_name = {column.name: column for column in source_columns}
    if not by_name:
        raise SourceSchemaError(
            f"source table {source_schema}.{table.name} does not exist or has no columns "
            f"(asset sqlgym/{table.name}); check the database and the resource's source_schema"
        )
    missing = [name for name in table.column_names if name not in by_name]
    if missing:
        raise SourceSchemaError(
            f"source table {source_schema}.{table.name} has no column(s) {missing} that the "
            "catalog lists; update sqlgym_assets/catalog.py to the source's columns"
        )
    plans = tuple(plan_column(by_name[name]) for name in table.column_names)
    source = sa.table(table.name, *(sa.column(name) for name in table.column_names))
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
    if table.cursor_column is not None:
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
        columns=plans,
        select_sql=_compile(select),
        count_sql=_compile(count),
        null_cursor_count_sql=null_cursor_count,
    )


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
