"""Bulk and latency on the embedded store, next to a local FIFO.

    python -m benchmarks.embedded [OPTIONS]

The `embedded` scenario of the suite (scenarios.embedded): the same as
``python -m benchmarks --only embedded [OPTIONS]`` (for example
``--embedded-mib 256 --reps 1``).  It writes bench-results/, not the docs.
"""

from __future__ import annotations

import sys

from .suite import main

if __name__ == "__main__":
    sys.exit(main(["--only", "embedded", *sys.argv[1:]]))
