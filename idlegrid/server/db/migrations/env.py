"""Alembic environment: runs against the engine handed in by ``engine.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from idlegrid.server.db.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # the alembic command line: take the URL from alembic's config
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
