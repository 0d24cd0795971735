# hg-hosting: `make serve` runs a ready local site, `make test` the whole suite.
#   make serve HTTP=127.0.0.1:8080        serve elsewhere (default 127.0.0.1:8000)
#   make serve SITE=/srv/site ADMIN=root  another site directory or first admin's name
#   make test                             install the Debian test tools if missing, then ruff and pytest
PYTHON ?= python3
VENV   ?= .venv
SITE   ?= $(CURDIR)/site
HTTP   ?= 127.0.0.1:8000
ADMIN  ?= admin
BIN     = $(VENV)/bin

.PHONY: serve test test-deps check bench clean

$(BIN)/hg-hosting: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

serve: $(BIN)/hg-hosting
	$(BIN)/hg-hosting --site '$(SITE)' init --admin '$(ADMIN)'
	@echo "serving http://$(HTTP)/ (Ctrl-C stops it)"
	$(BIN)/hg-hosting --site '$(SITE)' serve --http '$(HTTP)'

# test-deps first: a fresh machine may lack even python3-venv, which the venv needs.
test: test-deps $(BIN)/hg-hosting
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 4 --dist loadfile --durations=25

test-deps:
	PYTHON='$(PYTHON)' VENV='$(VENV)' tools/install-test-deps

check: $(BIN)/hg-hosting
	$(BIN)/ruff check .

bench: $(BIN)/hg-hosting
	$(BIN)/python bench/hook_cost.py

clean:
	rm -rf $(VENV) build *.egg-info tests/artifacts
