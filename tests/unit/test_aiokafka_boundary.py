"""The boundary with aiokafka (dnpfs/backends/kafka/_aiokafka/): the
supported range is one range everywhere, and every internal dnpfs leans on
is there.  A new aiokafka release that moves one fails here, by name."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import aiokafka
from aiokafka.conn import AIOKafkaConnection
from aiokafka.producer.message_accumulator import MessageBatch
from aiokafka.structs import TopicPartition
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from dnpfs.backends.kafka import _aiokafka

ROOT = Path(__file__).resolve().parents[2]


def test_one_range_in_pyproject_the_pins_and_the_check():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [spec] = [Requirement(r).specifier for r in project["dependencies"]
              if Requirement(r).name == "aiokafka"]
    assert spec == SpecifierSet(_aiokafka.SUPPORTED)
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "deploy" / "requirements.txt")
                           .read_text(), re.M))
    assert pins["aiokafka"] in spec, "the image pins an aiokafka the check refuses"
    assert pins["aiokafka"] == aiokafka.__version__, "tests run another aiokafka than users"
    assert "cramjam" in pins


def test_releases_outside_the_range_are_refused():
    assert _aiokafka.supported(aiokafka.__version__)
    for release in ("0.11.0", "0.12.0", "0.13.0", "0.15.0", "1.0.0"):
        assert not _aiokafka.supported(release), release


def test_every_listed_internal_is_there():
    assert _aiokafka.missing() == []


def test_instance_internals_on_live_objects():
    """What aiokafka sets in __init__: on a connection, a producer, its
    accumulator and one of its batches."""
    wanted = {cls: attrs.split() for cls, attrs, _ in _aiokafka.INSTANCE_INTERNALS}

    async def objects():
        conn = AIOKafkaConnection("127.0.0.1", 9)
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")
        accumulator = producer._message_accumulator
        batch = MessageBatch(TopicPartition("t", 0), producer.create_batch(), 1.0, 0.0)
        found = {"AIOKafkaConnection": conn, "AIOKafkaProducer": producer,
                 "MessageAccumulator": accumulator, "MessageBatch": batch}
        return {name: [a for a in wanted[name] if not hasattr(obj, a)]
                for name, obj in found.items()}

    assert asyncio.run(objects()) == {name: [] for name in wanted}


def test_the_fetch_request_carries_session_and_isolation_level():
    """The fetcher's request through aiokafka's FetchRequest v11 struct: the
    fields it fills in are encoded, and read back as sent."""
    from aiokafka.protocol.fetch import FetchRequest_v11

    from dnpfs.backends.kafka._fetcher import fetch_request

    struct = fetch_request(5, 3, {"t": 7}, ["gone"]).build(FetchRequest_v11)
    back = FetchRequest_v11.decode(struct.encode())
    assert (back.isolation_level, back.session_id, back.session_epoch) == (1, 5, 3)
    assert back.forgotten_topics_data == [("gone", [0])]
    assert back.topics[0][0] == "t" and back.topics[0][1][0][2] == 7


# A private name reached on an object other than self or cls, or imported.
_ATTRIBUTE = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.\w+)*)\.(_[a-z]\w*)")
_IMPORT = re.compile(r"^from aiokafka[\w.]* import .*\b_\w+", re.M)


def private_uses(text: str) -> list[str]:
    return [m.group(0) for m in _ATTRIBUTE.finditer(text) if m.group(1) not in ("self", "cls")] \
        + [m.group(0) for m in _IMPORT.finditer(text)]


def test_no_module_outside_the_boundary_touches_aiokafka_internals():
    """Everything of aiokafka's that is private is used in _aiokafka/ only."""
    kafka = ROOT / "dnpfs" / "backends" / "kafka"
    found = {p.name: private_uses(p.read_text()) for p in sorted(kafka.glob("*.py"))}
    assert {name: uses for name, uses in found.items() if uses} == {}
    # the scan finds what it looks for:
    assert private_uses("x = self.producer._message_accumulator\n") == [
        "self.producer._message_accumulator"]
    assert private_uses("from aiokafka.record.default_records import _Builder\n")
    assert private_uses("self._x = cls._y\n") == []


def test_a_mount_refuses_another_aiokafka_in_one_line(tmp_path):
    """An aiokafka that says it is 0.13.0 (a stand-in package first on the
    path): `dnpfs mount --kafka` exits 1 with one line, before connecting."""
    fake = tmp_path / "fake" / "aiokafka"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "0.13.0"\n')
    r = subprocess.run([sys.executable, "-m", "dnpfs", "mount", "--foreground", "--kafka",
                        "127.0.0.1:9", str(tmp_path / "mnt")],
                       env={"PYTHONPATH": f"{fake.parent}:{ROOT}", "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 1
    assert r.stderr == "dnpfs: aiokafka 0.13.0 is not supported: need >=0.14,<0.15\n"
