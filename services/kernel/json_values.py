"""google.protobuf.Value fields as the JSON the caller sent: how amounts arrive through Envoy, which
accepts both the seed's JSON numbers and decimal strings into a Value (a string field refuses numbers)."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2


def json_scalar(value: struct_pb2.Value, present: bool) -> object:
    """The number (float) or string the caller sent; None when absent or null. A bool, list or
    object comes back as is or as an opaque object, for the money parser to refuse."""
    if not present:
        return None
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind in (None, "null_value"):
        return None
    return object()  # a list or an object: not an amount


def whole_numbers(value: Any) -> Any:
    """A Struct's JSON with whole doubles as ints: a Struct carries every number as a double, so the `3`
    a caller sent (a day count, a column index, minor units) arrives as 3.0, which a count rightly refuses."""
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
