# The two commands from the README:  `make demo` (the main job)  and  `make test`.
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: install test test-unit lint demo stack-up stack-down

install:
	$(PYTHON) -m pip install --disable-pip-version-check -q -e '.[dev,parquet]'

lint:
	$(PYTHON) -m ruff check online_als worker producers tests benchmarks
	$(PYTHON) -m mypy

# Installs dependencies, brings the local stack up, runs the whole suite, and brings the
# stack down again even when a test fails.
test: install
	bash deploy/local/test.sh $(PYTEST_ARGS)

test-unit: install
	$(PYTHON) -m pytest -m "not stack" $(PYTEST_ARGS)

demo: install
	online-als demo

stack-up:
	online-als stack up

stack-down:
	online-als stack down
