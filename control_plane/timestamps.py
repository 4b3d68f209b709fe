"""The one timestamp format of the API: ISO 8601 in UTC with an explicit offset.

SQLite hands back naive datetimes (what it stores is UTC: `CURRENT_TIMESTAMP` or a UTC value the code
set), Postgres aware ones in the session's time zone, and values set in Python are aware UTC until
they are read back. Every API timestamp goes through `UtcDateTime`, so all of them come out as
`2026-11-21T10:04:05.123456+00:00`: always UTC, always the offset, always microseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer, WithJsonSchema

EXAMPLE = "2026-11-21T10:04:05.123456+00:00"


def as_utc(value: datetime) -> datetime:
    """The same instant, aware and in UTC (a naive value is taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """ISO 8601 with microseconds and the explicit `+00:00` offset."""
    return as_utc(value).isoformat(timespec="microseconds")


UtcDateTime = Annotated[
    datetime,
    AfterValidator(as_utc),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
    # In requests too (a key's `expires_at`, the audit's `since`): ISO 8601, an offset or UTC.
    WithJsonSchema({"type": "string", "format": "date-time", "examples": [EXAMPLE]}),
]
