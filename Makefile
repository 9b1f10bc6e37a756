# The two commands (see README): `make serve` and `make test`. Each installs what it needs first.
VENV ?= .venv
PORT ?= 8000

.PHONY: serve test bench setup setup-test

serve:
	scripts/setup.sh serve
	$(VENV)/bin/vocable serve --port $(PORT) $(ARGS)

test:
	scripts/setup.sh test
	$(VENV)/bin/python -m pytest -q $(ARGS)

bench:
	benchmarks/run.sh $(ARGS)

setup:
	scripts/setup.sh serve

setup-test:
	scripts/setup.sh test
