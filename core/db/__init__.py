"""Persistence: SQLAlchemy models (``models``), engine and sessions (``engine``), migrations (``migrate``)
and repositories (``repositories``), where all SQL lives."""
