# A package only so that setuptools ships the revisions; Alembic skips __init__ files.
