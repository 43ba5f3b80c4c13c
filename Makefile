# make demo: create the venv, install, run the fit job on built-in sample data.
# make test: create or reuse the same venv, run the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO ?= demo

.PHONY: install demo test clean

install: $(VENV)/.installed

# uv installs the pinned stack in ~15 s instead of ~75 s; plain pip is the fallback.
# --compile-bytecode: uv writes no .pyc by default (pip does), and where
# PYTHONDONTWRITEBYTECODE is set nothing ever writes them, so every process would
# compile TensorFlow's, Beam's and tf.Transform's sources again: ~7 s of each start.
$(VENV)/.installed: setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q uv || true
	if [ -x $(VENV)/bin/uv ]; then $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[test]'; \
	else $(PY) -m pip install -q -e '.[test]'; fi
	touch $@

demo: install
	$(VENV)/bin/shardmeans generate --output $(DEMO)/data --rows 200000 --features 8 --clusters 6 --format parquet
	PATH=$(abspath $(VENV))/bin:$$PATH launch/local.sh --input '$(DEMO)/data/*.parquet' --output $(DEMO)/out --k 6 --id_column id --overwrite

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) $(DEMO)
