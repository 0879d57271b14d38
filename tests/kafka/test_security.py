"""SASL (SCRAM-SHA-256, PLAIN) and TLS against the real dev broker.

The broker started by scripts/kafka-dev has, besides PLAINTEXT, a SASL_PLAINTEXT
listener (SCRAM-SHA-256 and PLAIN), an SSL listener and a SASL_SSL listener, with
passwords and a throwaway CA made anew at every start.  `scripts/kafka-dev
client-config NAME` gives the path of a ready-made client properties file
(librdkafka names, so `kcat -F FILE` reads it as is).  These tests use those files
with aiokafka directly and with kcat: a record goes through each listener, wrong
passwords and an untrusted CA are refused, and no password leaks into logs, ps
output or /proc/PID/cmdline.  Nothing is mocked.
"""

import asyncio
import logging
import os
import re
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context

from .admin import create_topic_at, run

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
KAFKA_DEV = ROOT / "scripts" / "kafka-dev"
CONFIGS = ("scram", "plain", "ssl", "sasl-ssl")
KCAT = shutil.which("kcat")
needs_kcat = pytest.mark.skipif(not KCAT, reason="kcat not installed (apt-get install kcat)")


def unique(prefix):
    return f"dnpfs-test-sec-{prefix}-{uuid.uuid4().hex[:10]}"


def kafka_dev(*args):
    return subprocess.run([str(KAFKA_DEV), *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


def read_props(path):
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            props[k.strip()] = v.strip()
    return props


def librdkafka_version():
    out = subprocess.run([KCAT, "-V"], capture_output=True, text=True).stdout
    m = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else None


@pytest.fixture(scope="module")
def sec(kafka_bootstrap):
    """{name: (path, props)} for the client configs of the running dev broker."""
    configs = {}
    for name in CONFIGS:
        r = kafka_dev("client-config", name)
        if r.returncode != 0:
            if os.environ.get("DNPFS_KAFKA_BOOTSTRAP"):
                pytest.skip("DNPFS_KAFKA_BOOTSTRAP points at another broker; the security "
                            "listeners are those of scripts/kafka-dev")
            pytest.fail(f"scripts/kafka-dev client-config {name} failed:\n{r.stderr}",
                        pytrace=False)
        path = Path(r.stdout.strip().splitlines()[-1])
        configs[name] = (path, read_props(path))
    return configs


@pytest.fixture(scope="module")
def passwords(sec):
    pw = {props["sasl.password"] for _, props in sec.values() if "sasl.password" in props}
    assert len(pw) == 2, pw   # one for SCRAM, one for PLAIN
    return pw


def aiokafka_kwargs(props, password=None, cafile=True):
    kw = {"bootstrap_servers": props["bootstrap.servers"],
          "security_protocol": props["security.protocol"]}
    if "sasl.mechanism" in props:
        kw.update(sasl_mechanism=props["sasl.mechanism"],
                  sasl_plain_username=props["sasl.username"],
                  sasl_plain_password=password if password is not None
                  else props["sasl.password"])
    if props["security.protocol"].endswith("SSL"):
        kw["ssl_context"] = create_ssl_context(
            cafile=props["ssl.ca.location"] if cafile else None)
    return kw


def write_private(path, props):
    path = Path(path)
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    path.chmod(0o600)
    return path


# ----------------------------------------------------------------- the files

def test_client_configs_and_addresses(sec):
    expected = {
        "scram": ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        "plain": ("SASL_PLAINTEXT", "PLAIN"),
        "ssl": ("SSL", None),
        "sasl-ssl": ("SASL_SSL", "SCRAM-SHA-256"),
    }
    for name, (path, props) in sec.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        protocol, mechanism = expected[name]
        assert props["security.protocol"] == protocol
        assert props.get("sasl.mechanism") == mechanism
        if mechanism:
            assert props["sasl.username"] == "dnpfs"
            assert len(props["sasl.password"]) >= 24
        assert ("ssl.ca.location" in props) == protocol.endswith("SSL")
        if "ssl.ca.location" in props:
            assert "BEGIN CERTIFICATE" in Path(props["ssl.ca.location"]).read_text()
        r = kafka_dev("address", name)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == props["bootstrap.servers"]
        assert r.stdout.strip().startswith("127.0.0.1:")
    assert sec["scram"][1]["sasl.password"] != sec["plain"][1]["sasl.password"]
    r = kafka_dev("client-config", "nope")
    assert r.returncode != 0 and "unknown client config" in r.stderr


# ----------------------------------------------------------------- aiokafka

@pytest.mark.parametrize("name", CONFIGS)
def test_aiokafka_produce_consume(sec, kafka_bootstrap, name):
    props = sec[name][1]
    topic = unique(name)
    value = f"over {name} {uuid.uuid4().hex}".encode()

    async def go():
        await create_topic_at(kafka_bootstrap, topic)
        producer = AIOKafkaProducer(**aiokafka_kwargs(props), acks="all")
        await producer.start()
        try:
            md = await producer.send_and_wait(topic, value, key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, **aiokafka_kwargs(props),
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), 15)
        finally:
            await consumer.stop()
        return md, msg

    md, msg = run(go())
    assert (md.partition, md.offset) == (0, 0)
    assert (msg.key, msg.value, msg.offset) == (b"k", value, 0)


@pytest.mark.parametrize("name", ["scram", "plain"])
def test_aiokafka_wrong_password_refused(sec, name, caplog):
    props = sec[name][1]

    async def go():
        producer = AIOKafkaProducer(**aiokafka_kwargs(props, password="not-the-password"),
                                    request_timeout_ms=5000)
        try:
            with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
                await producer.start()
        finally:
            await producer.stop()

    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        run(go())
    # aiokafka raises a generic KafkaConnectionError; the reason is in its log.
    assert "SaslAuthenticationFailed" in caplog.text, caplog.text
    assert re.search(r"Authentication failed|invalid credentials", caplog.text)


def test_aiokafka_untrusted_ca_refused(sec, caplog):
    props = sec["ssl"][1]

    async def go():
        # The system trust store does not know our throwaway CA.
        producer = AIOKafkaProducer(**aiokafka_kwargs(props, cafile=False),
                                    request_timeout_ms=5000)
        try:
            with pytest.raises(KafkaConnectionError):
                await producer.start()
        finally:
            await producer.stop()

    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        run(go())
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text, caplog.text


# ----------------------------------------------------------------- kcat

def kcat(*args, input=None, timeout=30):
    return subprocess.run([KCAT, *args], input=input, capture_output=True, text=True,
                          timeout=timeout)


def plain_over_tls(sec, tmp_path):
    """SASL_SSL with PLAIN: kcat's librdkafka may be unable to do SCRAM (below)."""
    sasl_ssl = sec["sasl-ssl"][1]
    props = dict(sec["plain"][1], **{
        "bootstrap.servers": sasl_ssl["bootstrap.servers"],
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": sasl_ssl["ssl.ca.location"]})
    return write_private(tmp_path / "plain-ssl.properties", props)


@needs_kcat
@pytest.mark.parametrize("name", [*CONFIGS, "plain-over-sasl-ssl"])
def test_kcat_produce_consume(sec, kafka_bootstrap, name, tmp_path):
    conf = plain_over_tls(sec, tmp_path) if name == "plain-over-sasl-ssl" else sec[name][0]
    topic = unique(name.replace("-over-", "-"))
    run(create_topic_at(kafka_bootstrap, topic))
    value = f"kcat over {name} {uuid.uuid4().hex}"
    p = kcat("-F", str(conf), "-P", "-t", topic, "-p", "0", "-m", "10", input=value + "\n")
    if (p.returncode != 0 and "SCRAM" in read_props(conf).get("sasl.mechanism", "")
            and "invalid credentials" in p.stderr
            and (librdkafka_version() or (0,)) < (2, 6, 1)):
        # librdkafka < 2.6.1 repeats the client nonce in the SCRAM client-final
        # message; Kafka 4.x checks it strictly (confluentinc/librdkafka#4895).
        # aiokafka (what dnpfs uses) is not affected: see the aiokafka tests.
        pytest.xfail(f"kcat's librdkafka {librdkafka_version()} cannot SCRAM against "
                     "Kafka 4.x (fixed in librdkafka 2.6.1)")
    assert p.returncode == 0, p.stderr
    c = kcat("-F", str(conf), "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
             "-q", "-m", "10", "-f", "%s\n")
    assert c.returncode == 0, c.stderr
    assert c.stdout.splitlines() == [value]


@needs_kcat
@pytest.mark.parametrize("name", ["scram", "plain"])
def test_kcat_wrong_password_refused(sec, name, tmp_path):
    props = dict(sec[name][1], **{"sasl.password": "not-the-password"})
    conf = write_private(tmp_path / "bad.properties", props)
    r = kcat("-F", str(conf), "-L", "-m", "3")
    assert r.returncode != 0
    assert "SASL authentication error: Authentication failed" in r.stderr, r.stderr


@needs_kcat
def test_kcat_untrusted_ca_refused(sec, tmp_path):
    props = dict(sec["ssl"][1])
    del props["ssl.ca.location"]
    conf = write_private(tmp_path / "noca.properties", props)
    r = kcat("-F", str(conf), "-L", "-m", "3")
    assert r.returncode != 0
    assert "certificate verify failed" in r.stderr, r.stderr


# ----------------------------------------------------------------- no leaks

def test_no_secret_in_logs_ps_or_cmdline(sec, passwords):
    state = sec["scram"][0].parent
    # The secret files themselves are private.
    for f in [state / "credentials", state / "server.properties",
              state / "tls" / "server.pem", *(p for p, _ in sec.values())]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert not (state / "tls" / "ca.key").exists()  # the CA key is thrown away

    # Logs.
    logs = [state / "kafka.out", *sorted((state / "logs").glob("*"))]
    assert (state / "logs" / "server.log") in logs
    for f in logs:
        text = f.read_bytes()
        for pw in passwords:
            assert pw.encode() not in text, f"password found in {f}"

    # ps output and every process's command line (the broker, kcat -F runs,
    # and the StorageTool run at format time, which got it through an @argfile).
    ps = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True,
                        text=True).stdout
    assert "kafka.Kafka" in ps
    for pw in passwords:
        assert pw not in ps
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmdline = (d / "cmdline").read_bytes()
            except OSError:
                continue
            for pw in passwords:
                assert pw.encode() not in cmdline, f"password in /proc/{d.name}/cmdline"
    pid = int((state / "kafka.pid").read_text().split()[0])
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    for pw in passwords:
        assert pw.encode() not in environ
