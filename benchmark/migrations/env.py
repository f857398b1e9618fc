"""Alembic's entry point, run by `benchmark.schema_version` on a connection it has opened, locked
and begun a transaction on: every migration of one upgrade is then one transaction, all or nothing
(SQLite and PostgreSQL both run DDL inside a transaction). There is no offline (--sql) mode and no
alembic.ini: SoupBench's own commands are the only way in."""

from __future__ import annotations

from alembic import context

from benchmark.schema_version import VERSION_TABLE
from benchmark.storage import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("SoupBench's migrations run through `soupbench db upgrade`, not the alembic command")
context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                  render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
