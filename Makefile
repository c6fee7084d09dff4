# Two commands matter to a new user: `make demo` and `make test`.
# Both create ./.venv on first use and install what they need into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(VENV)/bin/uv pip install --python $(PY) --quiet --compile-bytecode -e . --group dev
	touch $(STAMP)

demo: venv
	$(PY) scripts/demo.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check airflow_provider_cdr tests dags_examples benchmarks
	$(VENV)/bin/mypy airflow_provider_cdr
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest -p no:cacheprovider -q -ra $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .demo build *.egg-info
