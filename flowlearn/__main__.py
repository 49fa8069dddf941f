"""`python -m flowlearn` runs the command line."""

from flowlearn.cli import run

run()
