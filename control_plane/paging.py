"""Keyset pagination for the `/v1` listings: `?limit=&after=` in, a `Link: <?...>; rel="next"` header out.

A listing answers at most `limit` items (default 100, at most 1000), in its own fixed order. When more
follow, the answer carries `Link: <?after=K&limit=N>; rel="next"` (RFC 8288; the query alone, relative to the
URL asked for), where K is the key of the last item given: a name, a version number or a row id. Keys rather
than offsets, so a page never repeats or skips an item because another was created or deleted meanwhile, and
each page is one indexed range read however deep it lies. The SDK and the CLI follow the links; a listing
without them is only its first page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import Query, Request, Response
from sqlalchemy import Select

from control_plane.names import MAX_NAME_LENGTH, NAME_RE

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_ROW_ID = 2**63 - 1  # a BIGINT column

K = TypeVar("K", str, int)
T = TypeVar("T")
U = TypeVar("U")
R = TypeVar("R")

_LIMIT = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="the most items in one answer")


@dataclass(frozen=True)
class Page(Generic[K]):
    """Where a page starts (after the item whose key is `after`; None: the first) and how long it is."""

    limit: int = DEFAULT_LIMIT
    after: K | None = None

    @property
    def fetch(self) -> int:
        """Rows to read: one past the page, which says whether another page follows."""
        return self.limit + 1


def by_name(
    limit: int = _LIMIT,
    after: str | None = Query(
        None,
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        pattern=NAME_RE.pattern,
        description="the name the previous page ended with (its Link)",
    ),
) -> Page[str]:
    """A page of a listing ordered by name (the cursor is a name, so no NUL or other byte reaches SQL)."""
    return Page(limit=limit, after=after)


def by_number(most: int, what: str) -> Callable[..., Page[int]]:
    """The dependency of a listing ordered by a number of at most `most` (its column's range): a row id
    or a version number, `what` the API calls it."""

    def page(
        limit: int = _LIMIT,
        after: int | None = Query(
            None, ge=0, le=most, description=f"the {what} the previous page ended with (its Link)"
        ),
    ) -> Page[int]:
        """A page of a listing ordered by that number."""
        return Page(limit=limit, after=after)

    return page


by_id = by_number(MAX_ROW_ID, "id")  # a BIGINT


@dataclass(frozen=True)
class Listing(Generic[T]):
    """One page of a listing, and the key to continue after it (None: this was the last page)."""

    items: list[T]
    after: str | int | None = None

    def map(self, describe: Callable[[T], U]) -> Listing[U]:
        """The same page with each item described by `describe`."""
        return Listing([describe(item) for item in self.items], self.after)


def keyset(stmt: Select[R], page: Page[K] | None, column: Any, *, newest_first: bool = False) -> Select[R]:
    """`stmt`, ordered by `column`, limited to the page's rows and one more (no `page`: every row)."""
    stmt = stmt.order_by(column.desc() if newest_first else column)
    if page is None:
        return stmt
    if page.after is not None:
        stmt = stmt.where(column < page.after if newest_first else column > page.after)
    return stmt.limit(page.fetch)


def cut(rows: Sequence[T], page: Page[K] | None, key: Callable[[T], K]) -> Listing[T]:
    """The page's rows out of the `page.fetch` read, and the last one's key when another page follows
    (no `page`: every row, and None)."""
    if page is None or len(rows) <= page.limit:
        return Listing(list(rows))
    given = list(rows[: page.limit])
    return Listing(given, key(given[-1]))


def next_query(request: Request, listing: Listing[T], page: Page[K]) -> str | None:
    """`?after=K&limit=N` (the request's other parameters kept) for the page after this one; None for the
    last. Only the query: resolved against the URL the client asked for (RFC 3986), a link to it is right
    behind a proxy that strips or adds a path prefix, which the app cannot see."""
    if listing.after is None:
        return None
    return "?" + str(request.url.include_query_params(after=listing.after, limit=page.limit).query)


def answer(request: Request, response: Response, listing: Listing[T], page: Page[K]) -> list[T]:
    """The page's items; a `Link` header to the page after them when there is one."""
    following = next_query(request, listing, page)
    if following is not None:
        response.headers["Link"] = f'<{following}>; rel="next"'
    return listing.items
