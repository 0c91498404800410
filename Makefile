# Two entry points for a fresh clone: `make demo` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): requirements/stack.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/stack.txt
	$(PY) -m pip install -q --no-deps finn-plus==1.6.1
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: venv
	$(VENV)/bin/densiflow run build/digits.yaml

test: venv
	$(PY) -m pytest -q

bench: venv
	$(PY) -m flow.bench

clean:
	rm -rf build/out build/bench
