# make demo: create the venv, install, run the fit job on built-in sample data.
# make test: create or reuse the same venv, run the test suite (tests/unit, integration, runners,
#   workflow).
# make test-fast: the unit tests alone (tests/unit/, under a minute): the inner loop.
# make lint: the linters and formatters' checks (ruff, shellcheck, clang-format) and the
#   commit subjects' length, as CI runs them;
# make format: let ruff and clang-format rewrite what `make lint` would refuse.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo

.PHONY: install demo test test-fast lint format clean

install: $(VENV)/.installed

# uv installs the pinned stack in ~15 s instead of ~75 s; plain pip is the fallback.
# --compile-bytecode: uv writes no .pyc by default (pip does), and where
# PYTHONDONTWRITEBYTECODE is set nothing ever writes them, so every process would
# compile TensorFlow's, Beam's and tf.Transform's sources again: ~7 s of each start.
$(VENV)/.installed: setup.py pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q uv || true
	if [ -x $(VENV)/bin/uv ]; then $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[test,lint]'; \
	else $(PY) -m pip install -q -e '.[test,lint]'; fi
	touch $@

demo: install
	$(VENV)/bin/shardmeans generate --output $(DEMO)/data --rows 200000 --features 8 --clusters 6 --format parquet
	SHARDMEANS_PYTHON=$(abspath $(PY)) launch/local.sh --input '$(DEMO)/data/*.parquet' --output $(DEMO)/out --k 6 --id_column id --overwrite

test: install
	$(PY) -m pytest -q --durations=25 tests

test-fast: install
	$(PY) -m pytest -q tests/unit

SHELL_SCRIPTS := launch/*.sh launch/common.bash .ci/run
CC_SOURCES = $(shell find transforms -name '*.cc')

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/shellcheck $(SHELL_SCRIPTS)
	$(VENV)/bin/clang-format --dry-run --Werror $(CC_SOURCES)
	$(PY) .ci/commit_subjects.py

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/clang-format -i $(CC_SOURCES)

clean:
	rm -rf $(VENV) $(DEMO)
