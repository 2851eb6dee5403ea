"""``python -m sparcom.cli``: the command line (the same as ``python -m sparcom``)."""

from sparcom.cli import run

run()
