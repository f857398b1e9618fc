"""SoupBench's schema migrations (Alembic scripts), shipped inside the package so that an installed
wheel can upgrade a database; `benchmark.schema_version` runs them. One file per revision in
`versions/`; see that module's docstring for how to add one."""
