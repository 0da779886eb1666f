# synthnb: `make run` installs everything and runs the healthcare experiment; `make test` installs and runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PROFILE ?= smoke
# pytest-xdist processes, one test file each at a time (a file's session fixtures, e.g. one smoke run, stay on one worker)
TEST_WORKERS ?= 2

.PHONY: install run run-defect data test test-all nbtest lint-notebooks clean docs readme parameters bench

$(VENV)/.installed: constraints.txt settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# JupyterLab saves the notebooks in nbs/ without outputs (synthnb.core.hygiene.pre_save_hook), so running one never breaks `make test`
# (a JSON file in jupyter_server_config.d/ only enables extensions: the hook goes in jupyter_server_config.json)
JUPYTER_HOOK := $(VENV)/etc/jupyter/jupyter_server_config.json
$(JUPYTER_HOOK): $(VENV)/.installed Makefile  # rewritten when the hook moves
	mkdir -p $(dir $@)
	echo '{"ContentsManager": {"pre_save_hook": "synthnb.core.hygiene.pre_save_hook"}}' > $@

install: $(VENV)/.installed $(JUPYTER_HOOK)

# Real data: $SYNTHNB_DATA if set, else the checkout's data/ folder (downloaded on first use).
data: install
	@if [ -z "$$SYNTHNB_DATA" ] && [ ! -f data/pneumoniamnist/pneumoniamnist.npz ]; then $(BIN)/synthnb download pneumoniamnist; fi

run: data
	$(BIN)/synthnb run experiments/healthcare.yaml -p profile=$(PROFILE)

run-defect: install
	@if [ -z "$$SYNTHNB_DATA" ] && [ ! -d data/magnetic-tile-defects/MT_Free ]; then $(BIN)/synthnb download magnetic-tiles; fi
	$(BIN)/synthnb run experiments/defect.yaml -p profile=$(PROFILE)

# Notebooks must be clean (no outputs, nbdev_clean's metadata rules) and the package in sync with them (CI fails on any diff).
lint-notebooks: install
	$(PY) -m synthnb.core.hygiene nbs
	$(BIN)/nbdev_clean
	git diff --exit-code --stat -- nbs
	$(BIN)/nbdev_export
	git diff --exit-code --stat -- synthnb

# What CI runs. Each notebook is executed once: docs/build.py runs every notebook in nbs/ as nbdev_test does (cells
# flagged slow/gpu skipped) and fails on any error, then builds the site from those executions. The stage notebooks
# share one cached smoke upstream ($$SYNTHNB_CACHE), and pytest's CLI runs share one stage cache per worker.
test: install lint-notebooks
	$(BIN)/ruff check synthnb tests tools bench docs
	$(PY) tools/parameters_cells.py --check
	$(PY) tools/readme.py --check
	OMP_NUM_THREADS=1 $(PY) docs/build.py
	OMP_NUM_THREADS=1 $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not gpu and not slow" --durations=25 tests

# Everything except GPU tests, the slow end-to-end runs included (not in CI).
test-all: install lint-notebooks
	$(BIN)/ruff check synthnb tests tools bench docs
	$(PY) tools/parameters_cells.py --check
	$(PY) tools/readme.py --check
	OMP_NUM_THREADS=1 $(PY) docs/build.py
	OMP_NUM_THREADS=1 $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not gpu" --durations=25 tests

# nbdev's own notebook runner (what `make test` replaces with the docs build's single execution)
nbtest: install
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2

# Docs site without Quarto: nbdev-processed notebooks, executed, rendered by Sphinx + myst-nb into _site/
docs: install
	$(PY) docs/build.py

# one heavy process at a time (two torch processes on 2 cores oversubscribe them: every figure would lie)
bench: install
	$(PY) bench/training.py
	$(PY) bench/generation.py --size 28
	$(PY) bench/generation.py --size 64
	$(PY) bench/augmentation.py

clean:
	rm -rf runs _proc _docs _site

readme: install
	$(PY) tools/readme.py

# Each stage notebook's parameters cell, written from its config class (the one place a parameter is declared)
parameters: install
	$(PY) tools/parameters_cells.py
	$(BIN)/nbdev_export
