# CARE Lab: `make lab` starts the app on the embedded demo data, `make test` runs every test.
# Both create the virtual environment .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LAB_DATA ?= lab-data
# The suite runs in two processes (pytest-xdist), a test file in one of them: TensorFlow keeps two
# cores only partly busy on the suite's tiny networks, and the notebooks', Voila's and the command
# line's start-ups leave one idle. `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2

.PHONY: lab test venv bench bench-quality bench-scale bench-peers notebooks clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[app,test,zarr]"
	touch $(STAMP)

venv: $(STAMP)

lab: $(STAMP)
	$(PY) -m carecore.cli lab --data-root $(LAB_DATA)

test: $(STAMP)
	$(PY) tests/setup_browser.py
	$(PY) -m pytest -q -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The notebooks' sources are notebooks/NN_name.py (jupytext percent scripts): edit them, then
# rewrite the paired .ipynb files (without outputs) with this target.
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/[0-9][0-9]_*.py

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/bench_care.py

bench-quality: $(STAMP)
	$(PY) benchmarks/bench_quality.py

# chunked prediction over Dask (1 and 2 local workers) against in-memory prediction
bench-scale: $(STAMP)
	$(PY) benchmarks/bench_scale.py

# The same with CSBDeep (the [bench] extra, in .venv) and CAREamics (PyTorch, in its own
# benchmarks/.venv-careamics), and carecore too, at 1x and 10x the budget: about 100 minutes per case
# on 2 cores. BUDGET=180 CASES="demo3d ..." CARE_FACTORS="1" (carecore at the budget only)
BUDGET ?= 180
CASES ?=
CARE_FACTORS ?= 1 10
bench-peers: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	PYTHON=$(PYTHON) bash benchmarks/setup_careamics.sh
	$(PY) benchmarks/bench_quality.py --budget $(BUDGET) $(if $(CASES),--cases $(CASES)) \
		--care-factors $(CARE_FACTORS) --peers csbdeep careamics

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
