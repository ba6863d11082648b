# geovis_ros: `make demo` and `make test` are all a newcomer types (both run `make setup`).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
# Wheels of the pure-Python ROS 2 Jazzy launch tools (ros2 launch/topic/param), beside the checkout in CI.
# launch_testing is left out: its pytest plugin does not load under pytest 9 and would break `make test`.
LAUNCH_KIT ?= ../shared/ros-launch-kit
LAUNCH_KIT_PACKAGES := launch launch_xml launch_yaml launch_ros ros2launch \
	ros2cli ros2pkg ros2run ros2node ros2topic ros2service ros2param ros2interface rosidl_runtime_py \
	sensor_msgs_py composition-interfaces-shim osrf-pycommon psutil

# DDS stays on this machine: no multicast discovery beyond localhost.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py setup.cfg package.xml $(wildcard $(LAUNCH_KIT)/*.whl)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (geovis_ros needs CPython 3.11 for the ROS 2 wheels)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@if [ -d $(LAUNCH_KIT) ]; then \
		echo "installing the ROS 2 launch tools from $(LAUNCH_KIT)"; \
		$(BIN)/python -m pip install --quiet --no-index --no-deps --find-links $(LAUNCH_KIT) $(LAUNCH_KIT_PACKAGES); \
	else \
		echo "note: $(LAUNCH_KIT) not found: ros2 launch/topic/param are not installed; the launch tests will skip"; \
	fi
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
