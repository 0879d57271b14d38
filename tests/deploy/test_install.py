"""scripts/install on a clean machine (tests/deploy/machine.py), from a copy
of the checkout that is deleted once the install is done: what it installs,
and that its mount shares the embedded store with a second mount.

The `installed` fixture takes about half a minute to a minute (pip from PyPI,
pyfuse3 compiled); `-m "not deploy_install"` leaves these tests out."""

from __future__ import annotations

import pytest

from dnpfs import __version__

from .conftest import copy_of_checkout, exchange, install

pytestmark = pytest.mark.deploy_install

VENV = "/opt/dnpfs/venv"


def test_install_leaves_a_package_that_needs_no_checkout(installed):
    m = installed.machine
    assert m.run(["readlink", "/usr/local/bin/dnpfs"]).stdout.decode().strip() \
        == f"{VENV}/bin/dnpfs"
    # The checkout is gone: these work only from an installed package.
    assert m.run(["dnpfs", "--version"]).stdout.decode().strip() == f"dnpfs {__version__}"
    where = m.run([f"{VENV}/bin/python", "-c", "import dnpfs; print(dnpfs.__file__)"])
    assert where.stdout.decode().startswith(f"{VENV}/lib/"), where.stdout
    site = m.sh(f"ls {VENV}/lib/python3*/site-packages").decode()
    assert "__editable__" not in site, site
    metadata = m.sh(f"cat {VENV}/lib/python3*/site-packages/dnpfs-*.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    # The README shows getfattr: the install brings it.
    m.run(["getfattr", "--version"])


def test_install_again_installs_the_newer_checkout(installed, tmp_path):
    """A second run (an upgrade) installs the checkout it runs from, and
    leaves the running mount alone instead of failing on it."""
    m = installed.machine
    assert "/mnt/dnpipes" in m.mounts()
    newer = copy_of_checkout(tmp_path / "newer")
    (newer / "dnpfs" / "_newer.py").write_text("")
    output = install(m, newer)
    assert "/mnt/dnpipes stays mounted by the running daemon" in output, output
    m.run([f"{VENV}/bin/python", "-c", "import dnpfs._newer"])
    assert "/mnt/dnpipes" in m.mounts()


def test_install_mounts_the_embedded_store_which_a_second_mount_shares(installed, tmp_path):
    m = installed.machine
    assert "dnpfs: mounted /mnt/dnpipes (embedded store" in installed.output
    assert "/mnt/dnpipes" in m.mounts()
    # As the README's demo: a second daemon on the same store.
    m.sh("mkdir -p /mnt/other && dnpfs mount --store /var/lib/dnpfs/store.sqlite /mnt/other")
    try:
        exchange(m, "/mnt/dnpipes", "/mnt/other", "jobs", tmp_path)
        exchange(m, "/mnt/other", "/mnt/dnpipes", "replies", tmp_path)
        attrs = m.run(["getfattr", "-d", "/mnt/dnpipes/jobs"]).stdout.decode()
        assert "user.dnpfs." in attrs, attrs
        status = m.run(["dnpfs", "status", "/mnt/dnpipes"]).stdout.decode() \
            + m.run(["dnpfs", "status", "/mnt/other"]).stdout.decode()
        assert "/mnt/dnpipes" in status and "/mnt/other" in status, status
    finally:
        m.run(["dnpfs", "umount", "/mnt/other"], check=False)
        m.run(["dnpfs", "umount", "/mnt/dnpipes"], check=False)
    assert m.mounts() == []
