# Two commands matter to a new user: `make demo` and `make test`.
# Both create ./.venv on first use and install what they need into it; `make test` also runs the
# Airflow-facing tests on the oldest Airflow the pyproject allows, in ./.venv-oldest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The oldest Airflow the pyproject allows, in a venv of its own (.ci/oldest-airflow.txt says which,
# and pins what its newest dependencies break): what differs between Airflow releases is tested
# there too (provider discovery, the connection form, hooks, operator, sensor, trigger, example DAGs).
OLDEST := .venv-oldest
OLDEST_STAMP := $(OLDEST)/.installed
OLDEST_TESTS := tests/test_provider_info.py tests/test_connection_form.py tests/hooks tests/operators \
	tests/sensors tests/triggers tests/test_example_dags.py tests/test_example_dags_run.py
# Nothing in the Delta table tests (deltalake does the table's work) or the shared rate limit's
# (Redis does) depends on Airflow's release: they run once, on the newest, which keeps CI's time
# for the suites that do differ.
OLDEST_SKIP := --ignore=tests/operators/test_delta_table.py --ignore=tests/hooks/test_shared_rate_limit.py \
	--deselect=tests/test_example_dags_run.py::test_daily_and_range_dags_land_into_one_delta_table

# Azurite, the Azure Storage emulator the Azure tests start: from npm, pinned by .ci/azurite's lock file.
AZURITE := .ci/azurite/node_modules/.bin/azurite-blob

.PHONY: venv venv-oldest demo test test-oldest lint bench clean azurite

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

azurite: $(AZURITE)

$(AZURITE): .ci/azurite/package.json .ci/azurite/package-lock.json
	npm ci --prefix .ci/azurite --no-audit --no-fund --loglevel=error
	touch $(AZURITE)

test: lint $(AZURITE)
	$(VENV)/bin/pytest -p no:cacheprovider -q -ra --durations=30 $(PYTEST_ARGS)
	$(MAKE) test-oldest

venv-oldest: $(OLDEST_STAMP)

$(OLDEST_STAMP): pyproject.toml .ci/oldest-airflow.txt $(STAMP)
	test -x $(OLDEST)/bin/python || $(VENV)/bin/uv venv --quiet --python $(PYTHON) $(OLDEST)
	$(VENV)/bin/uv pip install --python $(OLDEST)/bin/python --quiet --compile-bytecode \
		-r .ci/oldest-airflow.txt -e . --group dev
	touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	$(OLDEST)/bin/pytest -p no:cacheprovider -q -ra --durations=30 $(OLDEST_TESTS) $(OLDEST_SKIP)

bench: venv
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) $(OLDEST) .demo build *.egg-info .ci/azurite/node_modules
