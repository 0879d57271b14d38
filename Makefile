# Benchmarks: throughput, latency and cost next to kcat, aiokafka and a local FIFO.
# Needs root (FUSE mounts), kcat, the dev broker (started if needed) and, for the
# plots, matplotlib:  pip install -e '.[bench]'.  See docs/benchmarks.md.
#
#   make bench                    every scenario (~9 min): bench-results/, docs/benchmarks.md,
#                                 docs/benchmarks/*.png, benchmarks/baseline.json
#   make bench-quick              the same at small sizes (~1 min), bench-results/ only
#   make bench-smoke              tests/bench: smoke ratios against benchmarks/baseline.json
#   make bench PYTHON=/tmp/venv/bin/python BENCH_ARGS="--only bulk --bulk-mib 256"

PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
BENCH_ARGS ?=

.PHONY: bench bench-quick bench-smoke

bench:
	$(PYTHON) -m benchmarks $(BENCH_ARGS)

bench-quick:
	$(PYTHON) -m benchmarks --quick $(BENCH_ARGS)

bench-smoke:
	$(PYTHON) -m pytest tests/bench -q -ra
