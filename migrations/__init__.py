"""The Alembic migrations, shipped as a package beside ``core`` so that an installed wheel can migrate
(``core.db.migrate.upgrade``).  Alembic loads the scripts by path; nothing imports this package's modules."""
