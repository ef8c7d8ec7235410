"""The Arrow schema of result rows, derived once from `workers.record.Record`.

Every Parquet part is written with `SCHEMA` and checked against it; readers cast
to it. Deriving it from the dataclass (rather than writing it out a second time)
is what keeps the worker's records and the stored columns from drifting apart.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime

import pyarrow as pa

from workers.record import Record

_SCALARS: dict[object, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
    list[float]: pa.list_(pa.float64()),
}


def _arrow_type(annotation: object) -> tuple[pa.DataType, bool]:
    """Map one field annotation to (arrow type, nullable)."""
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union in Record: {annotation!r}")
        annotation, nullable = args[0], True
    try:
        return _SCALARS[annotation], nullable
    except KeyError:
        raise TypeError(
            f"Record field type {annotation!r} has no Arrow mapping; allowed: {sorted(map(str, _SCALARS))}"
        ) from None


def build_schema() -> pa.Schema:
    hints = typing.get_type_hints(Record)
    fields = []
    for f in dataclasses.fields(Record):
        arrow_type, nullable = _arrow_type(hints[f.name])
        fields.append(pa.field(f.name, arrow_type, nullable=nullable))
    return pa.schema(fields)


SCHEMA: pa.Schema = build_schema()
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)


def records_to_table(records: typing.Iterable[Record]) -> pa.Table:
    """Records -> a table with exactly `SCHEMA` (raises if a value has the wrong type)."""
    rows = [r.to_dict() for r in records]
    return pa.Table.from_pylist(rows, schema=SCHEMA)
