"""Money on the wire: a JSON number (what other producers send, e.g. ``99.95``) or a decimal
string, always read into ``Decimal`` without passing through a float, written as a string."""

from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer


def _to_decimal(value):
    if isinstance(value, float):
        return Decimal(repr(value))  # repr round-trips the JSON literal: 99.95 -> Decimal("99.95")
    return value


Money = Annotated[
    Decimal,
    BeforeValidator(_to_decimal),
    Field(ge=0, max_digits=14, decimal_places=2),
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
]
