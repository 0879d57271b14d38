"""The TOML config file, and how fstab's calling convention becomes a mount
command line (`mount -a` itself: tests/deploy/test_fstab.py, on a clean
machine with the installed command)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dnpfs.config import ConfigError, fstab_argv, load_toml


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
