"""What every table and every multi-row statement share: ``Base`` and ``chunks``.

The ledger's tables (``ledger/tables.py``) and the rest of the control plane's
(``server/db/models.py``) are declared on this one ``Base``, so they make one
``MetaData``: the one the Alembic migrations (``server/db/migrations``) describe
and ``create_all`` builds. It lives beneath both, so that the ledger, which the
server stands on, never imports the server.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy.orm import DeclarativeBase

T = TypeVar("T")

# Rows per multi-row statement (and ids per IN list): under SQLite's 32,766 bound
# parameters with three a row.
CHUNK_ROWS = 5000


class Base(DeclarativeBase):
    pass


def chunks(rows: Sequence[T], size: int = CHUNK_ROWS) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
