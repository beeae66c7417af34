"""Run the Alembic migrations programmatically (tests, bootstrap, the embedded launcher).

The scripts are the top-level package ``migrations``, installed with ``core``: found by import, they work
from a source checkout and from an installed wheel alike.  ``alembic.ini`` serves the ``alembic`` command
in a checkout only; it is not needed here.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config


def script_location() -> Path:
    """The folder of the Alembic environment and revisions, wherever the ``migrations`` package lives."""
    return Path(str(files("migrations")))


def alembic_config(url: str, kek_file: Path | None = None) -> Config:
    """An Alembic configuration for the database at ``url``, independent of the working directory.
    ``kek_file``: the key-encryption key that migration 0004 seals existing ratings under."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["database_url"] = url  # not via set_main_option: URLs may hold '%'
    if kek_file is not None:
        config.attributes["data_kek_file"] = str(kek_file)
    return config


def upgrade(url: str, revision: str = "head", kek_file: Path | None = None) -> None:
    """Bring the database at ``url`` to ``revision`` (idempotent); ``kek_file`` as in ``alembic_config``."""
    command.upgrade(alembic_config(url, kek_file), revision)
