# The two quick-start commands: `make demo` and `make test`.  Both build
# .venv from nothing, so that a clean clone (and CI) needs only Python 3.9+.
PYTHON ?= python3
# One virtualenv per interpreter: .venv for the default python3, and
# .venv-3.13 for `make test PYTHON=python3.13`, so that a run never reuses
# an environment built by another Python.
ifeq ($(origin PYTHON),file)
VENV := .venv
else
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(PYTHON_VERSION),)
$(error PYTHON=$(PYTHON) does not run here; name an installed interpreter, e.g. PYTHON=python3.11)
endif
VENV := .venv-$(PYTHON_VERSION)
endif
BIN    := $(VENV)/bin
# setuptools boxes an information for every editable install of a layout like
# ours (a package-dir map): folders in the working directory named like the
# package could shadow it.  None is (the source root is reference/), so the
# box is only noise; this hides that one message and no other warning.
EDITABLE_QUIET := PYTHONWARNINGS="ignore:Editable installation"
# Re-install when the project's metadata changes.
INSTALLED      := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test
# The package with the original (skyllh==24.1.0), for `make demo`.
INSTALLED_DEMO := $(VENV)/.installed-demo

.PHONY: test test-pythons demo bench coverage clean browser fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml setup.py reference/skyllh_cluster/master/_sendmany.c | $(BIN)/python
	$(EDITABLE_QUIET) $(BIN)/python -m pip install --quiet -e .
	touch $@

$(INSTALLED_TEST): pyproject.toml setup.py reference/skyllh_cluster/master/_sendmany.c | $(BIN)/python
	$(EDITABLE_QUIET) $(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(INSTALLED) $(INSTALLED_DEMO)

$(INSTALLED_DEMO): pyproject.toml setup.py reference/skyllh_cluster/master/_sendmany.c | $(BIN)/python
	$(EDITABLE_QUIET) $(BIN)/python -m pip install --quiet -e '.[original]'
	touch $@ $(INSTALLED)

# The suite runs on TEST_JOBS pytest-xdist workers, one test module at a time
# each (--dist loadfile: a module's fixtures, such as the fault runs that
# test_kit_faults starts at once, are made once).  Most tests wait on sockets
# and child processes, so more workers than cores pay.  TEST_JOBS=0: one
# process, in file order.
TEST_JOBS ?= 4
test: $(INSTALLED_TEST) browser
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile tests

# tests/test_html_report.py renders the kit's HTML report in headless
# Chromium.  On a clean Debian machine run as root (CI) it is installed here;
# elsewhere this says how, and that test fails until it is there.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	    || command -v google-chrome >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing Debian's chromium (headless) for tests/test_html_report.py"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	    echo "make: headless Chromium is missing: tests/test_html_report.py will fail" \
	        "(Debian: sudo apt-get install chromium)" >&2; \
	fi

# The tests on every installed Python from 3.9 up, each in its own
# environment under .nox/ (see noxfile.py).
test-pythons: $(INSTALLED) browser
	$(BIN)/python -m pip install --quiet 'nox>=2024.3.2'
	$(BIN)/python -m nox

# The kit against the reference and against the original (skyllh==24.1.0,
# installed by the `original` extra); writes build/demo/{reference,original}.html.
demo: $(INSTALLED_DEMO)
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
	rm -rf .venv .venv-* .nox build dist *.egg-info .hypothesis artifacts
	find reference -name "_sendmany*.so" -delete
