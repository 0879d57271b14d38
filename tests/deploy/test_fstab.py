"""/etc/fstab lines for dnpfs, mounted by `mount -a` on the clean machine
where scripts/install ran (tests/deploy/machine.py): both forms the README
gives, for each kind of source, two mounts of one store exchanging exact
bytes.  The fstab is a file of the test's (`mount -T`, util-linux's
alternative fstab); mount runs with the environment systemd gives mount
units, so the helper is found where the install put it, /usr/local/bin."""

from __future__ import annotations

import uuid

import pytest

from ..util import wait_for
from .conftest import exchange
from .machine import Machine

pytestmark = pytest.mark.deploy_install

TYPE_FORM, HASH_FORM = "/mnt/fstab-type", "/mnt/fstab-hash"


def _daemon(machine: Machine, mountpoint: str) -> int:
    return int(machine.run(["getfattr", "-n", "user.dnpfs.pid", "--only-values",
                            mountpoint]).stdout)


@pytest.mark.parametrize("source", ["default", "store", "kafka"])
def test_fstab_both_forms_mount_one_store(installed, tmp_path, source, request):
    m = installed.machine
    options = "defaults"
    if source == "default":
        src = "dnpfs"  # the embedded store at /var/lib/dnpfs/store.sqlite
    elif source == "store":
        src = str(tmp_path / "store" / "fstab.sqlite")
    else:
        src = "kafka:" + request.getfixturevalue("kafka_bootstrap")
        options += f",topic-prefix=entry-fstab-{uuid.uuid4().hex[:8]}.,_netdev"
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# the modern form: type fuse.dnpfs, mount.fuse3 runs `dnpfs SOURCE MOUNTPOINT -o ...`\n"
        f"{src}  {TYPE_FORM}  fuse.dnpfs  {options},nofail  0 0\n"
        "# the old form: PROGRAM#SOURCE with type fuse\n"
        f"/usr/local/bin/dnpfs#{src}  {HASH_FORM}  fuse  {options}  0 0\n")
    m.sh(f"mkdir -p {TYPE_FORM} {HASH_FORM}")
    r = m.run(["mount", "-a", "-T", str(fstab)], check=False, timeout=90)
    try:
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        assert {TYPE_FORM, HASH_FORM} <= set(m.mounts()), r.stderr.decode(errors="replace")
        daemons = [_daemon(m, TYPE_FORM), _daemon(m, HASH_FORM)]
        if source == "default":
            assert m.sh("ls /var/lib/dnpfs").split().count(b"store.sqlite") == 1
        exchange(m, TYPE_FORM, HASH_FORM, "one-way", tmp_path)
        exchange(m, HASH_FORM, TYPE_FORM, "other-way", tmp_path)
    finally:
        m.run(["umount", TYPE_FORM, HASH_FORM], check=False)
    # umount(8), as at shutdown: the daemons see their mount go and exit.
    assert not {TYPE_FORM, HASH_FORM} & set(m.mounts())
    wait_for(lambda: not any(m.alive(pid) for pid in daemons), 15,
             what="the fstab daemons to exit after umount")
