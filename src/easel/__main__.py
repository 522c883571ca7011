"""`python -m easel` runs the CLI."""

from easel.cli import main

main()
