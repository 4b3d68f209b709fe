"""The one timestamp format of the API: ISO 8601 in UTC with an explicit offset.

SQLite hands back naive datetimes (what it stores is UTC: `CURRENT_TIMESTAMP` or a UTC value the code
set), Postgres aware ones in the session's time zone, and values set in Python are aware UTC until
they are read back. Every API timestamp goes through `UtcDateTime`, so all of them come out as
`2026-11-21T10:04:05.123456+00:00`: always UTC, always the offset, always microseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

EXAMPLE = "2026-11-21T10:04:05.123456+00:00"


def as_utc(value: datetime) -> datetime:
    """The same instant, aware and in UTC (a naive value is taken to be UTC already); ValueError when that
    instant is outside the years 1-9999 (e.g. 9999-12-31T23:00-05:00)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is out of range once in UTC") from None


def _with_offset(value: object) -> object:
    """A request's time: an ISO 8601 string with its offset (`Z` or `+hh:mm`); not a number, which could
    mean seconds or milliseconds, nor a time without an offset."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected an ISO 8601 time like {EXAMPLE}") from None
    else:
        raise ValueError(f"expected an ISO 8601 time like {EXAMPLE} (a string)")
    if moment.tzinfo is None:
        raise ValueError(f"{value} has no offset: add Z for UTC, or +hh:mm")
    return moment


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

# A time a client sends (a key's `expires_at`): a string with its offset only, then as UtcDateTime (the
# validator given last runs first).
AwareDateTime = Annotated[UtcDateTime, BeforeValidator(_with_offset)]
