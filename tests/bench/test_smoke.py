"""Benchmark smoke test: throughput did not fall far behind its references.

Runs benchmarks/smoke.py (64 MiB transfers, best of 3, about 30 s; once more if
a ratio is low, since a 0.1 s kcat run is easily disturbed): the embedded
store against a local FIFO, and dnpfs on Kafka against kcat on the same broker.
Each ratio must stay above half of the one recorded in benchmarks/baseline.json,
which `make bench` re-measures.  Only ratios are compared, never times: dnpfs and
its reference run back to back, so a slow or busy machine moves both.
"""

from __future__ import annotations

import pytest

from benchmarks import smoke

pytestmark = pytest.mark.kafka

TOLERANCE = 0.5  # fail below half of the recorded ratio


ROUNDS = 2  # a ratio low in the first round is measured once more before failing


def test_throughput_ratios_hold_against_the_baseline(kafka_bootstrap, tmp_path):
    baseline = smoke.load_baseline()
    best: dict[str, float] = {}
    for round_ in range(ROUNDS):
        work = tmp_path / f"round{round_}"
        work.mkdir()
        measured = smoke.run(kafka_bootstrap, work)
        assert set(measured["ratios"]) == set(baseline["ratios"]), \
            "benchmarks/smoke.py and baseline.json disagree on the ratios: run `make bench`"
        for name, value in measured["ratios"].items():
            best[name] = max(best.get(name, 0.0), value)
        low = {
            name: f"{best[name]:.2f}× now, {recorded:.2f}× recorded ({smoke.RATIOS[name]})"
            for name, recorded in baseline["ratios"].items()
            if best[name] < recorded * TOLERANCE
        }
        if not low:
            break
    assert not low, (f"throughput ratios below {TOLERANCE}× the baseline"
                     f" (best MiB/s: {measured['best_mib_s']}): {low}")
