"""The semantic tests run once per backend: the embedded store and Kafka.

`mounts` gives two daemons sharing one store (or one cluster): two hosts.
DNPFS_TEST_BACKENDS narrows the list (e.g. "sqlite"); by default every
backend runs, so CI exercises all of them.
"""

from __future__ import annotations

import os
import uuid

import pytest

BACKENDS = [b for b in os.environ.get("DNPFS_TEST_BACKENDS", "sqlite,kafka").split(",") if b]


@pytest.fixture(params=BACKENDS)
def backend_args(request, tmp_path):
    if request.param == "sqlite":
        return ["--store", str(tmp_path / "store" / "dnpfs.sqlite")]
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        return ["--kafka", bootstrap, "--topic-prefix", f"t{uuid.uuid4().hex[:8]}."]
    raise ValueError(request.param)


@pytest.fixture
def mounts(make_mount, backend_args):
    a = make_mount(backend_args, "a")
    b = make_mount(backend_args, "b")
    return a, b


@pytest.fixture
def mount(make_mount, backend_args):
    return make_mount(backend_args, "a")
