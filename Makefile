# The two commands of the README: `make demo` (main job against the lab) and `make test`.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	@# the kerberos extra builds pykerberos/python-gssapi against libkrb5-dev where no wheel
	@# exists: without it the demo and the other tests still run, the kerberos tests skip
	$(VENV)/bin/python -m pip install -q -e '.[test,kerberos]' \
	  || echo "note: the kerberos extra did not install (needs libkrb5-dev and a C compiler); the kerberos tests will skip"
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(VENV)/bin/cas-audit demo --out reports

# pytest-xdist: most tests wait (sockets, child processes, deadlines), so more workers than
# cores. --dist loadfile: each test file on one worker, so a module's fixtures (a lab, a scan,
# the Kerberos realm and the Samba DC, which edit /etc/hosts and listen on fixed ports) are
# built once and never twice at once. (loadgroup's xdist_group marks have no effect with
# pytest 9.2: pytest-xdist issue 1386.) Files in collection order, whose longest files come
# first (tests/conftest.py, LONGEST_FIRST), not xdist's order by number of tests.
XDIST ?= -n 3 --dist loadfile --no-loadscope-reorder

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(XDIST)

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest $(XDIST) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/python bench/bench_xlsx.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis reports/*.xlsx reports/*.json reports/*.html reports/*.db* reports/fix-plan
