"""scripts/kafka-dev, the broker every Kafka test and the README's demo start:
what it says when the broker dies during start-up."""

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

KAFKA_DEV = Path(__file__).resolve().parents[2] / "scripts" / "kafka-dev"


def test_a_broker_that_dies_during_start_up_is_started_once_more_then_named(tmp_path):
    """A JVM that cannot start (here: a heap too small for it) exits before
    the broker logs anything.  kafka-dev starts it once more from scratch,
    saying how the first one ended, then fails naming how the second ended;
    nothing is left running."""
    state = tmp_path / "state"
    env = dict(os.environ, DNPFS_KAFKA_STATE=str(state), DNPFS_KAFKA_HOSTS="0",
               DNPFS_KAFKA_HEAP_OPTS="-Xmx1m -Xms1m", DNPFS_KAFKA_START_TIMEOUT="60")
    for var in ("DNPFS_KAFKA_PORT", "DNPFS_KAFKA_CONTROLLER_PORT", "DNPFS_KAFKA_SASL_PORT",
                "DNPFS_KAFKA_SSL_PORT", "DNPFS_KAFKA_SASL_SSL_PORT"):
        env.pop(var, None)
    r = subprocess.run([str(KAFKA_DEV), "start"], env=env, capture_output=True, text=True,
                       timeout=300)
    try:
        assert r.returncode != 0, r.stderr
        assert "exited with code 1 during start-up; starting it once more" in r.stderr, r.stderr
        assert r.stderr.count("kafka-dev: starting Kafka") == 2, r.stderr
        assert "(the broker exited with code 1)" in r.stderr, r.stderr
        assert not (state / "kafka.pid").exists()
    finally:
        subprocess.run([str(KAFKA_DEV), "stop"], env=env, capture_output=True, timeout=120)
