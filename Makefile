# Targets document themselves: `make help`.
# Every target installs what it needs first, idempotently: a second run reuses the venv and the jar cache.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the JVM jars are an installation cache shared by every checkout and run from any folder (the config's default)
JOBREC_CACHE_DIR ?= $(HOME)/.cache/jobrec
export JOBREC_CACHE_DIR
JARS := $(JOBREC_CACHE_DIR)/jars
PYSPARK_JARS = $(shell $(BIN)/python -c 'import pyspark, os; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')

.PHONY: help setup demo test test-unit test-image image lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

setup: $(VENV)/.installed  ## venv + Python packages, Kafka, Spark and S3 jars and S3Proxy from Maven Central, native BLAS, helm
	@deploy/local/resolve_jars.sh deploy/jars/kafka-broker.pom.xml $(JARS)/kafka
	@deploy/local/resolve_jars.sh deploy/jars/spark-extras.pom.xml $(JARS)/spark $(PYSPARK_JARS)
# s3a:// storage (hadoop-aws, the AWS SDK bundle, the rename-free checkpoint manager) and a local S3 server
	@deploy/local/resolve_jars.sh deploy/jars/object-store.pom.xml $(JARS)/s3 $(PYSPARK_JARS)
	@deploy/local/fetch_s3proxy.sh >/dev/null
	@deploy/local/install_native_blas.sh
	@deploy/local/install_helm.sh .cache/bin

demo: setup  ## start a local Kafka, load the seed data, stream live clicks, retrain, print recommendations
	$(BIN)/jobrec demo

# pytest workers of `make test`: each has its own broker and Spark session; a test module stays on one worker
# (its module fixtures are set up once). Two on 2 cores: the integration tests wait on JVM starts, brokers and
# subprocesses as much as they compute (measured: 24.7 min with two, about 30 with one)
TEST_WORKERS ?= 2

test: setup  ## the whole test suite: unit, integration (real broker, Spark, Delta) and the image built and run
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile tests

test-unit: setup  ## only the tests that need no JVM
	$(BIN)/pytest tests/unit

image:  ## the production image jobrec:dev with buildah (base from debootstrap; rebuilt only when its inputs change)
	deploy/image/build_image.sh

test-image: setup  ## only the image's tests: build it, run jobrec --help, a Spark executor and the demo inside it
	$(BIN)/pytest tests/image

lint: setup  ## ruff (lint and format) and mypy on the installed namespace
	$(BIN)/ruff check schemas streaming batch tests
	$(BIN)/ruff format --check schemas streaming batch tests
	@mkdir -p .cache/typecheck/jobrec && for f in schemas batch streaming; do ln -sfn ../../../$$f .cache/typecheck/jobrec/$$f; done
	$(BIN)/mypy

bench: setup  ## benchmarks that print figures (ingest rate, retrain time, HTTP API rate and latency, engines vs implicit)
	$(BIN)/jobrec bench ingest
	$(BIN)/jobrec bench retrain
	$(BIN)/jobrec bench api --seconds 15
	$(BIN)/jobrec bench engines

clean:  ## remove local state (Kafka data, Delta tables, checkpoints), keep venv and jar cache
	rm -rf .local
