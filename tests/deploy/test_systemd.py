"""deploy/systemd/dnpfs@.service through `systemd-analyze verify`, which
loads a unit file offline (no systemd as init needed) and reports what systemd
would: bad keys and values, missing executables, broken dependencies."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .conftest import DEPLOY, ROOT, ensure_debs, sh

UNIT = DEPLOY / "systemd" / "dnpfs@.service"
DNPFS = "/usr/local/bin/dnpfs"  # where scripts/install puts the command
INSTANCE = "dnpfs@mnt-dnpipes.service"


def _units(tmp_path: Path, text: str) -> Path:
    """A unit directory with the template and one instance of it.  Where dnpfs
    is not installed, a stand-in takes its path, as verify checks that
    ExecStart= names an executable; nothing else is changed."""
    if not os.access(DNPFS, os.X_OK):
        stub = tmp_path / "bin" / "dnpfs"
        stub.parent.mkdir(exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        text = text.replace(DNPFS, str(stub))
    units = tmp_path / "units"
    units.mkdir()
    (units / "dnpfs@.service").write_text(text)
    (units / INSTANCE).symlink_to("dnpfs@.service")
    return units


def _verify(units: Path) -> tuple[int, str]:
    result = sh(["systemd-analyze", "verify", "--man=no", str(units / INSTANCE)], check=False)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(autouse=True)
def systemd_analyze():
    ensure_debs("systemd")


def test_unit_passes_systemd_analyze_verify(tmp_path):
    code, output = _verify(_units(tmp_path, UNIT.read_text()))
    # Unknown keys are only warnings (exit 0): no line about our unit either.
    assert code == 0 and "dnpfs" not in output, output


@pytest.mark.parametrize("mistake, expected", [
    (("TimeoutStopSec=", "TimeoutStopSecs="), "Unknown key"),
    (("Type=notify", "Type=notfy"), "Failed to parse service type"),
])
def test_verify_catches_mistakes(tmp_path, mistake, expected):
    """The check above means something: these edits of the unit are reported."""
    _, output = _verify(_units(tmp_path, UNIT.read_text().replace(*mistake)))
    assert expected in output, output


def _settings() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if re.match(r"^[A-Za-z]+=", line):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_supervises_the_daemon_in_the_foreground():
    s = _settings()
    assert s["Type"] == ["notify"]
    [start] = s["ExecStart"]
    assert start.startswith(f"{DNPFS} mount --foreground ") and start.endswith(" %f")
    [stop] = s["ExecStop"]
    assert stop.lstrip("-") == f"{DNPFS} umount %f"
    assert s["KillSignal"] == ["SIGTERM"]
    assert s["TimeoutStopSec"] == ["10"]
    assert s["Restart"] == ["on-failure"]
    # No sandboxing that would hide the mount in a namespace of its own.
    for key in ("PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateMounts", "PrivateDevices"):
        assert key not in s, key


def test_instance_name_is_the_escaped_mountpoint():
    assert sh(["systemd-escape", "--path", "/mnt/dnpipes"]).stdout.strip() == "mnt-dnpipes"
    # %f in the unit: the instance name unescaped, with "/" in front.
    assert sh(["systemd-escape", "--unescape", "--path", "mnt-dnpipes"]).stdout.strip() \
        == "/mnt/dnpipes"
    assert f"ln -sf /opt/dnpfs/venv/bin/dnpfs {DNPFS}" in (ROOT / "scripts" / "install").read_text()
