# CARE Lab: `make lab` starts the app on the embedded demo data, `make test` runs every test.
# Both create the virtual environment .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LAB_DATA ?= lab-data

.PHONY: lab test venv demo bench bench-quality clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[app,test]"
	touch $(STAMP)

venv: $(STAMP)

lab: $(STAMP)
	$(PY) -m carecore.cli lab --data-root $(LAB_DATA)

test: $(STAMP)
	$(PY) tests/setup_browser.py
	$(PY) -m pytest -q -ra

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/bench_care.py

bench-quality: $(STAMP)
	$(PY) benchmarks/bench_quality.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
