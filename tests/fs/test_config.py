"""The TOML config file and /etc/fstab (`mount -a`), as an administrator uses them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dnpfs.config import ConfigError, fstab_argv, load_toml

from ..util import mounted, run, wait_for


DNPFS_BIN = Path(sys.executable).parent / "dnpfs"


@pytest.fixture
def dnpfs_on_path():
    """mount(8) runs helpers with a fixed PATH: the installed command lives in
    /usr/local/bin (scripts/install).  Put it there for the test if absent."""
    link = Path("/usr/local/bin/dnpfs")
    made = not link.exists()
    if made:
        link.symlink_to(DNPFS_BIN)
    yield
    if made:
        link.unlink()


@pytest.mark.parametrize("form", ["type", "hash"])
def test_fstab_mount_all_and_umount(tmp_path, form, dnpfs_on_path):
    mp, store = tmp_path / "pipes", tmp_path / "s" / "fstab.sqlite"
    mp.mkdir()
    fstab = tmp_path / "fstab"
    if form == "type":  # the modern convention: mount -t fuse.dnpfs
        line = f"{store}  {mp}  fuse.dnpfs  defaults,nofail,retention-days=2  0 0\n"
    else:  # the old one: PROGRAM#SOURCE with type fuse
        line = f"{DNPFS_BIN}#{store}  {mp}  fuse  defaults,retention-days=2  0 0\n"
    fstab.write_text(line)
    r = subprocess.run(["mount", "-a", "-T", str(fstab)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        assert mounted(mp)
        os.mkfifo(mp / "from-fstab")
        run(f"printf ok > {mp/'from-fstab'}", shell=True)
        assert run(["cat", str(mp / "from-fstab")]).stdout == b"ok"
        assert store.exists()
    finally:
        subprocess.run(["umount", str(mp)], capture_output=True, text=True)
    wait_for(lambda: not mounted(mp), 10, what="unmount")


def test_config_file_sets_options_and_command_line_wins(tmp_path, make_mount):
    store = tmp_path / "from-config.sqlite"
    cfg = tmp_path / "dnpfs.toml"
    cfg.write_text(f'store = "{store}"\nbuffer-mib = 4\noptions = ["noatime"]\n')
    m = make_mount(["--config", str(cfg)])
    os.mkfifo(m / "p")
    assert store.exists(), "the store named in the config file is used"


def test_bad_config_is_one_clear_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('stor = "/x"\n')
    mp = tmp_path / "mp"
    mp.mkdir()
    r = subprocess.run([sys.executable, "-m", "dnpfs", "mount", "--config", str(cfg), str(mp)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip() == f"dnpfs: config {cfg}: unknown setting 'stor'"


def test_fstab_argv_translation():
    assert fstab_argv(["dnpfs", "/mnt/p", "-o", "rw,allow_other,store=/s.db,_netdev"]) == [
        "mount", "--store", "/s.db", "-o", "rw,allow_other", "/mnt/p"]
    assert fstab_argv(["kafka:b1:9092,b2:9092", "/mnt/p", "-o", "topic-prefix=x.,debug"]) == [
        "mount", "--kafka", "b1:9092,b2:9092", "--topic-prefix", "x.", "--debug", "/mnt/p"]
    assert fstab_argv(["mount", "/mnt/p"]) is None
    with pytest.raises(ConfigError):
        fstab_argv(["bogus", "/mnt/p"])


def test_load_toml_types(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('retention_days = 1\noptions = "allow_other"\nforeground = true\n')
    assert load_toml(cfg) == {"retention_days": 1.0, "options": ["allow_other"],
                              "foreground": True}
    cfg.write_text('buffer-mib = "big"\n')
    with pytest.raises(ConfigError):
        load_toml(cfg)
