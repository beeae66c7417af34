"""``python -m app.cli``: the same as the ``e2u`` command."""

from app.cli import main

main()
