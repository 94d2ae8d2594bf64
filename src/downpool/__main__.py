"""``python -m downpool``: the same as the ``downpool`` command."""

from .console import main

main()
