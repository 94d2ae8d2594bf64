"""``python -m downpool``: the same as the ``downpool`` command."""

from .cli import main

main()
