"""How a partition is read: its window, its SQL, and the Arrow schema its rows take.

The SQL is composed with SQLAlchemy (identifiers quoted by the library) and carries no values: the
window bounds are bound as parameters into transaction-local settings that the query reads with
``current_setting``. That keeps every value a bound parameter while the extract itself still runs
as a parameterless query, which the ADBC driver turns into ``COPY ... (FORMAT binary)``.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sqlgym_assets.catalog import SyncMode, TableSpec

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
class SourceColumn:
    """One column as the source database describes it."""

    name: str
    pg_type: str  # format_type(), e.g. "character varying(50)", "numeric(10,2)", "text[]"
    not_null: bool
    type_kind: str  # pg_type.typtype: "b" base, "e" enum, "d" domain, ...
    element_kind: str = ""  # for arrays: the element's typtype
    element_type: str = ""  # for arrays: the element's format_type

    @classmethod
    def from_row(cls, row: Sequence[object]) -> SourceColumn:
        name, pg_type, not_null, type_kind, element_kind, element_type = row
        return cls(
            name=str(name),
            pg_type=str(pg_type),
            not_null=bool(not_null),
            type_kind=str(type_kind),
            element_kind=str(element_kind),
            element_type=str(element_type),
        )


_SCALAR_TYPES: Mapping[str, pa.DataType] = {
    "text": pa.string(),
    "character varying": pa.string(),
    "character": pa.string(),
    "name": pa.string(),
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "date": pa.date32(),
    "timestamp without time zone": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "bytea": pa.binary(),
}
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_TYPE_MODIFIER = re.compile(r"\(\d+(,\d+)?\)")


@dataclass(frozen=True)
class ColumnPlan:
    """How one column is selected and which Arrow type it lands as."""

    name: str
    arrow_type: pa.DataType
    # Cast to text in SQL: JSON, enums, uuid, types Arrow has no match for, and numeric(p,s),
    # whose text PostgreSQL prints for less than the driver spends decoding its binary form
    # (bench/extract_bench.py); the exact digits are then parsed into the decimal type.
    select_as_text: bool


def plan_column(column: SourceColumn) -> ColumnPlan:
    if column.pg_type.endswith("[]"):
        element = SourceColumn(
            name=column.name,
            pg_type=column.element_type,
            not_null=False,
            type_kind=column.element_kind,
        )
        element_plan = plan_column(element)
        if pa.types.is_decimal(element_plan.arrow_type):
            # Only scalar numerics are read as text; numeric arrays keep their planned type.
            return ColumnPlan(column.name, pa.list_(element_plan.arrow_type), select_as_text=False)
        if element_plan.select_as_text:
            return ColumnPlan(column.name, pa.list_(pa.string()), select_as_text=True)
        return ColumnPlan(column.name, pa.list_(element_plan.arrow_type), select_as_text=False)
    numeric = _NUMERIC.fullmatch(column.pg_type)
    if numeric:
        precision, scale = int(numeric.group(1)), int(numeric.group(2))
        decimal = pa.decimal128 if precision <= 38 else pa.decimal256
        return ColumnPlan(column.name, decimal(precision, scale), select_as_text=True)
    if column.pg_type == "numeric":
        # No declared precision: any scale may occur, so only text keeps every value exact.
        return ColumnPlan(column.name, pa.string(), select_as_text=True)
    base = _TYPE_MODIFIER.sub("", column.pg_type)
    if column.type_kind == "b" and base in _SCALAR_TYPES:
        return ColumnPlan(column.name, _SCALAR_TYPES[base], select_as_text=False)
    # Everything else (json/jsonb, uuid, enums, types Arrow has no match for) is read as its text.
    return ColumnPlan(column.name, pa.string(), select_as_text=True)


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


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Turns a driver batch into the planned schema: extension types unwrapped, decimals parsed."""
    arrays = []
    for array, field in zip(batch.columns, schema, strict=True):
        if isinstance(array.type, pa.BaseExtensionType):
            array = array.storage
        if not array.type.equals(field.type):
            array = pc.cast(array, field.type)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


_END = object()


def prefetch_batches(
    reader: pa.RecordBatchReader, schema: pa.Schema, depth: int = 2
) -> Iterator[pa.RecordBatch]:
    """Yields conformed batches while a thread already fetches the next ones.

    Fetching (the driver decoding COPY data) and the consumer's Parquet encoding both release the
    GIL, so overlapping them uses both cores; ``depth`` bounds the batches held in memory.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def fetch() -> None:
        try:
            for batch in reader:
                item = conform_batch(batch, schema)
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as error:  # handed to the consumer, which re-raises it
            ready.put(error)

    fetcher = threading.Thread(target=fetch, name="sqlgym-fetch", daemon=True)
    fetcher.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while fetcher.is_alive():
            try:
                ready.get(timeout=0.1)
            except queue.Empty:
                pass
        fetcher.join()
