# The two commands: `make run` (set up if needed, then serve) and `make test` (set up, lint, test).
.PHONY: setup run test lint pytest bench

setup:
	@./scripts/setup.sh

run: setup
	.venv/bin/easel serve

lint: setup
	.venv/bin/ruff check src tests training benchmarks
	.venv/bin/mypy

pytest: setup
	.venv/bin/pytest

test: lint pytest

bench: setup
	.venv/bin/python benchmarks/run.py
