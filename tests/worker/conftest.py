"""The database and seeded-data fixtures of tests/core serve the worker tests too."""

from tests.core.conftest import (  # noqa: F401
    adapters_dir,
    db_url,
    postgres_schema_url,
    seeded,
    session,
    session_factory,
    sqlite_template,
    v1_id,
)
