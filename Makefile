# Two entry points for a fresh clone: `make demo` and `make test` (both set up .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint bench figures clean

venv: $(STAMP)

# finn-plus pins brevitas==0.13.0 (setuptools<70), torch 2.13 needs setuptools>=77: the stack goes
# in with one resolve, finn-plus afterwards with --no-deps.
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

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not rtlsim and not synth"

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(PY) -m flow.bench

# the README's measured figures, regenerated from the runs' summaries (runs the recipes if needed)
figures: venv
	$(PY) -m flow.report.figures

clean:
	rm -rf build/out build/bench
