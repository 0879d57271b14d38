"""Benchmark smoke test: throughput did not fall far behind its references.

Runs benchmarks/smoke.py (64 MiB transfers, best of 3, about 30 s): the embedded
store against a local FIFO, and dnpfs on Kafka against kcat on the same broker.
Each ratio must stay above half of the one recorded in benchmarks/baseline.json,
which `make bench` re-measures.  Only ratios are compared, never times: dnpfs and
its reference run back to back, so a slow or busy machine moves both.
"""

from __future__ import annotations

import shutil

import pytest

from benchmarks import smoke

pytestmark = pytest.mark.kafka

TOLERANCE = 0.5  # fail below half of the recorded ratio


def test_throughput_ratios_hold_against_the_baseline(kafka_bootstrap, tmp_path):
    baseline = smoke.load_baseline()
    measured = smoke.run(kafka_bootstrap, tmp_path)
    assert set(measured["ratios"]) == set(baseline["ratios"]), \
        "benchmarks/smoke.py and baseline.json disagree on the ratios: run `make bench`"
    low = {
        name: f"{measured['ratios'][name]:.2f}× now, {recorded:.2f}× recorded"
              f" ({smoke.RATIOS[name]})"
        for name, recorded in baseline["ratios"].items()
        if measured["ratios"][name] < recorded * TOLERANCE
    }
    assert not low, (f"throughput ratios below {TOLERANCE}× the baseline"
                     f" (best MiB/s: {measured['best_mib_s']}): {low}")
