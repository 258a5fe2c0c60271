"""Path and query parameters that reach SQL, bounded so a database can hold them.

A route's integer parameter becomes a bound value of a query, and neither
PostgreSQL's BIGINT nor SQLite's INTEGER holds more than 64 signed bits: an
unbounded ``int`` turns ``?offset=2**63`` into a driver error, a 500. Every such
parameter is declared with one of the types below and answers ``422
invalid_request`` out of range. A block number is never negative; a bounded
number that names no block is ``404``.

Text is the other half: PostgreSQL's text cannot hold NUL, so ``refuse_nul``, a
dependency of every router, refuses a NUL in the decoded path or query with
``422 invalid_request`` before any route runs (bodies are checked by the wire
models, ``protocol.Wire``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request

from idlegrid.errors import InvalidRequest
from idlegrid.protocol import INT64_MAX

BlockNumber = Annotated[int, Path(ge=0, le=INT64_MAX, description="a block's number")]
Offset = Annotated[int, Query(ge=0, le=INT64_MAX, description="rows to skip")]


async def refuse_nul(request: Request) -> None:
    """Refuse a request whose decoded path or query holds NUL (``\\x00``). Async, so
    it costs no threadpool round trip."""
    path = request.scope.get("path", "")
    if "\x00" in path:
        raise InvalidRequest("the path may not contain NUL (%00)", where="path")
    if request.scope.get("query_string") and any(
        "\x00" in k or "\x00" in v for k, v in request.query_params.multi_items()
    ):
        raise InvalidRequest("the query may not contain NUL (%00)", where="query")
