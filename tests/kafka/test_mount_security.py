"""dnpfs mounts over SASL and TLS listeners of the real broker; the secret
stays in the config file: never in logs, ps output or /proc/PID/cmdline."""

from __future__ import annotations

import os
import sys
import subprocess
import uuid

import pytest

from ..conftest import ROOT
from ..util import run

pytestmark = pytest.mark.kafka


def kafka_dev(*args) -> str:
    out = subprocess.run([str(ROOT / "scripts" / "kafka-dev"), *args], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def secret_of(config: str) -> str | None:
    for line in open(config):
        if line.startswith("sasl.password="):
            return line.split("=", 1)[1].strip()
    return None


@pytest.mark.parametrize("listener", ["scram", "plain", "ssl", "sasl-ssl"])
def test_mount_over_a_secured_listener(listener, kafka_bootstrap, make_mount, tmp_path):
    config = kafka_dev("client-config", listener)
    address = kafka_dev("address", listener)
    m = make_mount(["--kafka", address, "--kafka-config", config,
                    "--topic-prefix", f"s{uuid.uuid4().hex[:6]}."], extra=["--debug"])
    os.mkfifo(m / "secure")
    run(f"printf 'over {listener}' > {m/'secure'}", shell=True)
    assert run(["cat", str(m / "secure")]).stdout == f"over {listener}".encode()
    # Megabytes over this listener's TLS or SASL: batches large enough to be
    # written from their own buffers (dnpfs/backends/kafka/_aiokafka/produce.py), fetch
    # responses too large for the small-frame buffer, read in place (_aiokafka/frames.py).
    payload = os.urandom(6 << 20)
    (tmp_path / "payload").write_bytes(payload)
    run(["dd", f"if={tmp_path / 'payload'}", f"of={m / 'secure'}", "bs=128k", "status=none"])
    assert run(["cat", str(m / "secure")]).stdout == payload

    secret = secret_of(config)
    if secret:
        assert secret not in m.log_text(), "the password is in the log"
        assert secret.encode() not in open(f"/proc/{m.pid}/cmdline", "rb").read()
        assert secret not in subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True,
                                            text=True).stdout
        assert secret.encode() not in open(f"/proc/{m.pid}/environ", "rb").read()


def test_wrong_password_is_one_clear_line(kafka_bootstrap, tmp_path):
    config = tmp_path / "bad.properties"
    good = open(kafka_dev("client-config", "scram")).read()
    config.write_text("\n".join(
        "sasl.password=wrong" if l.startswith("sasl.password=") else l
        for l in good.splitlines()) + "\n")
    mp = tmp_path / "mp"
    mp.mkdir()
    r = subprocess.run([sys.executable, "-m", "dnpfs", "mount",
                        "--kafka", kafka_dev("address", "scram"), "--kafka-config", str(config),
                        str(mp)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dnpfs: "), r.stderr
    assert "auth" in lines[0].lower() or "credential" in lines[0].lower(), lines[0]
    assert "wrong" not in lines[0]
