# vm-dhcp: everything a contributor or CI needs, from a fresh clone.
#   make test        create .venv, install what is missing, lint, type-check, run every test
#   make lint        ruff + mypy only
#   make bench-ipam  IPAM figures (allocation rate, memory, restore time)
#   make bench-core  DHCP protocol core figures (µs per packet)
#   make bench-dhcp  the agent against Kea and dnsmasq under perfdhcp (root)
#   make bench-controller  1,000 VMs on one pool against the test API server
#   make fuzz        long property run of the DHCP parser

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all test lint fmt unit venv deps bench-ipam bench-core bench-dhcp bench-controller fuzz clean

all: test

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "python >= 3.11 is required ($(PYTHON))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Debian packages for the network tests (real DHCP clients, Kea, dnsmasq, perfdhcp);
# installed when missing and running as root, otherwise those tests skip and say why.
deps:
	scripts/install-debian-deps.sh

test: lint deps
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

bench-ipam: $(STAMP)
	$(BIN)/python bench/bench_ipam.py

bench-core: $(STAMP)
	$(BIN)/python bench/bench_core.py

bench-dhcp: $(STAMP) deps
	$(BIN)/python bench/bench_dhcp.py

bench-controller: $(STAMP)
	$(BIN)/python bench/bench_controller.py

fuzz: $(STAMP)
	VMDHCP_FUZZ_EXAMPLES=$${VMDHCP_FUZZ_EXAMPLES:-100000} $(BIN)/pytest -m fuzz tests/unit/dhcp $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
