# geovis_ros: `make demo` and `make test` are all a newcomer types (both run `make setup`).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp

# DDS stays on this machine: no multicast discovery beyond localhost.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py setup.cfg package.xml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (geovis_ros needs CPython 3.11 for the ROS 2 wheels)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(BIN)/geovis demo --out out/demo

test: setup
	$(BIN)/python -m pytest test

lint: setup
	$(BIN)/ruff check geovis_ros test launch setup.py
	$(BIN)/mypy geovis_ros

bench: setup
	$(BIN)/geovis bench

clean:
	rm -rf build install log out .pytest_cache
