"""deploy/entrypoint.sh, the image's entrypoint, on its own: a stand-in
`dnpfs` prints the arguments it is given.  (tests/deploy/test_image.py runs
the real one inside the built image.)"""

from __future__ import annotations

import os
import stat

from .conftest import DEPLOY, sh


def test_entrypoint_maps_every_variable(tmp_path):
    """deploy/entrypoint.sh alone, with a stand-in `dnpfs` that prints its
    arguments: each variable becomes its option."""
    fake = tmp_path / "bin" / "dnpfs"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    mountpoint = tmp_path / "pipes"
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "DNPFS_MOUNTPOINT": str(mountpoint),
           "DNPFS_KAFKA_BOOTSTRAP": "kafka:9092", "DNPFS_TOPIC_PREFIX": "prod.",
           "DNPFS_KAFKA_CONFIG": "/etc/dnpfs/kafka.properties",
           "DNPFS_OPTIONS": "allow_other,mode=0666"}
    entrypoint = str(DEPLOY / "entrypoint.sh")
    out = sh([entrypoint, "--debug"], env=env).stdout.splitlines()
    assert out == ["mount", "--foreground", "--debug", "--kafka", "kafka:9092",
                   "--topic-prefix", "prod.", "--kafka-config", "/etc/dnpfs/kafka.properties",
                   "-o", "allow_other,mode=0666", str(mountpoint)]
    assert mountpoint.is_dir()  # created for a fresh bind mount
    out = sh([entrypoint], env={"PATH": env["PATH"], "DNPFS_MOUNTPOINT": str(mountpoint),
                                "DNPFS_STORE": "/srv/p.sqlite"}).stdout.splitlines()
    assert out == ["mount", "--foreground", "--store", "/srv/p.sqlite", str(mountpoint)]
    assert sh([entrypoint, "dnpfs", "--version"], env=env).stdout.splitlines() == ["--version"]
    assert os.stat(entrypoint).st_mode & stat.S_IXUSR
