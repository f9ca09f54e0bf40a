# The two quick-start commands: `make demo` and `make test`.  Both build
# .venv from nothing, so that a clean clone (and CI) needs only Python 3.9+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when the project's metadata changes.
INSTALLED      := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test

.PHONY: test demo bench coverage clean fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml setup.py reference/skyllh_cluster/master/_sendmany.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(INSTALLED_TEST): pyproject.toml setup.py reference/skyllh_cluster/master/_sendmany.c | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(INSTALLED)

test: $(INSTALLED_TEST)
	$(BIN)/python -m pytest tests

demo: $(INSTALLED)
	$(BIN)/python scripts/demo.py

bench: $(INSTALLED_TEST)
	$(BIN)/python -m benchmarks

# 10^6 mutated and structure-aware payloads through loads and loads_checked,
# differential against a restricted pickle; exits 1 on any finding.
fuzz: $(INSTALLED_TEST)
	$(BIN)/python scripts/fuzz_codec.py --count 1000000

coverage: $(INSTALLED_TEST)
	$(BIN)/python -m coverage run -m pytest tests
	$(BIN)/python -m coverage report

clean:
	rm -rf $(VENV) build dist *.egg-info .hypothesis
	find reference -name "_sendmany*.so" -delete
