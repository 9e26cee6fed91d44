# Every target creates the virtualenv first if it is missing, so a fresh clone needs only Python 3.11 and make.
PYTHON_SYSTEM ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: help venv test soak demo serve bench bench-cluster lint redis-stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
	$(PYTHON_SYSTEM) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed ## create .venv and install requirements.txt

# Two processes: most tests wait on real servers and processes, so two halve the suite's wall time
# even on two cores; each has its own private servers on free ports.
TEST_PROCESSES ?= 2
test: venv ## run the test suite (starts its own redis-server on a free port; TEST_PROCESSES=1 runs it in one)
	$(PY) -m pytest -q -n $(TEST_PROCESSES)

SOAK_MINUTES ?= 60
soak: venv ## SOAK_MINUTES (default 60) of random faults under load, then every invariant checked (exit 1 on a violation)
	$(PY) scripts/soak.py --minutes $(SOAK_MINUTES)

demo: venv ## run the whole pipeline for DEMO_SECONDS (default 60), then export to out/
	$(PY) scripts/demo.py

SERVE_ARGS ?=
serve: venv ## the live web page alone (python -m analytics serve $(SERVE_ARGS)), on http://127.0.0.1:8080/
	$(PY) -m analytics serve $(SERVE_ARGS)

bench: venv ## run every benchmark and print one table
	$(PY) scripts/bench_all.py

bench-cluster: venv ## Redis Cluster: 1 master against 3, and the cost of --wait-replicas
	$(PY) scripts/bench_cluster.py

lint: venv ## ruff
	$(VENV)/bin/ruff check .

redis-stop: venv ## stop the embedded redis-server (data stays in .telemetry/)
	$(PY) scripts/redis_stop.py

clean: ## remove the virtualenv, outputs and the embedded server's data
	-$(PY) scripts/redis_stop.py
	rm -rf $(VENV) out .telemetry
