# The two commands: `make run` (set up if needed, then serve) and `make test` (set up, lint, test).
.PHONY: setup run test lint pytest bench screenshots

setup:
	@./scripts/setup.sh

run: setup
	.venv/bin/easel serve

lint: setup
	.venv/bin/ruff check src tests training benchmarks clients
	.venv/bin/mypy

# The suite in PYTEST_WORKERS processes (pytest-xdist): most of its time is spent waiting on servers and
# workers it starts, so two processes on two cores take well under the time of one. 0 = one process.
PYTEST_WORKERS ?= 2
pytest: setup
	.venv/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup

test: lint pytest

bench: setup
	.venv/bin/python benchmarks/serving.py
	.venv/bin/python benchmarks/control_plane.py

# The console's screenshots in docs/console/, taken by its browser tests (tests/console).
screenshots: setup
	EASEL_CONSOLE_SCREENSHOTS=docs/console .venv/bin/pytest -q -p no:randomly tests/console
