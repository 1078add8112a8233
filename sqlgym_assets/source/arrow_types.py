"""PostgreSQL column types -> Arrow types, and driver batches conformed to them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc


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


def contract_type(pg_type: str) -> pa.DataType:
    """The Arrow type a catalog type maps to: the same mapping as a live column of that type.

    Names the scalar table does not know (enums, json, uuid) map to string, as they do live.
    """
    element = pg_type.removesuffix("[]")
    column = SourceColumn("", pg_type, False, "b", element_kind="b", element_type=element)
    return plan_column(column).arrow_type


_INTEGER_WIDTHS = {pa.int16(): 16, pa.int32(): 32, pa.int64(): 64}


def converts_without_loss(source: pa.DataType, contract: pa.DataType) -> bool:
    """Whether every value of ``source`` has one exact value of ``contract``.

    Wider integers and floats, a decimal with room for every digit, and a timestamp with or
    without its UTC zone: the app stores naive timestamps in UTC, so the instant is the same.
    """
    if source.equals(contract):
        return True
    if source in _INTEGER_WIDTHS and contract in _INTEGER_WIDTHS:
        return _INTEGER_WIDTHS[source] <= _INTEGER_WIDTHS[contract]
    if pa.types.is_floating(source) and pa.types.is_floating(contract):
        return source.bit_width <= contract.bit_width
    if pa.types.is_decimal(source) and pa.types.is_decimal(contract):
        return (
            source.scale <= contract.scale
            and source.precision - source.scale <= contract.precision - contract.scale
        )
    if pa.types.is_timestamp(source) and pa.types.is_timestamp(contract):
        return source.unit == contract.unit and {source.tz, contract.tz} <= {None, "UTC"}
    if pa.types.is_list(source) and pa.types.is_list(contract):
        return converts_without_loss(source.value_type, contract.value_type)
    return False


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Turns a driver batch into the contract's schema: extension types unwrapped, decimals
    parsed, lossless differences cast, and columns the source lacks filled with NULLs."""
    arrays = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        array = batch.column(index)
        if isinstance(array.type, pa.BaseExtensionType):
            array = array.storage
        if not array.type.equals(field.type):
            array = pc.cast(array, field.type)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
