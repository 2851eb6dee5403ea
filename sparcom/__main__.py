"""``python -m sparcom`` (and ``torchrun -m sparcom``): the command line."""

from sparcom.cli import run

run()
